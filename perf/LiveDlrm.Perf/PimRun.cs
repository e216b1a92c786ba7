using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Pim;
using LiveDlrm.Reports;

namespace LiveDlrm.Perf;

/// <summary><c>./build.sh bench pim</c>: the UpDLRM partitionings on one Zipf table — placement, per-batch traffic
/// (routed exactly as the backend does), the COST MODEL's hardware estimate — and the emulated backend's measured
/// throughput (emulation on this CPU, not hardware), each checked against the scalar reference first.
/// Writes artifacts/bench/pim.json.</summary>
internal sealed class PimRun : BenchRun
{
    sealed record PimBenchOptions(long Rows, int Dim, int Dpus, double Zipf, int Batches, int Bags, int Pooling, int Runs, double RunSeconds, int MergeRows, string? Out);

    readonly Option<long> _rows = Opt.Long("--rows", "table rows (--quick: 20000)", 200_000, 1);
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim", 64, 1, 4096);
    readonly Option<int> _dpus = Opt.Int("--dpus", "DPUs", 64, 1, 2560);
    readonly Option<double> _zipf = Opt.Double("--zipf", "Zipf exponent of the ids", 1.05, 1e-9, 100);
    readonly Option<int> _batches = Opt.Int("--batches", "batches: plans are built on one half, evaluated and timed on the other (--quick: 4)", 16, 2, 1_000_000);
    readonly Option<int> _bags = Opt.Int("--bags", "bags per batch", 256, 1, 1 << 20);
    readonly Option<int> _pooling = Opt.Int("--pooling", "ids per bag", 20, 1, 1 << 20);
    readonly Option<int> _runs = Opt.Int("--runs", "timed runs, median reported (--quick: 1)", 3, 1, 10_000);
    readonly Option<double> _runSeconds = Opt.Double("--run-seconds", "length of one timed run (--quick: 0.2)", 1.0, 1e-3, 3600);
    readonly Option<bool> _quick = Opt.Flag("--quick", "small table and short runs (smoke test; numbers are not meaningful)");
    readonly Option<int> _mergeRows = Opt.Int("--merge-rows", "rows of the merge whose push is timed (batched vs per slot)", 4096, 1, 1 << 20);
    readonly Option<string?> _out = Opt.Text("--out", "JSON output (default artifacts/bench/pim.json)", helpName: "PATH");

    public PimRun() : base("pim", "UPMEM PIM partitionings: imbalance, MRAM/host bytes per batch, modelled DPU time, emulated throughput")
    {
        foreach (var o in new Option[] { _rows, _dim, _dpus, _zipf, _batches, _bags, _pooling, _runs, _runSeconds, _quick, _mergeRows, _out }) Add(o);
    }

