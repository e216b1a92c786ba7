using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Perf.Lora;

/// <summary><c>./build.sh bench lora</c>: the LoRA-augmented bag lookup against the plain one, same table, same
/// pre-generated batches, same thread count. Contenders: <c>livedlrm</c> (EmbeddingBag.Forward on a worker pool),
/// <c>livedlrm_lora</c> (LoraEmbeddingBag.Forward with an adapter filled to its budget) and
/// <c>lora_empty_adapter</c> (the LoRA kernel over an adapter with no rows: the cost of the map probes alone). Outputs are checked against the scalar references first.</summary>
internal sealed class LoraLookupRun : BenchRun
{
    readonly Option<long> _rows = Opt.Long("--rows", "table rows (--quick: 200000)", 4_000_000, 1000);
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim", 64, 1, 4096);
    readonly Option<int> _pooling = Opt.Int("--pooling", "indices per bag", 32, 1, 1 << 20);
    readonly Option<int> _batch = Opt.Int("--batch", "bags per batch (--quick: 256)", 2048, 1, 1 << 24);
    readonly Option<int> _rank = Opt.Int("--rank", "adapter rank", 16, 1, 1024);
    readonly Option<double> _budget = Opt.Double("--budget", "adapter budget as a fraction of table bytes; the adapter is filled to it", 0.01, 1e-6, 1);
    readonly Option<double?> _hot = Opt.OptionalDouble("--hot", "fraction of lookups that go to adapted rows (default: uniform ids, i.e. about active/rows)", 0, 1);
    readonly Option<double> _hotRows = Opt.Double("--hot-rows", "share of the budget for hot rows served from W (AdapterOptions.HotRowFraction); the adapter is then trained on the batches until the rows that take the --hot lookups are promoted, as far as the hot set holds them", 0, 0, 0.99);
    readonly Option<string> _storage = Opt.Choice("--storage", "table storage", "fp32", "fp32", "fp16", "int8");
    readonly Option<int> _threads = Opt.Int("--threads", "threads (default: all processors)", Environment.ProcessorCount, 1, 1024);
    readonly Option<int> _runs = Opt.Int("--runs", "timed rounds, median reported (--quick: 2)", 5, 1, 10_000);
    readonly Option<double> _runSeconds = Opt.Double("--run-seconds", "per contender per round (--quick: 0.2)", 2, 0.01, 3600);
    readonly Option<int> _batches = Opt.Int("--batches", "distinct pre-generated batches (--quick: 2)", 8, 1, 10_000);
    readonly Option<bool> _knownSlots = Opt.Flag("--known-slots", "also time the LoRA lookup with every index's slot given ahead (no filter, no map probe): what the W rows, A sums and B products cost on their own");
    readonly Option<bool> _quick = Opt.Flag("--quick", "tiny sizes for a smoke run (numbers not meaningful)");
    readonly Option<string?> _out = Opt.Text("--out", "JSON output (default artifacts/bench/lora.json)", helpName: "PATH");

    public LoraLookupRun() : base("lora", "LoRA-augmented bag lookup vs plain lookup (M lookups/s, artifacts/bench/lora.json)")
    {
        foreach (var o in new Option[] { _rows, _dim, _pooling, _batch, _rank, _budget, _hot, _hotRows, _storage, _threads, _runs, _runSeconds, _batches, _knownSlots, _quick, _out })
            Add(o);
    }

