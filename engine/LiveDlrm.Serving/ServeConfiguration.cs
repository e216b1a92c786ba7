using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace LiveDlrm.Serving;

/// <summary>Builds <see cref="ServeOptions"/> from a JSON file (section <c>Serve</c>) overlaid with command-line
/// values (keys are the option property names). Unknown keys and unparsable values are errors naming the key.</summary>
internal static class ServeConfiguration
{
    public static ServeOptions Bind(string? configFile, IReadOnlyDictionary<string, string?> overrides)
    {
        var builder = new ConfigurationBuilder();
        if (configFile is not null)
        {
            if (!File.Exists(configFile)) throw new ArgumentException($"--config: '{configFile}' does not exist");
            builder.AddJsonFile(Path.GetFullPath(configFile), optional: false);
        }
        builder.AddInMemoryCollection(overrides.Select(kv => new KeyValuePair<string, string?>($"{ServeOptions.Section}:{kv.Key}", kv.Value)));
        IConfiguration config;
        try { config = builder.Build(); }
        catch (Exception e) when (e is InvalidDataException or FormatException or System.Text.Json.JsonException)
        {
            throw new ArgumentException($"--config: '{configFile}' is not valid JSON: {e.Message.Split('\n')[0]}");
        }
        var options = new ServeOptions();
        try { config.GetSection(ServeOptions.Section).Bind(options, b => b.ErrorOnUnknownConfiguration = true); }
        catch (InvalidOperationException e) { throw new ArgumentException($"configuration: {(e.InnerException ?? e).Message.Split('\n')[0]}"); }
        return options;
    }

    /// <summary>"250ms", "30s", "2m", "1h" or a bare number of seconds, as the configuration's TimeSpan text.</summary>
    public static string Duration(string option, string text)
    {
        double factor = 1;
        string number = text;
        foreach (var (suffix, f) in new[] { ("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0) })
            if (text.EndsWith(suffix, StringComparison.Ordinal)) { number = text[..^suffix.Length]; factor = f; break; }
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v > 0) || double.IsInfinity(v))
            throw new ArgumentException($"--{option}: '{text}' is not a positive duration (e.g. 250ms, 30s, 2m)");
        return TimeSpan.FromSeconds(v * factor).ToString("c", CultureInfo.InvariantCulture);
    }
}
