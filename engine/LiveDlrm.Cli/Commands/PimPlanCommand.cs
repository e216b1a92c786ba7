using System.Globalization;
using LiveDlrm.Pim;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm pim-plan</c>: the UpDLRM partitioning strategies side by side for each table.</summary>
public sealed class PimPlanCommand : ICommand
{
    public string Name => "pim-plan";
    public string Summary => "compare UPMEM PIM partitionings (uniform, non-uniform, cache-aware) of embedding tables: placement, traffic, cost model";
    public string Usage =>
        "  --tables ROWS:DIM[,ROWS:DIM...]  tables to place (required)\n" +
        "  --dpus N              DPUs per table (default 64)\n" +
        "  --trace FILE          access trace for a single table: one bag per line, ids separated by spaces/commas\n" +
        "  --zipf S              synthetic Zipf(S) ids when no trace is given (default 1.05)\n" +
        "  --batches N --bags N --pooling N --seed N   synthetic batches (default 32 x 256 bags x 20 ids, seed 1)\n" +
        "  Plans are built from the first half of the batches and evaluated on the second half.";

    public int Run(CommandArgs args)
    {
        string tablesArg = args.Require("tables");
        int dpus = args.Int("dpus", 64, 1, 1 << 16);
        string? trace = args.String("trace");
        double zipf = args.Double("zipf", 1.05, 0.01, 10);
        int batches = args.Int("batches", 32, 2, 100_000);
        int bags = args.Int("bags", 256, 1, 1 << 20);
        int pooling = args.Int("pooling", 20, 1, 10_000);
        int seed = args.Int("seed", 1);
        args.EnsureAllUsed();

        var tables = ParseTables(tablesArg);
        if (trace is not null && tables.Count != 1) throw new UsageException("--trace describes one table; give exactly one --tables entry with it");
        foreach (var (rows, dim) in tables)
        {
            AccessProfile profile;
            try
            {
                PimPartitioner.EnsureFits(rows, dim, dpus);
                profile = trace is not null
                    ? AccessProfile.FromTrace(trace, rows, bags)
                    : AccessProfile.Zipf(rows, zipf, batches, bags, pooling, seed);
            }
            catch (Exception e) when (e is FormatException or IOException or ArgumentException)
            {
                throw new UsageException(e.Message);
            }
            if (profile.Batches.Count < 2) throw new UsageException($"{profile.Description}: needs at least 2 batches of {bags} bags to plan on one half and evaluate on the other");
            var (planOn, evaluateOn) = profile.SplitHalves();
            Console.WriteLine($"table {rows} x {dim} fp32 ({rows * dim * 4.0 / (1 << 20):F1} MiB), {dpus} DPUs, {profile.Description}: " +
                              $"{planOn.TotalLookups} lookups to plan from, {evaluateOn.Batches.Count} batches of ~{evaluateOn.TotalLookups / evaluateOn.Batches.Count} lookups to evaluate");
            var reports = new List<PimPlanReport>();
            foreach (var strategy in Enum.GetValues<PimStrategy>())
            {
                try { reports.Add(PimPlanReport.Evaluate(PimPartitioner.Build(strategy, planOn, dim, dpus), evaluateOn)); }
                catch (ArgumentException e) { Console.WriteLine($"  {strategy}: {e.Message}"); }
            }
            if (reports.Count > 0) Console.WriteLine(PimPlanReport.Format(reports));
        }
        return 0;
    }

    static List<(long Rows, int Dim)> ParseTables(string s)
    {
        var list = new List<(long, int)>();
        foreach (string part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var rd = part.Split(':');
            if (rd.Length != 2 || !long.TryParse(rd[0].Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out long rows) || rows <= 0
                || !int.TryParse(rd[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int dim) || dim <= 0)
                throw new UsageException($"--tables: '{part}' is not ROWS:DIM with positive integers");
            list.Add((rows, dim));
        }
        if (list.Count == 0) throw new UsageException("--tables: no tables given");
        return list;
    }
}