    protected override int Run(ParseResult a)
    {
        bool quick = a.GetValue(_quick);
        long rows = Pick(a, _rows, quick, 200_000);
        int dim = a.GetValue(_dim), pooling = a.GetValue(_pooling), batch = Pick(a, _batch, quick, 256);
        int rank = a.GetValue(_rank), threads = a.GetValue(_threads);
        double budget = a.GetValue(_budget);
        double hot = a.GetValue(_hot) ?? -1;
        double hotRows = a.GetValue(_hotRows);
        int runs = Pick(a, _runs, quick, 2), batchCount = Pick(a, _batches, quick, 2);
        double runSeconds = Pick(a, _runSeconds, quick, 0.2);
        var storage = a.GetValue(_storage) switch
        {
            "fp16" => EmbeddingStorage.Fp16, "int8" => EmbeddingStorage.Int8Rowwise, _ => EmbeddingStorage.Fp32,
        };
        bool knownSlots = a.GetValue(_knownSlots);
        string? outPath = a.GetValue(_out);

        var sw = Stopwatch.StartNew();
        using var table = RandomTable(rows, dim, storage);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MinRank = 1, MaxRank = Math.Max(rank, Math.Min(64, dim)), BudgetFraction = budget, HotRowFraction = hotRows });
        var rng = new Random(7);
        var adapted = new HashSet<long>();
        var a8 = new float[rank];
        while (adapted.Count < adapter.SlotCapacity)
        {
            long r = rng.NextInt64(rows);
            if (!adapted.Add(r)) continue;
            for (int k = 0; k < rank; k++) a8[k] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            adapter.SetRow(r, a8);
        }
        var adaptedRows = adapted.ToArray();
        var batches = new (long[] Indices, long[] Offsets)[batchCount];
        for (int b = 0; b < batchCount; b++)
        {
            var idx = new long[(long)batch * pooling];
            for (int j = 0; j < idx.Length; j++)
                idx[j] = hot >= 0 && rng.NextDouble() < hot ? adaptedRows[rng.Next(adaptedRows.Length)] : rng.NextInt64(rows);
            batches[b] = (idx, Enumerable.Range(0, batch + 1).Select(i => (long)i * pooling).ToArray());
        }
        if (hotRows > 0)
        {
            // Steps on the rows the --hot lookups go to (each a one-index bag with a tiny gradient), HotAfterSteps + 1
            // times, so they are promoted and served from W as far as the hot set holds them; the rest keep their slots.
            var trained = adaptedRows.Take(adapter.SlotCapacity).ToArray();
            var grad = new float[trained.Length * dim];
            for (int j = 0; j < grad.Length; j++) grad[j] = (float)(rng.NextDouble() - 0.5) * 1e-3f;
            var offs = Enumerable.Range(0, trained.Length + 1).Select(i => (long)i).ToArray();
            for (int s = 0; s <= adapter.Options.HotAfterSteps; s++) adapter.ApplyGradients(trained, offs, grad);
        }
        var slotRows = new HashSet<long>();
        var probe = new float[adapter.Options.MaxRank];
        foreach (long r in adaptedRows) if (adapter.ReadRow(r, probe) > 0) slotRows.Add(r);
        double hitFraction = batches.SelectMany(b => b.Indices).Count(slotRows.Contains) / (double)(batchCount * (long)batch * pooling);
        if (hotRows > 0)
            Console.WriteLine($"hot rows: {adapter.HotRows} served from W, {slotRows.Count} of the --hot rows still hold a slot; " +
                              $"{batches.SelectMany(b => b.Indices).Count(adapted.Contains) / (double)(batchCount * (long)batch * pooling):P2} of lookups go to those rows together");
        Console.WriteLine($"lora: {table}, adapter rank {rank}: {adapter.ActiveRows} rows, {adapter.AllocatedBytes / 1048576.0:F1} MiB " +
                          $"({adapter.MemoryFraction:P2} of the table), {hitFraction:P2} of lookups hit an adapted row; batch {batch} × {pooling}, " +
                          $"{threads} threads, {runs} runs × {runSeconds} s (median); setup {sw.Elapsed.TotalSeconds:F1} s{(quick ? "; QUICK (not meaningful)" : "")}");

        using var pool = new EmbeddingWorkerPool(threads - 1);
        var output = new float[batch * dim];
        // Correctness first, on the first batch: LoRA kernel vs its scalar reference, plain vs EmbeddingBagReference.
        var expected = new float[batch * dim];
        var (i0, o0) = batches[0];
        LoraEmbeddingBagReference.Forward(adapter, i0, o0, expected);
        LoraEmbeddingBag.Forward(adapter, i0, o0, output, pool: pool);
        double loraError = MaxRelativeError(output, expected);
        EmbeddingBagReference.Forward(table, i0, o0, expected);
        EmbeddingBag.Forward(table, i0, o0, output, pool: pool);
        double plainError = MaxRelativeError(output, expected);
        Console.WriteLine($"check: lora vs reference max rel. error {loraError:G3}, plain vs reference {plainError:G3}");
        if (loraError > 1e-4 || plainError > 1e-4) { Console.Error.WriteLine("bench lora: a kernel disagrees with its reference; no numbers reported"); return 1; }

        using var empty = new TableAdapter(table, adapter.Options);
        var names = new List<string> { "livedlrm", "livedlrm_lora", "lora_empty_adapter" };
        var contenders = new List<Action<int>>
        {
            i => EmbeddingBag.Forward(table, batches[i].Indices, batches[i].Offsets, output, pool: pool),
            i => LoraEmbeddingBag.Forward(adapter, batches[i].Indices, batches[i].Offsets, output, pool: pool),
            i => LoraEmbeddingBag.Forward(empty, batches[i].Indices, batches[i].Offsets, output, pool: pool),
        };
        if (knownSlots)
        {
            var known = batches.Select(bt => LoraKnownSlots.Resolve(adapter, bt.Indices)).ToArray();
            LoraEmbeddingBag.Forward(adapter, i0, o0, expected, pool: pool);
            known[0].Forward(adapter, i0, o0, output, pool);
            if (!output.AsSpan().SequenceEqual(expected)) { Console.Error.WriteLine("bench lora: the lookup with known slots differs from the lookup; no numbers reported"); return 1; }
            names.Add("lora_known_slots");
            contenders.Add(i => known[i].Forward(adapter, batches[i].Indices, batches[i].Offsets, output, pool));
        }
        var rates = LoraBenchSupport.Interleaved(contenders, batchCount, (double)batch * pooling / 1e6, runs, runSeconds, quick ? 0.1 : 1);
        var medians = rates.Select(LoraBenchSupport.Median).ToArray();
        for (int c = 0; c < names.Count; c++)
            Console.WriteLine($"  {names[c],-18} {medians[c],8:F1} M lookups/s   runs: {string.Join(" ", rates[c].Select(x => x.ToString("F1")))}");
        double ratio = medians[0] / medians[1];
        // Also per round (plain and LoRA timed next to each other): the host's speed drifts between minutes.
        double perRound = LoraBenchSupport.Median(rates[0].Zip(rates[1], (p, l) => p / l));
        double emptyPerRound = LoraBenchSupport.Median(rates[0].Zip(rates[2], (p, l) => p / l));
        Console.WriteLine($"  LoRA lookup time / plain lookup time = {ratio:F3}, per-round median {perRound:F3} (target ≤ 1.15); probes alone (empty adapter) {medians[0] / medians[2]:F3}, per round {emptyPerRound:F3}");
        double? knownPerRound = knownSlots ? LoraBenchSupport.Median(rates[0].Zip(rates[3], (p, l) => p / l)) : null;
        if (knownPerRound is double kpr)
            Console.WriteLine($"  with every slot given ahead (no filter, no probes): {kpr:F3} of the plain time per round; the search's share: {perRound - kpr:F3}");

        var record = new LoraBenchReport(rows, dim, pooling, batch, rank, threads, storage.ToString(), budget,
            adapter.ActiveRows, adapter.AllocatedBytes, adapter.MemoryFraction * 100, hitFraction, runs, runSeconds, quick,
            medians[0], medians[1], medians[2], ratio, perRound, emptyPerRound, knownPerRound,
            names.Select((n, c) => (n, rates[c])).ToDictionary(x => x.n, x => x.Item2), BenchMachine.Current);
        Console.WriteLine($"wrote {LoraBenchSupport.WriteJson(record, outPath, "lora", BenchJsonContext.Default.LoraBenchReport)}");
        return 0;
    }

    internal static EmbeddingTable RandomTable(long rows, int dim, EmbeddingStorage storage)
    {
        var table = EmbeddingTable.Create($"bench-{storage}-{rows}", rows, dim, storage);
        var row = new float[dim];
        var rng = new Random(1);
        for (long r = 0; r < rows; r++)
        {
            for (int d = 0; d < dim; d++) row[d] = (float)(rng.NextDouble() * 2 - 1);
            table.WriteRow(r, row);
        }
        return table;
    }

    static double MaxRelativeError(float[] actual, float[] expected)
    {
        double m = 0;
        for (int i = 0; i < actual.Length; i++) m = Math.Max(m, Math.Abs(actual[i] - expected[i]) / (1 + Math.Abs(expected[i])));
        return m;
    }
}
