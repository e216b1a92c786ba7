namespace LiveDlrm.Cli;

/// <summary>One verb of the <c>livedlrm</c> host. Implementations are found by reflection, so adding a command is
/// adding a file under Commands/.</summary>
public interface ICommand
{
    string Name { get; }
    string Summary { get; }
    /// <summary>Option lines shown by <c>livedlrm NAME --help</c>.</summary>
    string Usage { get; }
    int Run(CommandArgs args);
}

/// <summary>Thrown for bad command-line input; the host prints the message and exits with code 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary><c>--name value</c> / <c>--flag</c> options plus positionals. Every option a command reads is marked
/// used; <see cref="EnsureAllUsed"/> rejects the rest so a typo is an error, not a silently ignored option.</summary>
public sealed class CommandArgs
{
    readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    readonly HashSet<string> _used = new(StringComparer.Ordinal);
    public List<string> Positionals { get; } = new();

    public CommandArgs(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (a.StartsWith("--", StringComparison.Ordinal) && a.Length > 2)
            {
                string name = a[2..];
                string? value = null;
                int eq = name.IndexOf('=');
                if (eq >= 0) { value = name[(eq + 1)..]; name = name[..eq]; }
                else if (i + 1 < list.Count && !list[i + 1].StartsWith("--", StringComparison.Ordinal)) value = list[++i];
                if (!_options.TryAdd(name, value)) throw new UsageException($"option --{name} given twice");
            }
            else Positionals.Add(a);
        }
    }

    public bool Has(string name) { _used.Add(name); return _options.ContainsKey(name); }

    public bool Flag(string name)
    {
        if (!Has(name)) return false;
        string? v = _options[name];
        return v is null || v is "true" or "1" or "yes" ? true
             : v is "false" or "0" or "no" ? false
             : throw new UsageException($"--{name}: expected no value or true/false, got '{v}'");
    }

    public string? String(string name)
    {
        if (!Has(name)) return null;
        return _options[name] ?? throw new UsageException($"--{name} needs a value");
    }

    public string String(string name, string fallback) => String(name) ?? fallback;

    public string Require(string name) => String(name) ?? throw new UsageException($"missing required option --{name}");

    public long Long(string name, long fallback, long min = long.MinValue, long max = long.MaxValue)
    {
        string? s = String(name);
        if (s is null) return fallback;
        if (!long.TryParse(s.Replace("_", ""), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long v))
            throw new UsageException($"--{name}: '{s}' is not an integer");
        if (v < min || v > max) throw new UsageException($"--{name}: {v} is outside [{min}, {max}]");
        return v;
    }

    public int Int(string name, int fallback, int min = int.MinValue, int max = int.MaxValue) => (int)Long(name, fallback, min, max);

    public double Double(string name, double fallback, double min = double.NegativeInfinity, double max = double.PositiveInfinity)
    {
        string? s = String(name);
        if (s is null) return fallback;
        if (!double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new UsageException($"--{name}: '{s}' is not a number");
        if (v < min || v > max) throw new UsageException($"--{name}: {v} is outside [{min}, {max}]");
        return v;
    }

    public void EnsureAllUsed()
    {
        var unknown = _options.Keys.Where(k => !_used.Contains(k)).ToList();
        if (unknown.Count > 0) throw new UsageException($"unknown option{(unknown.Count > 1 ? "s" : "")}: {string.Join(", ", unknown.Select(u => "--" + u))}");
    }
}
