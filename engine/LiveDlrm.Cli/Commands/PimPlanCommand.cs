using System.Globalization;
using LiveDlrm.Checkpoints;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Pim;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm pim-plan</c>: the UpDLRM partitioning strategies side by side for each table.</summary>
public sealed class PimPlanCommand : ICommand
{
    public string Name => "pim-plan";
    public string Summary => "compare UPMEM PIM partitionings (uniform, non-uniform, cache-aware) of embedding tables: placement, traffic, cost model";
    public string Usage =>
        "  --model PATH          plan every table of a model: a checkpoint directory or a DlrmConfig JSON file\n" +
        "  --tables ROWS:DIM[,ROWS:DIM...]  or give table shapes directly (one of --model / --tables is required)\n" +
        "  --dpus N              DPUs per table (default 64)\n" +
        "  --trace FILE          access trace: one bag per line, ids separated by spaces/commas. With --tables: for its\n" +
        "                        single table; with --model: TABLE=FILE[,TABLE=FILE...] (a bare FILE if the model has one\n" +
        "                        table); tables without a trace get synthetic Zipf ids\n" +
        "  --zipf S              synthetic Zipf(S) ids when no trace is given (default 1.05)\n" +
        "  --batches N --bags N --pooling N --seed N   synthetic batches (default 32 x 256 bags x 20 ids, seed 1)\n" +
        "  Plans are built from the first half of the batches and evaluated on the second half.";

    public int Run(CommandArgs args)
    {
        string? modelArg = args.String("model");
        string? tablesArg = args.String("tables");
        int dpus = args.Int("dpus", 64, 1, 1 << 16);
        string? trace = args.String("trace");
        double zipf = args.Double("zipf", 1.05, 0.01, 10);
        int batches = args.Int("batches", 32, 2, 100_000);
        int bags = args.Int("bags", 256, 1, 1 << 20);
        int pooling = args.Int("pooling", 20, 1, 10_000);
        int seed = args.Int("seed", 1);
        args.EnsureAllUsed();

        if ((modelArg is null) == (tablesArg is null)) throw new UsageException("give either --model PATH or --tables ROWS:DIM[,...] (exactly one)");
        var tables = modelArg is not null ? TablesOfModel(modelArg) : ParseTables(tablesArg!);
        var traces = AssignTraces(trace, tables, modelArg is not null);
        foreach (var table in tables)
        {
            long rows = table.Rows;
            int dim = table.Dim;
            AccessProfile profile;
            try
            {
                PimPartitioner.EnsureFits(rows, dim, dpus);
                profile = traces.TryGetValue(table.Name, out string? tableTrace)
                    ? AccessProfile.FromTrace(tableTrace, rows, bags)
                    : AccessProfile.Zipf(rows, zipf, batches, bags, pooling, seed);
            }
            catch (Exception e) when (e is FormatException or IOException or ArgumentException)
            {
                throw new UsageException(e.Message);
            }
            if (profile.Batches.Count < 2) throw new UsageException($"{profile.Description}: needs at least 2 batches of {bags} bags to plan on one half and evaluate on the other");
            var (planOn, evaluateOn) = profile.SplitHalves();
            Console.WriteLine($"table {table.Label}{rows} x {dim} fp32 ({rows * dim * 4.0 / (1 << 20):F1} MiB){table.Note}, {dpus} DPUs, {profile.Description}: " +
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

    /// <summary>A table to plan; Label/Note are empty for --tables shapes.</summary>
    sealed record PlannedTable(string Name, long Rows, int Dim, string Label, string Note);

    /// <summary>The tables of a checkpoint (directory: its manifest, no table data read) or of a DlrmConfig JSON file.
    /// The DPU kernel reads fp32 rows only, so tables stored as fp16/int8 are planned at their fp32 size (said in the
    /// header line).</summary>
    static List<PlannedTable> TablesOfModel(string path)
    {
        DlrmConfig config;
        string source;
        try
        {
            if (Directory.Exists(path)) { config = Checkpoint.ReadManifest(path).Config; source = "checkpoint"; }
            else if (File.Exists(path)) { config = DlrmConfig.Load(path); source = "config"; }
            else throw new UsageException($"--model: '{path}' is neither a checkpoint directory nor a model config file");
        }
        catch (Exception e) when (e is CheckpointException or DlrmConfigException or IOException)
        {
            throw new UsageException($"--model: {e.Message}");
        }
        Console.WriteLine($"model {path} ({source}): {config.Tables.Count} tables");
        return config.Tables.Select(t => new PlannedTable(t.Name, t.Rows, t.Dim, $"'{t.Name}' ",
            t.Storage == EmbeddingStorage.Fp32 ? "" : $" [host stores {t.Storage}; the DPU kernel reads fp32]")).ToList();
    }

    /// <summary>Which trace file profiles which table (by name); unnamed tables get synthetic ids.</summary>
    static Dictionary<string, string> AssignTraces(string? trace, List<PlannedTable> tables, bool fromModel)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (trace is null) return map;
        if (!fromModel || !trace.Contains('='))
        {
            if (tables.Count != 1)
                throw new UsageException(fromModel
                    ? $"--trace: the model has {tables.Count} tables; name the table each trace belongs to (TABLE=FILE[,TABLE=FILE...])"
                    : "--trace describes one table; give exactly one --tables entry with it");
            map[tables[0].Name] = RequireFile(trace);
            return map;
        }
        foreach (string part in trace.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || eq == part.Length - 1) throw new UsageException($"--trace: '{part}' is not TABLE=FILE");
            string name = part[..eq], file = part[(eq + 1)..];
            if (!tables.Any(t => t.Name == name))
                throw new UsageException($"--trace: the model has no table '{name}' (tables: {string.Join(", ", tables.Select(t => t.Name))})");
            if (!map.TryAdd(name, RequireFile(file))) throw new UsageException($"--trace: table '{name}' is given twice");
        }
        return map;
    }

    static string RequireFile(string path) =>
        File.Exists(path) ? path : throw new UsageException($"--trace: file '{path}' does not exist");

    static List<PlannedTable> ParseTables(string s)
    {
        var list = new List<PlannedTable>();
        foreach (string part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var rd = part.Split(':');
            if (rd.Length != 2 || !long.TryParse(rd[0].Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out long rows) || rows <= 0
                || !int.TryParse(rd[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int dim) || dim <= 0)
                throw new UsageException($"--tables: '{part}' is not ROWS:DIM with positive integers");
            list.Add(new PlannedTable($"#{list.Count}", rows, dim, "", ""));
        }
        if (list.Count == 0) throw new UsageException("--tables: no tables given");
        return list;
    }
}
