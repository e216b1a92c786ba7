using System.CommandLine;
using LiveDlrm.CommandLine;
using LiveDlrm.Data;

namespace LiveDlrm.Cli;

/// <summary>The synthetic world's shape options, shared by <c>synth</c> and <c>replay</c> (each with its own defaults).</summary>
internal sealed class SyntheticWorldArgs(SyntheticStreamConfig d)
{
    public Option<int> Users { get; } = Opt.Int("--users", "synthetic world: users", d.Users, 1);
    public Option<int> Items { get; } = Opt.Int("--items", "synthetic world: items at the start", d.InitialItems, 1);
    public Option<int> NewItems { get; } = Opt.Int("--new-items", "synthetic world: items born during the stream, at most", d.MaxNewItems, 0);
    public Option<long> HashedRows { get; } = Opt.Long("--hashed-rows", "synthetic: hash user_id and item_id into N rows each (0 = one row per id)", d.HashedRows, 0);
    public Option<double> BurstsPerHour { get; } = Opt.Double("--bursts-per-hour", "synthetic: short-lived trend bursts started per hour at drift 1", d.TrendBurstsPerHour, 0, 1e6);
    public Option<double> BurstBoost { get; } = Opt.Double("--burst-boost", "synthetic: a trend burst's logit boost", d.TrendBurstBoost, 0, 20);
    public Option<double> BurstMinutes { get; } = Opt.Double("--burst-minutes", "synthetic: a trend burst's mean decay time in minutes", d.TrendBurstMinutes, 1e-3, 1e6);

    public IEnumerable<Option> All => [Users, Items, NewItems, HashedRows, BurstsPerHour, BurstBoost, BurstMinutes];

    public void AddTo(Command command) { foreach (var o in All) command.Options.Add(o); }

    /// <summary>True when any world option was given (they apply to <c>--data synthetic</c> only).</summary>
    public bool AnyGiven(ParseResult r) => All.Any(o => r.GetResult(o) is { Implicit: false });

    public SyntheticStreamConfig Apply(ParseResult r, SyntheticStreamConfig config) => config with
    {
        Users = r.GetValue(Users),
        InitialItems = r.GetValue(Items),
        MaxNewItems = r.GetValue(NewItems),
        HashedRows = r.GetValue(HashedRows),
        TrendBurstsPerHour = r.GetValue(BurstsPerHour),
        TrendBurstBoost = r.GetValue(BurstBoost),
        TrendBurstMinutes = r.GetValue(BurstMinutes),
    };
}
