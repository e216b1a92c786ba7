using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Perf.Lora;

namespace LiveDlrm.Perf.Train;

/// <summary><c>./build.sh bench train</c>: the adapter's sparse optimizer step (<see cref="TableAdapter.ApplyGradients"/>)
/// on one thread. Reports adapter-row updates per second: one per (bag, index) pair, i.e. a row gradient
/// s·w·B·g_b accumulated into a row and then stepped (the distinct rows stepped per second are reported beside it).
/// Cases: ids drawn from rows that already have adapter slots (the update itself), and skewed ids over the whole
/// table (slot allocation, LRU eviction = merges into the base, and map rebuilds included).</summary>
internal sealed class TrainRun : BenchRun
{
    readonly Option<long> _rows = Opt.Long("--rows", "table rows (--quick: 100000)", 1_000_000, 1000);
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim", 64, 1, 4096);
    readonly Option<int> _rank = Opt.Int("--rank", "adapter rank", 16, 1, 1024);
    readonly Option<int> _bags = Opt.Int("--bags", "bags per step", 256, 1, 1 << 20);
    readonly Option<int> _pooling = Opt.Int("--pooling", "indices per bag", 32, 1, 1 << 20);
    readonly Option<double> _budget = Opt.Double("--budget", "adapter budget fraction", 0.01, 1e-6, 1);
    readonly Option<int> _runs = Opt.Int("--runs", "timed rounds, median reported (--quick: 2)", 5, 1, 10_000);
    readonly Option<double> _runSeconds = Opt.Double("--run-seconds", "per case per round (--quick: 0.2)", 1, 0.01, 3600);
    readonly Option<bool> _quick = Opt.Flag("--quick", "tiny sizes for a smoke run (numbers not meaningful)");
    readonly Option<string?> _out = Opt.Text("--out", "JSON output (default artifacts/bench/train.json)", helpName: "PATH");

    public TrainRun() : base("train", "adapter sparse optimizer step, one thread (M adapter-row updates/s, artifacts/bench/train.json)")
    {
        foreach (var o in new Option[] { _rows, _dim, _rank, _bags, _pooling, _budget, _runs, _runSeconds, _quick, _out }) Add(o);
    }

    sealed record Case(string Name, TableAdapter Adapter, (long[] Indices, long[] Offsets, float[] Grad)[] Steps, double DistinctPerStep);

    protected override int Run(ParseResult a)
    {
        bool quick = a.GetValue(_quick);
        long rows = Pick(a, _rows, quick, 100_000);
        int dim = a.GetValue(_dim), rank = a.GetValue(_rank), bags = a.GetValue(_bags), pooling = a.GetValue(_pooling);
        double budget = a.GetValue(_budget);
        int runs = Pick(a, _runs, quick, 2);
        double runSeconds = Pick(a, _runSeconds, quick, 0.2);
        string? outPath = a.GetValue(_out);

        var sw = Stopwatch.StartNew();
        using var table = LoraLookupRun.RandomTable(rows, dim, EmbeddingStorage.Fp32);
        var rng = new Random(3);
        var cases = new List<Case>();
        try
        {
            foreach (var (name, optimizer, resident) in new[] { ("resident_adagrad", AdapterOptimizer.Adagrad, true), ("resident_sgd", AdapterOptimizer.Sgd, true), ("skewed_adagrad", AdapterOptimizer.Adagrad, false) })
            {
                var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MaxRank = Math.Max(rank, Math.Min(64, dim)), BudgetFraction = budget, Optimizer = optimizer, LearningRateA = 0.01f, LearningRateB = 0.001f });
                long[] pool = Array.Empty<long>();
                if (resident)
                {
                    // rows with slots already, leaving head-room so the steps never evict
                    var set = new HashSet<long>();
                    while (set.Count < adapter.SlotCapacity * 3 / 4) set.Add(rng.NextInt64(rows));
                    pool = set.ToArray();
                    foreach (long r in pool) adapter.SetRow(r, new float[rank]);
                }
                var steps = new (long[], long[], float[])[quick ? 4 : 16];
                double distinct = 0;
                for (int s = 0; s < steps.Length; s++)
                {
                    var idx = new long[bags * pooling];
                    for (int j = 0; j < idx.Length; j++) idx[j] = resident ? pool[rng.Next(pool.Length)] : Skewed(rng, rows);
                    var grad = new float[bags * dim];
                    for (int i = 0; i < grad.Length; i++) grad[i] = (float)(rng.NextDouble() - 0.5) * 0.01f;
                    steps[s] = (idx, Enumerable.Range(0, bags + 1).Select(i => (long)i * pooling).ToArray(), grad);
                    distinct += idx.Distinct().Count();
                }
                cases.Add(new Case(name, adapter, steps, distinct / steps.Length));
            }
            Console.WriteLine($"train: {table}, rank {rank}, budget {budget:P1} ({cases[0].Adapter.SlotCapacity} slots), step = {bags} bags × {pooling} ids, " +
                              $"one thread, {runs} runs × {runSeconds} s (median); setup {sw.Elapsed.TotalSeconds:F1} s{(quick ? "; QUICK (not meaningful)" : "")}");

            var contenders = cases.Select(c => (Action<int>)(i =>
            {
                var (idx, off, grad) = c.Steps[i];
                if (!c.Adapter.ApplyGradients(idx, off, grad)) throw new InvalidOperationException($"bench train: step rejected in {c.Name}");
            })).ToList();
            // every case has the same number of distinct steps; units = row updates per call
            var rates = LoraBenchSupport.Interleaved(contenders, cases[0].Steps.Length, bags * (double)pooling / 1e6, runs, runSeconds, quick ? 0.1 : 1);
            var results = new Dictionary<string, TrainBenchCase>();
            for (int c = 0; c < cases.Count; c++)
            {
                double median = LoraBenchSupport.Median(rates[c]);
                double distinctRate = median * cases[c].DistinctPerStep / (bags * (double)pooling);
                var ad = cases[c].Adapter;
                Console.WriteLine($"  {cases[c].Name,-17} {median,6:F2} M row updates/s ({distinctRate,5:F2} M distinct rows/s, {cases[c].DistinctPerStep:F0} distinct of {bags * pooling} per step)  " +
                                  $"merged {ad.MergedRows}, active {ad.ActiveRows}   runs: {string.Join(" ", rates[c].Select(x => x.ToString("F2")))}");
                results[cases[c].Name] = new TrainBenchCase(median, distinctRate, cases[c].DistinctPerStep, ad.MergedRows, ad.ActiveRows, rates[c]);
            }
            double headline = LoraBenchSupport.Median(rates[0]);
            Console.WriteLine($"  target ≥ 2 M adapter-row updates/s per core: resident_adagrad {headline:F2} M/s");
            var record = new TrainBenchReport(rows, dim, rank, bags, pooling, budget, 1, runs, runSeconds, quick, headline, results, BenchMachine.Current);
            Console.WriteLine($"wrote {LoraBenchSupport.WriteJson(record, outPath, "train", BenchJsonContext.Default.TrainBenchReport)}");
            return 0;
        }
        finally
        {
            foreach (var c in cases) c.Adapter.Dispose();
        }
    }

    /// <summary>Log-uniform rank (heavy head, long tail) scattered over the table by a multiplicative hash.</summary>
    static long Skewed(Random rng, long rows)
    {
        long rank = (long)Math.Pow(rows, rng.NextDouble()) - 1;
        return (long)(((ulong)rank * 0x9E3779B97F4A7C15UL) % (ulong)rows);
    }
}
