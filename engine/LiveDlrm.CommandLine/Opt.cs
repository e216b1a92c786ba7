using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;

namespace LiveDlrm.CommandLine;

/// <summary>One verb of <c>livedlrm</c> or one bench run: its options are fields defined once (name, default, range, help
/// text); <see cref="Run"/> reads them from the parse result.</summary>
internal abstract class CliCommand : Command
{
    protected CliCommand(string name, string description) : base(name, description) =>
        SetAction(result => Run(result));

    protected abstract int Run(ParseResult result);

    /// <summary>Adds the options and returns them, so a field can be declared and registered in one line.</summary>
    protected T Add<T>(T option) where T : Option { Options.Add(option); return option; }

    /// <summary>True when the user gave <paramref name="option"/> (not just its default).</summary>
    protected static bool Given(ParseResult result, Option option) => result.GetResult(option) is { Implicit: false };
}

/// <summary>
/// Builders for options whose default, range and help text come from one definition: the range is checked while
/// parsing (exit 2 with a message naming the option), shown in the help next to the default, and the choices of a
/// keyword option are offered by tab completion. Numbers are invariant-culture and may contain '_' separators.
/// </summary>
internal static class Opt
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static Option<int> Int(string name, string description, int defaultValue, int min = int.MinValue, int max = int.MaxValue) =>
        Number(name, description, min, max, v => v, defaultValue);

    public static Option<long> Long(string name, string description, long defaultValue, long min = long.MinValue, long max = long.MaxValue) =>
        Number(name, description, min, max, v => v, defaultValue);

    public static Option<ulong> ULong(string name, string description, ulong defaultValue) =>
        Number(name, description, ulong.MinValue, ulong.MaxValue, v => v, defaultValue);

    public static Option<double> Double(string name, string description, double defaultValue, double min = double.NegativeInfinity, double max = double.PositiveInfinity) =>
        Number(name, description, min, max, v => v, defaultValue);

    /// <summary>An optional number: null when not given (the help says what not giving it means).</summary>
    public static Option<int?> OptionalInt(string name, string description, int min = int.MinValue, int max = int.MaxValue) =>
        Number<int, int?>(name, description, min, max, v => v, null);

    public static Option<long?> OptionalLong(string name, string description, long min = long.MinValue, long max = long.MaxValue) =>
        Number<long, long?>(name, description, min, max, v => v, null);

    public static Option<double?> OptionalDouble(string name, string description, double min = double.NegativeInfinity, double max = double.PositiveInfinity) =>
        Number<double, double?>(name, description, min, max, v => v, null);

    /// <summary>A free-form value (a path, a list parsed by the command); null when not given unless a default is set.</summary>
    public static Option<string?> Text(string name, string description, string? defaultValue = null, string? helpName = null, bool required = false)
    {
        var o = new Option<string?>(name) { Description = description, Required = required };
        if (helpName is not null) o.HelpName = helpName;
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue;
        return o;
    }

    /// <summary>One keyword of <paramref name="choices"/>, case-sensitive.</summary>
    public static Option<string> Choice(string name, string description, string defaultValue, params string[] choices) =>
        Choice(name, description, defaultValue, StringComparer.Ordinal, choices);

    /// <summary>One keyword of <paramref name="choices"/> (enum names), any case.</summary>
    public static Option<string> ChoiceIgnoreCase(string name, string description, string defaultValue, params string[] choices) =>
        Choice(name, description, defaultValue, StringComparer.OrdinalIgnoreCase, choices);

    static Option<string> Choice(string name, string description, string defaultValue, StringComparer comparer, string[] choices)
    {
        var o = new Option<string>(name)
        {
            Description = description, HelpName = string.Join('|', choices), DefaultValueFactory = _ => defaultValue,
        };
        o.Validators.Add(r =>
        {
            string? v = r.GetValueOrDefault<string>();
            if (v is not null && !choices.Contains(v, comparer))
                r.AddError($"{name}: '{v}' is not one of {string.Join(", ", choices)}");
        });
        o.CompletionSources.Add(choices);
        return o;
    }

    /// <summary>A switch: <c>--name</c> alone, or <c>--name true|false</c>.</summary>
    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    static Option<TOut> Number<T, TOut>(string name, string description, T min, T max, Func<T, TOut> wrap, TOut? defaultValue)
        where T : struct, INumber<T>, IMinMaxValue<T>
    {
        bool integer = typeof(T) != typeof(double);
        string range = (min == T.MinValue || (!integer && double.IsNegativeInfinity(double.CreateChecked(min)))) && (max == T.MaxValue || (!integer && double.IsPositiveInfinity(double.CreateChecked(max))))
            ? ""
            : max == T.MaxValue || (!integer && double.IsPositiveInfinity(double.CreateChecked(max))) ? $" (≥ {Format(min)})"
            : $" ({Format(min)}..{Format(max)})";
        var o = new Option<TOut>(name) { Description = description + range, HelpName = integer ? "N" : "X" };
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue;
        o.CustomParser = r =>
        {
            string s = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
            NumberStyles styles = integer ? NumberStyles.Integer : NumberStyles.Float;
            if (!T.TryParse(integer ? s.Replace("_", "") : s, styles, Inv, out T v) || (!integer && !double.IsFinite(double.CreateChecked(v))))
            {
                r.AddError($"{name}: '{s}' is not {(integer ? (T.IsZero(T.MinValue) ? "a non-negative integer" : "an integer") : "a number")}");
                return default!;
            }
            if (v < min || v > max)
            {
                r.AddError($"{name}: {Format(v)} is outside [{Format(min)}, {Format(max)}]");
                return default!;
            }
            return wrap(v);
        };
        return o;
    }

    static string Format<T>(T v) where T : INumber<T> => v.ToString(null, Inv);
}
