using LiveDlrm.Data;

namespace LiveDlrm.Cli;

/// <summary>The synthetic world's shape options, shared by <c>synth</c> and <c>replay</c> (each with its own defaults).</summary>
public static class SyntheticWorldArgs
{
    static readonly string[] Names = ["users", "items", "new-items", "hashed-rows", "bursts-per-hour", "burst-boost", "burst-minutes"];

    public static string Usage(SyntheticStreamConfig d) =>
        $"  --users N --items N --new-items N   synthetic world size (defaults {d.Users}, {d.InitialItems}, {d.MaxNewItems})\n" +
        $"  --hashed-rows N         synthetic: hash user_id and item_id into N rows each (default {(d.HashedRows == 0 ? "0 = one row per id" : d.HashedRows.ToString(System.Globalization.CultureInfo.InvariantCulture))})\n" +
        $"  --bursts-per-hour X     synthetic: short-lived trend bursts started per hour at drift 1 (default {d.TrendBurstsPerHour})\n" +
        $"  --burst-boost X --burst-minutes M   synthetic: a burst's logit boost and mean decay time (defaults {d.TrendBurstBoost}, {d.TrendBurstMinutes})";

    /// <summary>True when any world option was given (they apply to <c>--data synthetic</c> only).</summary>
    public static bool AnyGiven(CommandArgs args) => Names.Any(args.Has);

    public static SyntheticStreamConfig Apply(CommandArgs args, SyntheticStreamConfig defaults) => defaults with
    {
        Users = args.Int("users", defaults.Users, min: 1),
        InitialItems = args.Int("items", defaults.InitialItems, min: 1),
        MaxNewItems = args.Int("new-items", defaults.MaxNewItems, min: 0),
        HashedRows = args.Long("hashed-rows", defaults.HashedRows, min: 0),
        TrendBurstsPerHour = args.Double("bursts-per-hour", defaults.TrendBurstsPerHour, min: 0, max: 1e6),
        TrendBurstBoost = args.Double("burst-boost", defaults.TrendBurstBoost, min: 0, max: 20),
        TrendBurstMinutes = args.Double("burst-minutes", defaults.TrendBurstMinutes, min: 1e-3, max: 1e6),
    };
}
