using System.CommandLine;
using System.Diagnostics;
using LiveDlrm.CommandLine;
using System.Globalization;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Pim;
using LiveDlrm.Runtime;

namespace LiveDlrm.Cli.Commands;

/// <summary><c>livedlrm pim-serve</c>: scores synthetic Zipf requests with a model whose embedding lookups run on PIM
/// (real DPUs, the SDK simulator or the emulation), next to the same model on the CPU kernels, and prints the score
/// difference, what each table's DPU set did and the wall time (of the emulation here: not a hardware figure).</summary>
internal sealed class PimServeCommand : CliCommand
{
    readonly Option<string?> _model = Opt.Text("--model", "checkpoint directory, or a DlrmConfig JSON file (random weights, --seed)", helpName: "PATH", required: true);
    readonly Option<string> _backend = Opt.ChoiceIgnoreCase("--backend", "auto: DPUs if the SDK finds any, else the emulation", "auto", "auto", "hardware", "simulator", "emulated");
    readonly Option<int> _dpus = Opt.Int("--dpus", "DPUs per table", 16, 1, 512);
    readonly Option<string> _strategy = Opt.ChoiceIgnoreCase("--strategy", "partitioning, planned from the first half of the requests", nameof(PimStrategy.NonUniform), Enum.GetNames<PimStrategy>());
    readonly Option<int> _events = Opt.Int("--events", "requests", 4096, 2, 10_000_000);
    readonly Option<int> _batch = Opt.Int("--batch", "requests per batch", 256, 1, 1 << 20);
    readonly Option<int> _ids = Opt.Int("--ids", "ids per table per request", 4, 1, 1000);
    readonly Option<double> _zipf = Opt.Double("--zipf", "Zipf exponent of the ids", 1.05, 0.01, 10);
    readonly Option<int> _seed = Opt.Int("--seed", "request (and random weight) seed", 1);

    public PimServeCommand() : base("pim-serve", "serve a model's embedding lookups from PIM (DPUs or the emulation) and compare the scores with the CPU")
    {
        Add(_model); Add(_backend); Add(_dpus); Add(_strategy); Add(_events); Add(_batch); Add(_ids); Add(_zipf); Add(_seed);
    }

