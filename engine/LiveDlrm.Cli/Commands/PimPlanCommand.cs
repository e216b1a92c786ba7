using System.CommandLine;
using System.Globalization;
using LiveDlrm.CommandLine;
using LiveDlrm.Checkpoints;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Pim;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm pim-plan</c>: the UpDLRM partitioning strategies side by side for each table.</summary>
internal sealed class PimPlanCommand : CliCommand
{
    readonly Option<string?> _model = Opt.Text("--model", "plan every table of a model: a checkpoint directory or a DlrmConfig JSON file", helpName: "PATH");
    readonly Option<string?> _tables = Opt.Text("--tables", "or give table shapes directly (one of --model / --tables is required)", helpName: "ROWS:DIM[,ROWS:DIM...]");
    readonly Option<int> _dpus = Opt.Int("--dpus", "DPUs per table", 64, 1, 1 << 16);
    readonly Option<string?> _trace = Opt.Text("--trace",
        "access trace: one bag per line, ids separated by spaces/commas. With --tables: for its single table; with --model: TABLE=FILE[,TABLE=FILE...] (a bare FILE if the model has one table); tables without a trace get synthetic Zipf ids",
        helpName: "FILE");
    readonly Option<double> _zipf = Opt.Double("--zipf", "synthetic Zipf(S) ids when no trace is given", 1.05, 0.01, 10);
    readonly Option<int> _batches = Opt.Int("--batches", "synthetic batches; plans are built from the first half and evaluated on the second", 32, 2, 100_000);
    readonly Option<int> _bags = Opt.Int("--bags", "bags per batch", 256, 1, 1 << 20);
    readonly Option<int> _pooling = Opt.Int("--pooling", "synthetic ids per bag", 20, 1, 10_000);
    readonly Option<int> _seed = Opt.Int("--seed", "synthetic seed", 1);
    readonly Option<int> _serverDpus = Opt.Int("--server-dpus", "DPUs of the whole-model server estimate printed last (2560: 40 ranks)", 2560, 1, 1 << 16);
    readonly Option<bool> _noCpu = Opt.Flag("--no-cpu", "skip the CPU kernel measurement beside the server estimate");

    public PimPlanCommand() : base("pim-plan", "compare UPMEM PIM partitionings (uniform, non-uniform, cache-aware) of embedding tables: placement, traffic, cost model")
    {
        Add(_model); Add(_tables); Add(_dpus); Add(_trace); Add(_zipf); Add(_batches); Add(_bags); Add(_pooling); Add(_seed);
        Add(_serverDpus); Add(_noCpu);
    }

    protected override int Run(ParseResult result)
    {
        string? modelArg = result.GetValue(_model);
        string? tablesArg = result.GetValue(_tables);
        int dpus = result.GetValue(_dpus);
        string? trace = result.GetValue(_trace);
        double zipf = result.GetValue(_zipf);
        int batches = result.GetValue(_batches);
        int bags = result.GetValue(_bags);
        int pooling = result.GetValue(_pooling);
        int seed = result.GetValue(_seed);
        int serverDpus = result.GetValue(_serverDpus);
        bool noCpu = result.GetValue(_noCpu);

        if ((modelArg is null) == (tablesArg is null)) throw new UsageException("give either --model PATH or --tables ROWS:DIM[,...] (exactly one)");
        var tables = modelArg is not null ? TablesOfModel(modelArg) : ParseTables(tablesArg!);
        var traces = AssignTraces(trace, tables, modelArg is not null);
        var server = new List<PimServerTable>();
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
            server.Add(new PimServerTable(table.Name, rows, dim, planOn, evaluateOn));
        }
        // Last, every table on one server-sized set: the cost model's ESTIMATE beside the CPU kernel MEASURED here.
        try { Console.WriteLine(PimServerEstimate.Evaluate(server, serverDpus, noCpu ? 0 : 1L << 30).Format()); }
        catch (ArgumentException e) { Console.WriteLine($"whole-model server estimate: {e.Message}"); }
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