    protected override int Run(ParseResult r)
    {
        bool quick = r.GetValue(_quick);
        var o = new PimBenchOptions(Pick(r, _rows, quick, 20_000), r.GetValue(_dim), r.GetValue(_dpus), r.GetValue(_zipf), Pick(r, _batches, quick, 4),
                            r.GetValue(_bags), r.GetValue(_pooling), Pick(r, _runs, quick, 1), Pick(r, _runSeconds, quick, 0.2), r.GetValue(_mergeRows), r.GetValue(_out));
        if (!PimDevice.IsAvailable) throw new IOException("liblivedlrm_pim.so not found (./build.sh build)");

        Console.WriteLine($"table {o.Rows} x {o.Dim} fp32, {o.Dpus} DPUs, Zipf({o.Zipf.ToString(CultureInfo.InvariantCulture)}), " +
                          $"{o.Batches} batches of {o.Bags} bags x {o.Pooling} ids (plan on half, evaluate and time on the other half)");
        var profile = AccessProfile.Zipf(o.Rows, o.Zipf, o.Batches, o.Bags, o.Pooling, seed: 1);
        var (planOn, evaluateOn) = profile.SplitHalves();
        var rng = new Random(3);
        var values = new float[o.Rows * o.Dim];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        using var table = EmbeddingTable.FromFp32("bench", values, o.Dim, EmbeddingStorage.Fp32);

        var records = new List<StrategyRecord>();
        var reports = new List<PimPlanReport>();
        foreach (var strategy in Enum.GetValues<PimStrategy>())
        {
            var plan = PimPartitioner.Build(strategy, planOn, o.Dim, o.Dpus);
            var report = PimPlanReport.Evaluate(plan, evaluateOn);
            reports.Add(report);
            using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated });
            backend.Load(table, plan);
            string check = CheckAgainstReference(backend, table, evaluateOn.Batches[0]);
            if (check.Length > 0) { Console.Error.WriteLine($"bench pim: {strategy}: {check}"); return 1; }
            var (runs, batchesPerRun) = Time(backend, table, evaluateOn, o);
            var stats = backend.Stats(table);
            double perBatch(TimeSpan t) => t.TotalSeconds / stats.Batches;
            records.Add(new StrategyRecord(strategy.ToString(), report.ExpectedImbalance, report.BatchImbalance, report.CacheHitRate,
                report.MramBytesPerDpuMax, report.MramBytesReadPerBatch, report.HostToDpuBytesPerBatch, report.DpuToHostBytesPerBatch,
                new ModelRecord(report.ModelDmaSeconds, report.ModelComputeSeconds, report.ModelKernelSeconds, report.ModelToDpuSeconds,
                                report.ModelFromDpuSeconds, report.ModelBatchSeconds),
                new EmulationRecord("emulation, not hardware", Median(runs), runs, batchesPerRun, stats.Backend.ToString(),
                                    perBatch(stats.ToDpu), perBatch(stats.Kernel), perBatch(stats.FromDpu), perBatch(stats.HostReduce))));
            Console.WriteLine($"  {strategy,-18} emulated {Median(runs) / 1e6:F2} M lookups/s (emulation, not hardware); model {report.ModelBatchSeconds * 1e6:F0} us/batch");
        }
        Console.WriteLine();
        Console.WriteLine(PimPlanReport.Format(reports));
        var stall = TimeMergeStall(table, planOn, evaluateOn, o);
        if (stall is null) return 1;
        Console.WriteLine($"merge of {stall.Rows} rows ({stall.Vectors} stored vectors, CacheAware, {o.Dpus} DPUs): PIM lookups of the table wait for the push — " +
                          $"batched {stall.BatchedSecondsMedian * 1e3:F2} ms vs per-slot {stall.PerSlotSecondsMedian * 1e3:F2} ms on the emulation " +
                          $"(median per-round ratio {stall.PerSlotOverBatchedMedian:F1}x over {stall.BatchedSeconds.Length} interleaved rounds); " +
                          $"MODEL for hardware: batched {stall.ModelBatchedSeconds * 1e3:F2} ms vs per-slot {stall.ModelPerSlotSeconds * 1e3:F2} ms");
        var term = TimeAdapterTerm(table, planOn, evaluateOn, o);
        if (term is null) return 1;
        Console.WriteLine($"host side of LoRA over PIM (rank {term.Rank}, {term.AdaptedRows} adapted rows = hottest, {term.AdaptedLookupShare:P1} of lookups; one thread, median of {o.Runs}): " +
                          $"adapter term {term.AdapterTermSecondsPerBatch * 1e6:F1} us/batch vs fused CPU LoRA lookup {term.FusedLoraSecondsPerBatch * 1e6:F1} " +
                          $"and plain CPU lookup {term.PlainSecondsPerBatch * 1e6:F1} us/batch");

        var result = new PimBenchRecord("pim", DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture), Environment.MachineName,
            new TableRecord(o.Rows, o.Dim, o.Dpus, profile.Description, o.Bags, o.Pooling, evaluateOn.Batches.Count),
            new Dictionary<string, double>
            {
                ["dpu_clock_hz"] = PimCostModel.DpuClockHz, ["mram_read_alpha_cycles"] = PimCostModel.MramReadAlphaCycles,
                ["mram_write_alpha_cycles"] = PimCostModel.MramWriteAlphaCycles, ["mram_beta_cycles_per_byte"] = PimCostModel.MramBetaCyclesPerByte,
                ["host_to_dpu_bytes_per_second_per_rank"] = PimCostModel.HostToDpuBytesPerSecondPerRank,
                ["dpu_to_host_bytes_per_second_per_rank"] = PimCostModel.DpuToHostBytesPerSecondPerRank,
                ["kernel_tasklets"] = PimCostModel.KernelTasklets, ["fp32_accumulate_cycles_assumption"] = PimCostModel.Fp32AccumulateCycles,
                ["int32_accumulate_cycles"] = PimCostModel.Int32AccumulateCycles,
                ["system_host_to_dpu_bytes_per_second_assumption"] = PimCostModel.SystemHostToDpuBytesPerSecond,
                ["system_dpu_to_host_bytes_per_second_assumption"] = PimCostModel.SystemDpuToHostBytesPerSecond,
                ["launch_fixed_seconds_assumption"] = PimCostModel.LaunchFixedSeconds,
                ["transfer_call_fixed_seconds_assumption"] = PimCostModel.TransferCallFixedSeconds,
            },
            records, stall, term);
        string path = Path.GetFullPath(o.Out ?? Path.Combine(RepoRoot(), "artifacts", "bench", "pim.json"));
        ReportJson.Write(result, path, BenchJsonContext.Default.PimBenchRecord);
        Console.WriteLine($"wrote {path}");
        return 0;
    }

    /// <summary>Empty when the emulated backend equals the scalar reference within the reordering bound.</summary>
    static string CheckAgainstReference(PimEmbeddingBackend backend, EmbeddingTable table, PimBatch batch)
    {
        var actual = new float[batch.Bags * table.Dim];
        var expected = new float[actual.Length];
        backend.Forward(table, batch.Indices, batch.Offsets, actual);
        EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
        var row = new float[table.Dim];
        for (int b = 0; b < batch.Bags; b++)
        {
            var magnitude = new double[table.Dim];
            for (long i = batch.Offsets[b]; i < batch.Offsets[b + 1]; i++)
            {
                table.ReadRow(batch.Indices[i], row);
                for (int d = 0; d < table.Dim; d++) magnitude[d] += Math.Abs(row[d]);
            }
            for (int d = 0; d < table.Dim; d++)
                if (Math.Abs(actual[b * table.Dim + d] - expected[b * table.Dim + d]) > 1e-6 * magnitude[d] + 1e-30)
                    return $"bag {b} column {d}: {actual[b * table.Dim + d]} vs reference {expected[b * table.Dim + d]}";
        }
        return "";
    }

    /// <summary>A merge of <c>MergeRows</c> distinct rows (hot ones included, so replicas, cache copies and pair sums are
    /// rewritten too) pushed batched and per slot in interleaved rounds on one emulated set; lookups are checked
    /// against the reference after each push. The push is what PIM lookups of the table wait for during a merge.</summary>
    static MergeStallRecord? TimeMergeStall(EmbeddingTable table, AccessProfile planOn, AccessProfile evaluateOn, PimBenchOptions o)
    {
        var plan = PimPartitioner.Build(PimStrategy.CacheAware, planOn, o.Dim, o.Dpus);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated });
        backend.Load(table, plan);
        var rng = new Random(11);
        var hot = Enumerable.Range(0, (int)planOn.Rows).OrderByDescending(r => planOn.Counts[r]).Take(o.MergeRows / 4).Select(r => (long)r);
        var rows = hot.Concat(Enumerable.Range(0, o.MergeRows * 2).Select(_ => rng.NextInt64(table.Rows))).Distinct().Take(o.MergeRows).ToArray();
        var row = new float[table.Dim];
        const int rounds = 9;
        var batched = new double[rounds];
        var perSlot = new double[rounds];
        long vectors = 0, launches = 0;
        for (int r = 0; r < rounds; r++)
        {
            foreach (bool slotwise in r % 2 == 0 ? new[] { false, true } : [true, false])
            {
                foreach (long x in rows)
                {
                    for (int d = 0; d < row.Length; d++) row[d] = (float)(rng.NextDouble() * 2 - 1);
                    table.WriteRow(x, row);
                }
                var before = backend.Stats(table);
                long start = Stopwatch.GetTimestamp();
                backend.UpdateRows(table, rows, slotwise);
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                var after = backend.Stats(table);
                (slotwise ? perSlot : batched)[r] = seconds;
                vectors = after.UpdatedVectors - before.UpdatedVectors;
                if (!slotwise) launches = after.UpdateLaunches - before.UpdateLaunches;
                string check = CheckAgainstReference(backend, table, evaluateOn.Batches[0]);
                if (check.Length > 0) { Console.Error.WriteLine($"bench pim: after a {(slotwise ? "per-slot" : "batched")} merge push: {check}"); return null; }
            }
        }
        var ratios = Enumerable.Range(0, rounds).Select(r => perSlot[r] / batched[r]).ToArray();
        // Hardware estimate. Per slot: one call each, serial single-DPU bandwidth (upmem.md: ~0.33 GB/s to one DPU).
        double modelPerSlot = vectors * (PimCostModel.TransferCallFixedSeconds + plan.SlotBytes / 0.33e9);
        // Batched: one push of the longest DPU's records and vectors to all DPUs, a launch, the DPU rewriting them.
        long perDpuMost = Math.Max(1, (long)Math.Ceiling((double)vectors / Math.Max(1, plan.UsedDpus)) + plan.CacheVectors);
        long len = PimLayout.BatchHeaderBytes + perDpuMost * (16 + plan.SlotBytes);
        double dpuCycles = perDpuMost * (PimCostModel.DmaReadCycles(16) + PimCostModel.DmaReadCycles(plan.SlotBytes) + PimCostModel.DmaWriteCycles(plan.SlotBytes));
        double modelBatched = PimCostModel.TransferSeconds(len, o.Dpus, toDpu: true) + PimCostModel.LaunchFixedSeconds + dpuCycles / PimCostModel.DpuClockHz;
        return new MergeStallRecord("emulation on this CPU (wall time of the push); model = cost model estimate for hardware", rows.Length, vectors,
                                    Median(batched), Median(perSlot), Median(ratios), batched, perSlot, launches, modelBatched, modelPerSlot);
    }

    /// <summary>What the host still computes when PIM pools the base: the adapter term (<see cref="LoraAdapterTerm"/>)
    /// per batch, next to the fused CPU LoRA lookup and the plain CPU lookup on the same batches, one thread each.
    /// The adapter holds the hottest rows of the plan half (what training touches) up to a 1 % budget at rank 16;
    /// base + term is checked against the fused kernel first. Null (after printing why) if the check fails.</summary>
    static AdapterTermRecord? TimeAdapterTerm(EmbeddingTable table, AccessProfile planOn, AccessProfile evaluateOn, PimBenchOptions o)
    {
        const int rank = 16;
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MinRank = rank, MaxRank = Math.Min(rank, table.Dim), BudgetFraction = 0.01 });
        var rng = new Random(5);
        var a = new float[adapter.Rank];
        var hottest = Enumerable.Range(0, (int)planOn.Rows).OrderByDescending(r => planOn.Counts[r]).Take(adapter.SlotCapacity).ToArray();
        foreach (int r in hottest)
        {
            for (int k = 0; k < a.Length; k++) a[k] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            adapter.SetRow(r, a);
        }
        var adapted = new HashSet<long>(hottest.Select(r => (long)r));
        double share = (double)evaluateOn.Batches.Sum(b => b.Indices.Count(adapted.Contains)) / evaluateOn.TotalLookups;
        using var inline = new EmbeddingWorkerPool(0);
        var batches = evaluateOn.Batches;
        var output = new float[batches.Max(b => b.Bags) * table.Dim];
        var fused = new float[output.Length];

        var check = batches[0];
        int n0 = check.Bags * table.Dim;
        EmbeddingBag.Forward(table, check.Indices, check.Offsets, output.AsSpan(0, n0), pool: inline);
        LoraAdapterTerm.Add(adapter, check.Indices, check.Offsets, output.AsSpan(0, n0), pool: inline);
        LoraEmbeddingBag.Forward(adapter, check.Indices, check.Offsets, fused.AsSpan(0, n0), pool: inline);
        for (int i = 0; i < n0; i++)
            if (Math.Abs(output[i] - fused[i]) > 1e-4 * (1 + Math.Abs(fused[i])))
            {
                Console.Error.WriteLine($"bench pim: base + adapter term differs from the fused kernel at {i}: {output[i]} vs {fused[i]}");
                return null;
            }

        double Seconds(Action<PimBatch> run)
        {
            foreach (var b in batches) run(b);     // warm-up
            var perRun = new double[o.Runs];
            for (int r = 0; r < o.Runs; r++)
            {
                int done = 0;
                long start = Stopwatch.GetTimestamp();
                do { foreach (var b in batches) run(b); done += batches.Count; }
                while (Stopwatch.GetElapsedTime(start).TotalSeconds < o.RunSeconds / 3);
                perRun[r] = Stopwatch.GetElapsedTime(start).TotalSeconds / done;
            }
            return Median(perRun);
        }
        // Interleaved rounds (term, fused, plain, term, ...) so load changes on the shared machine hit all three alike.
        var termRuns = new List<double>();
        var fusedRuns = new List<double>();
        var plainRuns = new List<double>();
        for (int round = 0; round < 3; round++)
        {
            termRuns.Add(Seconds(b => LoraAdapterTerm.Add(adapter, b.Indices, b.Offsets, output.AsSpan(0, b.Bags * table.Dim), pool: inline)));
            fusedRuns.Add(Seconds(b => LoraEmbeddingBag.Forward(adapter, b.Indices, b.Offsets, output.AsSpan(0, b.Bags * table.Dim), pool: inline)));
            plainRuns.Add(Seconds(b => EmbeddingBag.Forward(table, b.Indices, b.Offsets, output.AsSpan(0, b.Bags * table.Dim), pool: inline)));
        }
        double term = Median([.. termRuns]), fusedSeconds = Median([.. fusedRuns]), plain = Median([.. plainRuns]);
        return new AdapterTermRecord("measured on this CPU, one thread", adapter.Rank, hottest.Length, share, term, fusedSeconds, plain);
    }

    /// <summary>Warm-up pass over every batch, then <c>Runs</c> timed runs of about <c>RunSeconds</c>; lookups/s per run.</summary>
    static (double[] Runs, int BatchesPerRun) Time(PimEmbeddingBackend backend, EmbeddingTable table, AccessProfile batches, PimBenchOptions o)
    {
        var output = new float[batches.Batches.Max(b => b.Bags) * table.Dim];
        long start = Stopwatch.GetTimestamp();
        foreach (var b in batches.Batches) backend.Forward(table, b.Indices, b.Offsets, output);
        double perBatch = Stopwatch.GetElapsedTime(start).TotalSeconds / batches.Batches.Count;
        int n = Math.Max(1, (int)Math.Ceiling(o.RunSeconds / perBatch));
        var runs = new double[o.Runs];
        long lookups = 0;
        for (int r = 0; r < o.Runs; r++)
        {
            lookups = 0;
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < n; i++)
            {
                var b = batches.Batches[i % batches.Batches.Count];
                backend.Forward(table, b.Indices, b.Offsets, output);
                lookups += b.Indices.Length;
            }
            runs[r] = lookups / Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return (runs, n);
    }

    static double Median(double[] xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    internal sealed record PimBenchRecord(string Run, string Utc, string Host, TableRecord Table, Dictionary<string, double> CostModelConstants, List<StrategyRecord> Strategies,
                                 MergeStallRecord MergeStall, AdapterTermRecord HostAdapterTerm);
    /// <summary>How long one merge push holds PIM lookups of the table (the merge lock), batched rounds vs one transfer
    /// call per stored vector: emulated wall time (interleaved rounds) and the cost model's hardware estimate.</summary>
    internal sealed record MergeStallRecord(string Label, int Rows, long Vectors, double BatchedSecondsMedian, double PerSlotSecondsMedian, double PerSlotOverBatchedMedian,
                                   double[] BatchedSeconds, double[] PerSlotSeconds, long BatchedLaunches, double ModelBatchedSeconds, double ModelPerSlotSeconds);
    /// <summary>Seconds per batch of the host's work on the LoRA-over-PIM path and of the CPU-only alternatives.</summary>
    internal sealed record AdapterTermRecord(string Label, int Rank, int AdaptedRows, double AdaptedLookupShare, double AdapterTermSecondsPerBatch,
                                    double FusedLoraSecondsPerBatch, double PlainSecondsPerBatch);
    internal sealed record TableRecord(long Rows, int Dim, int Dpus, string Profile, int BagsPerBatch, int Pooling, int EvaluationBatches);
    internal sealed record StrategyRecord(string Strategy, double ExpectedImbalance, double BatchImbalance, double CacheHitRate, long MramBytesPerDpuMax,
                                 double MramBytesReadPerBatch, double HostToDpuBytesPerBatch, double DpuToHostBytesPerBatch,
                                 ModelRecord CostModelPerBatch, EmulationRecord Emulated);
    /// <summary>Seconds per batch on real hardware according to <see cref="PimCostModel"/> (a model, not a measurement).</summary>
    internal sealed record ModelRecord(double DmaSeconds, double ComputeSeconds, double KernelSeconds, double ToDpuSeconds, double FromDpuSeconds, double TotalSeconds);
    internal sealed record EmulationRecord(string Label, double LookupsPerSecondMedian, double[] LookupsPerSecondRuns, int BatchesPerRun, string Backend,
                                  double ToDpuSecondsPerBatch, double KernelSecondsPerBatch, double FromDpuSecondsPerBatch, double HostReduceSecondsPerBatch);
}