    protected override int Run(ParseResult result)
    {
        string path = result.GetValue(_model)!;
        var backendKind = Enum.Parse<PimBackendKind>(result.GetValue(_backend)!, ignoreCase: true);
        int dpus = result.GetValue(_dpus);
        var strategy = Enum.Parse<PimStrategy>(result.GetValue(_strategy)!, ignoreCase: true);
        int events = result.GetValue(_events);
        int batchSize = result.GetValue(_batch);
        int ids = result.GetValue(_ids);
        double zipf = result.GetValue(_zipf);
        int seed = result.GetValue(_seed);
        if (!PimDevice.IsAvailable) throw new UsageException("liblivedlrm_pim.so is not next to livedlrm: build native/ with ./build.sh build");

        TorchRuntime.EnsureInitialised();
        var pim = new PimEmbeddingBackend(new PimBackendOptions { Backend = backendKind, DpusPerTable = dpus, Logger = CliLogging.For("pim") });
        using var onCpu = Open(path, seed, null);
        using var onPim = Open(path, seed, pim);
        var config = onPim.Config;
        foreach (var t in config.Tables.Where(t => t.Storage != EmbeddingStorage.Fp32))
            throw new UsageException($"table '{t.Name}' is stored {t.Storage}; the PIM kernel serves fp32 tables only");

        var batches = Requests(config, events, batchSize, ids, zipf, seed);
        int half = Math.Max(1, batches.Count / 2);
        for (int t = 0; t < config.Tables.Count; t++)
        {
            var table = onPim.Tables[t];
            var profile = new AccessProfile(table.Rows,
                batches.Take(half).Select(b => new PimBatch(b.Indices(t).ToArray(), b.Offsets(t).ToArray())).ToList(), $"first {half} request batches");
            PimPlan plan;
            try
            {
                PimPartitioner.EnsureFits(table.Rows, table.Dim, dpus);
                plan = PimPartitioner.Build(strategy, profile, table.Dim, dpus);
                pim.Load(table, plan);
            }
            catch (ArgumentException e) { throw new UsageException($"table '{table.Name}': {e.Message}"); }
        }

        onCpu.Predict(batches[0]);     // warm-up (JIT, first-touch), untimed and not in the stats below
        onPim.Predict(batches[0]);
        // Loading and the warm-up count transfers too: report the timed serving part only.
        var afterLoad = onPim.Tables.Select(pim.Stats).ToArray();
        double maxDiff = 0;
        var cpuWatch = new Stopwatch();
        var pimWatch = new Stopwatch();
        foreach (var batch in batches)
        {
            cpuWatch.Start();
            float[] expected = onCpu.Predict(batch);
            cpuWatch.Stop();
            pimWatch.Start();
            float[] actual = onPim.Predict(batch);
            pimWatch.Stop();
            for (int i = 0; i < expected.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - expected[i]));
        }

        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(inv, $"{events} requests in {batches.Count} batches, {config.Tables.Count} tables on {onPim.Backend.Name} ({strategy}, one set of {dpus} DPUs shared by the tables)"));
        Console.WriteLine(string.Create(inv, $"max |score difference| PIM vs CPU: {maxDiff:E2}"));
        string label = onPim.Backend.Name.EndsWith("emulated", StringComparison.Ordinal) ? " (PIM = the emulation on this CPU, not hardware)" : "";
        Console.WriteLine(string.Create(inv, $"wall: PIM {events / pimWatch.Elapsed.TotalSeconds:F0} requests/s, CPU {events / cpuWatch.Elapsed.TotalSeconds:F0} requests/s{label}"));
        for (int t = 0; t < onPim.Tables.Count; t++)
        {
            var table = onPim.Tables[t];
            var end = pim.Stats(table);
            var start = afterLoad[t];
            var s = end with
            {
                Batches = end.Batches - start.Batches, Items = end.Items - start.Items, CacheItems = end.CacheItems - start.CacheItems,
                BytesToDpu = end.BytesToDpu - start.BytesToDpu, BytesFromDpu = end.BytesFromDpu - start.BytesFromDpu, Kernel = end.Kernel - start.Kernel,
            };
            long n = Math.Max(1, s.Batches);
            Console.WriteLine(string.Create(inv,
                $"  {table.Name,-16} {s.Backend,-9} {s.Dpus,4} DPUs  {s.Items / n,7} items/batch ({(double)s.CacheItems / Math.Max(1, s.Items),4:P0} cache)  to DPU {s.BytesToDpu / n / 1024.0,7:F1} KiB/batch  from DPU {s.BytesFromDpu / n / 1024.0,7:F1} KiB/batch  kernel {s.Kernel.TotalMicroseconds / n,8:F0} us/batch"));
        }
        if (maxDiff <= 1e-4) return 0;
        Console.Error.WriteLine(string.Create(inv, $"pim-serve: PIM scores differ from the CPU by {maxDiff:E2} (> 1e-4): the PIM path is wrong"));
        return 1;
    }

    /// <summary>A checkpoint (its weights) or a config (random weights from <paramref name="seed"/>), served by
    /// <paramref name="backend"/> (null = the CPU kernels).</summary>
    static DlrmModel Open(string path, int seed, IEmbeddingBackend? backend)
    {
        try
        {
            if (Directory.Exists(path)) return Checkpoint.Load(path, backend);
            if (File.Exists(path)) return DlrmModel.Create(DlrmConfig.Load(path), seed, backend);
        }
        catch (Exception e) when (e is CheckpointException or DlrmConfigException)
        {
            backend?.Dispose();
            throw new UsageException($"--model: {e.Message}");
        }
        backend?.Dispose();
        throw new UsageException($"--model: '{path}' is neither a checkpoint directory nor a model config file");
    }

    /// <summary>Requests with uniform dense features and <paramref name="ids"/> Zipf ids per table.</summary>
    static List<EventBatch> Requests(DlrmConfig config, int events, int batchSize, int ids, double zipf, int seed)
    {
        var layout = new EventBatchLayout(config.DenseFeatures, config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());
        var samplers = config.Tables.Select(t => new ZipfSampler(t.Rows, zipf)).ToArray();
        var rng = new Random(seed);
        var batches = new List<EventBatch>();
        for (int e = 0; e < events; e += batchSize)
        {
            int n = Math.Min(batchSize, events - e);
            var batch = new EventBatch(layout, n, ids);
            for (int i = 0; i < n; i++)
            {
                int row = batch.AddEvent(0, e + i, e + i);
                foreach (ref float v in batch.DenseRowForWrite(row)) v = (float)rng.NextDouble();
                for (int t = 0; t < samplers.Length; t++)
                    for (int k = 0; k < ids; k++) batch.AddIndex(t, samplers[t].RankToId(samplers[t].Sample(rng)));
            }
            batches.Add(batch);
        }
        return batches;
    }
}
