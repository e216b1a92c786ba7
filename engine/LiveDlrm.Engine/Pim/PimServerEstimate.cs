using System.Diagnostics;
using System.Globalization;
using System.Text;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Pim;

/// <summary>One table of a <see cref="PimServerEstimate"/>: its shape and the trace to plan from and to evaluate on.</summary>
internal sealed record PimServerTable(string Name, long Rows, int Dim, AccessProfile PlanOn, AccessProfile EvaluateOn);

/// <summary>A whole model on one UPMEM server next to the CPU kernel on this machine: every table placed cache-aware
/// on the same <see cref="Dpus"/>-DPU set (sharing its WRAM cache), each batch of all tables one push, one launch and
/// one pull. The PIM side is the COST MODEL's ESTIMATE (<see cref="PimCostModel"/>); the CPU side is a MEASUREMENT of
/// the project's embedding-bag kernel on this machine, one thread, on tables of the same shapes. UpDLRM's published
/// "up to 4.6x over CPU-only" is the anchor to read the ratio against.</summary>
internal sealed record PimServerEstimate
{
    public required int Dpus { get; init; }
    public required int Tables { get; init; }
    public required int Batches { get; init; }
    public required double LookupsPerBatch { get; init; }
    /// <summary>ESTIMATE, seconds per batch (all tables).</summary>
    public required double ToDpuSeconds { get; init; }
    public required double KernelFp32Seconds { get; init; }
    public required double KernelInt32Seconds { get; init; }
    public required double FromDpuSeconds { get; init; }
    public double LaunchSeconds => PimCostModel.LaunchFixedSeconds;
    public double Fp32Seconds => ToDpuSeconds + LaunchSeconds + KernelFp32Seconds + FromDpuSeconds;
    public double Int32Seconds => ToDpuSeconds + LaunchSeconds + KernelInt32Seconds + FromDpuSeconds;
    /// <summary>Bytes per batch the pull moves from each DPU (every DPU at the longest DPU's length: one length per
    /// transfer), the mean of what the DPUs actually hold, and the pooled output those partial sums reduce to.</summary>
    public required double PullBytesPerDpu { get; init; }
    public required double PartialBytesPerDpuMean { get; init; }
    public required double PooledBytes { get; init; }
    /// <summary>ESTIMATE with every DPU at the mean of the DPUs' bytes and int32 cycles (perfect balance, nothing padded):
    /// a bound on what balancing the placement and an unpadded transfer could give, not a design that exists.</summary>
    public required double BalancedInt32Seconds { get; init; }
    /// <summary>Per batch, averaged: max/mean of partial sums per DPU over the whole set (what sizes the pull), and
    /// partial sums per pooled vector (per bag, table and column tile).</summary>
    public required double PartialSumImbalance { get; init; }
    public required double PartialSumsPerBag { get; init; }
    /// <summary>Rows of one table an adapter merge pushes in the <see cref="MergePushSeconds"/> estimate (the hottest of
    /// the profile: adapters grow on the rows that are looked up).</summary>
    public const int MergeRows = 4096;
    /// <summary>ESTIMATE, seconds PIM lookups of a table wait while a merge of its <see cref="MergeRows"/> hottest rows is
    /// pushed (batched update: one push of every DPU's records and vectors, one launch), the worst table. Every copy
    /// holds every row, so copies multiply what a merge writes: the price of bag-local placement.</summary>
    public required double MergePushSeconds { get; init; }
    /// <summary>Whole copies of each table (bag-local placement); empty for the single-copy comparison.</summary>
    public int[] CopiesPerTable { get; init; } = [];
    /// <summary>The same tables placed once over all DPUs (no copies), for comparison; null inside it.</summary>
    public PimServerEstimate? SingleCopy { get; init; }
    /// <summary>MEASURED, seconds per batch (all tables) of the CPU kernel on this machine; null when not measured.</summary>
    public double? CpuSeconds { get; init; }
    public required string CpuNote { get; init; }

    /// <summary>Plans and routes every table on <paramref name="dpus"/> DPUs and, unless the tables would take more
    /// than <paramref name="cpuBudgetBytes"/> (0: never), measures the CPU kernel on random tables of the same shapes.</summary>
    public static PimServerEstimate Evaluate(IReadOnlyList<PimServerTable> tables, int dpus = 2560, long cpuBudgetBytes = 1L << 30)
    {
        if (tables.Count == 0) throw new ArgumentException("no tables to estimate");
        if (tables.Count > PimLayout.MaxTables) throw new ArgumentException($"{tables.Count} tables; one DPU set holds {PimLayout.MaxTables}");
        int batches = tables.Min(t => t.EvaluateOn.Batches.Count);
        if (batches == 0) throw new ArgumentException("the traces have no batches to evaluate");
        int cacheShare = PimLayout.WramCacheBytes / tables.Count / 8 * 8;
        // Bag-local: as many whole copies of every table as the MRAM holds, each bag served by one copy.
        var copies = PimPartitioner.BagLocalCopies(tables.Select(t => (t.Rows, t.Dim)).ToArray(), dpus);
        var bagLocal = tables.Select((t, i) => PimPartitioner.CacheAware(t.PlanOn, t.Dim, dpus,
            new PimPlanOptions { CacheBytes = cacheShare, Copies = copies[i].Copies, MramCapacityBytes = copies[i].MramShareBytes })).ToArray();
        var main = Place(tables, bagLocal, batches, dpus);
        // The single placement over all DPUs (one copy), for comparison.
        var single = Place(tables, tables.Select(t => PimPartitioner.CacheAware(t.PlanOn, t.Dim, dpus, new PimPlanOptions { CacheBytes = cacheShare })).ToArray(),
                           batches, dpus);
        var (cpu, note) = MeasureCpu(tables, batches, cpuBudgetBytes);
        return main with
        {
            CopiesPerTable = copies.Select(c => c.Copies).ToArray(),
            SingleCopy = single,
            CpuSeconds = cpu, CpuNote = note,
        };
    }

    /// <summary>The cost model over the batches with these plans on one set: one push, one launch and one pull per
    /// batch; the tables' routers share a per-DPU load so their bags spread over different copies.</summary>
    static PimServerEstimate Place(IReadOnlyList<PimServerTable> tables, PimPlan[] plans, int batches, int dpus)
    {
        var setLoad = new double[dpus];
        var routers = plans.Select(p => new PimRouter(p, setLoad)).ToArray();
        var routed = new PimRoutedBatch?[tables.Count];
        double to = 0, from = 0, kernelFp = 0, kernelInt = 0, lookups = 0, pull = 0, partialMean = 0, pooled = 0, balanced = 0;
        double segImbalance = 0, segments = 0, bags = 0;
        var dma = new double[dpus];
        var fp = new double[dpus];
        var ip = new double[dpus];
        var inBytes = new long[dpus];
        var outBytes = new long[dpus];
        var segs = new uint[dpus];
        for (int k = 0; k < batches; k++)
        {
            Array.Clear(dma); Array.Clear(fp); Array.Clear(ip); Array.Clear(inBytes); Array.Clear(outBytes); Array.Clear(segs); Array.Clear(setLoad);
            for (int t = 0; t < tables.Count; t++)
            {
                var batch = tables[t].EvaluateOn.Batches[k];
                lookups += batch.Indices.Length;
                bags += (double)batch.Bags * plans[t].Tiles;
                pooled += (double)batch.Bags * tables[t].Dim * sizeof(float);
                routed[t] = routers[t].Route(batch.Indices, batch.Offsets, routed[t]);
                segments += routed[t]!.SegmentCount;
                var costs = PimPlanReport.CostPerDpu(plans[t], routed[t]!);
                for (int d = 0; d < dpus; d++)
                {
                    // One launch: a DPU works through every table's segments; one header per DPU, not per table.
                    dma[d] += costs[d].DmaCycles - (t > 0 ? PimCostModel.DmaReadCycles(PimLayout.BatchHeaderBytes) : 0);
                    fp[d] += costs[d].Fp32Cycles;
                    ip[d] += costs[d].Int32Cycles;
                    inBytes[d] += costs[d].InBytes - (t > 0 ? PimLayout.BatchHeaderBytes : 0);
                    outBytes[d] += costs[d].OutBytes;
                    segs[d] += routed[t]!.SegmentsPerDpu[d];
                }
            }
            double worstFp = 0, worstInt = 0;
            for (int d = 0; d < dpus; d++)
            {
                worstFp = Math.Max(worstFp, Math.Max(dma[d], fp[d]));
                worstInt = Math.Max(worstInt, Math.Max(dma[d], ip[d]));
            }
            kernelFp += worstFp / PimCostModel.DpuClockHz;
            kernelInt += worstInt / PimCostModel.DpuClockHz;
            to += PimCostModel.TransferSeconds(inBytes.Max(), dpus, toDpu: true);
            from += PimCostModel.TransferSeconds(outBytes.Max(), dpus, toDpu: false);
            pull += outBytes.Max();
            partialMean += outBytes.Average();
            segImbalance += PimPlanReport.SegmentImbalance(segs, dpus);
            double meanInt = 0;
            for (int d = 0; d < dpus; d++) meanInt += Math.Max(dma[d], ip[d]) / dpus;
            balanced += PimCostModel.TransferSeconds((long)Math.Ceiling(inBytes.Average()), dpus, toDpu: true) + PimCostModel.LaunchFixedSeconds
                        + meanInt / PimCostModel.DpuClockHz + PimCostModel.TransferSeconds((long)Math.Ceiling(outBytes.Average()), dpus, toDpu: false);
        }
        return new PimServerEstimate
        {
            MergePushSeconds = plans.Select((p, t) => EstimateMergePush(p, tables[t].PlanOn, MergeRows)).Max(),
            Dpus = dpus, Tables = tables.Count, Batches = batches, LookupsPerBatch = lookups / batches,
            ToDpuSeconds = to / batches, KernelFp32Seconds = kernelFp / batches, KernelInt32Seconds = kernelInt / batches, FromDpuSeconds = from / batches,
            BalancedInt32Seconds = balanced / batches, PullBytesPerDpu = pull / batches, PartialBytesPerDpuMean = partialMean / batches, PooledBytes = pooled / batches,
            PartialSumImbalance = segImbalance / batches, PartialSumsPerBag = bags > 0 ? segments / bags : 0,
            CpuNote = "",
        };
    }

    /// <summary>Seconds per batch of <see cref="EmbeddingBag.Forward"/> over all tables, one thread: a warm-up pass, then
    /// the median of three runs of at least 0.2 s each.</summary>
    static (double? Seconds, string Note) MeasureCpu(IReadOnlyList<PimServerTable> tables, int batches, long budgetBytes)
    {
        long bytes = tables.Sum(t => t.Rows * t.Dim * sizeof(float));
        if (budgetBytes <= 0) return (null, "not measured (--no-cpu)");
        if (bytes > budgetBytes)
            return (null, string.Format(CultureInfo.InvariantCulture, "not measured: the tables take {0:F0} MiB, more than the {1:F0} MiB allowed here",
                                        bytes / 1048576.0, budgetBytes / 1048576.0));
        var rng = new Random(1);
        var owned = new List<EmbeddingTable>();
        try
        {
            foreach (var t in tables)
            {
                var values = new float[t.Rows * t.Dim];
                for (long i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
                owned.Add(EmbeddingTable.FromFp32(t.Name, values, t.Dim, EmbeddingStorage.Fp32));
            }
            using var inline = new EmbeddingWorkerPool(0);
            var output = new float[tables.Max(t => t.EvaluateOn.Batches.Take(batches).Max(b => b.Bags) * t.Dim)];
            void Pass()
            {
                for (int k = 0; k < batches; k++)
                    for (int t = 0; t < tables.Count; t++)
                    {
                        var b = tables[t].EvaluateOn.Batches[k];
                        EmbeddingBag.Forward(owned[t], b.Indices, b.Offsets, output.AsSpan(0, b.Bags * tables[t].Dim), pool: inline);
                    }
            }
            Pass();
            var runs = new double[3];
            for (int r = 0; r < runs.Length; r++)
            {
                int passes = 0;
                long start = Stopwatch.GetTimestamp();
                do { Pass(); passes++; } while (Stopwatch.GetElapsedTime(start).TotalSeconds < 0.2);
                runs[r] = Stopwatch.GetElapsedTime(start).TotalSeconds / (passes * (double)batches);
            }
            Array.Sort(runs);
            return (runs[1], $"{EmbeddingKernels.CurrentIsa} kernel, 1 thread, median of 3 runs");
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
        }
    }

    /// <summary>Batched merge push of the <paramref name="rows"/> hottest rows of the profile on <paramref name="plan"/>:
    /// the DPU that receives most vectors sizes the push (16-byte record + vector each), then it copies them in MRAM.</summary>
    internal static double EstimateMergePush(PimPlan plan, AccessProfile profile, int rows)
    {
        var perMember = new long[plan.GroupSize];
        long cached = 0;
        foreach (int r in Enumerable.Range(0, (int)plan.Rows).OrderByDescending(r => profile.Counts[r]).Take(rows))
        {
            if (plan.CacheOrdinal[r] >= 0) cached++;
            for (int x = plan.ReplicaStart[r]; x < plan.ReplicaStart[r + 1]; x++) perMember[plan.ReplicaMember[x]]++;
        }
        long most = perMember.Max() + cached;   // per DPU of one tile; every copy and tile receives the same count
        long bytes = PimLayout.BatchHeaderBytes + most * (16 + plan.SlotBytes);
        double cycles = most * (PimCostModel.DmaReadCycles(16) + PimCostModel.DmaReadCycles(plan.SlotBytes) + PimCostModel.DmaWriteCycles(plan.SlotBytes));
        return PimCostModel.TransferSeconds(bytes, plan.UsedDpus, toDpu: true) + PimCostModel.LaunchFixedSeconds + cycles / PimCostModel.DpuClockHz;
    }

    public string Format()
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(string.Format(ci, "whole model on a {0}-DPU UPMEM server: {1} tables in one DPU set, one launch per batch, {2} batches of {3:F0} lookups",
                                    Dpus, Tables, Batches, LookupsPerBatch));
        sb.AppendLine(string.Format(ci, "  placement: cache-aware, bag-local copies per table {0} (each bag served whole by one copy; bags spread over copies by load)",
                                    string.Join("/", CopiesPerTable)));
        sb.AppendLine(string.Format(ci, "  ESTIMATE (cost model, not a measurement) fp32 storage:  {0,10:F1} us/batch  (to DPUs {1:F1}, launch {2:F1}, kernel {3:F1}, from DPUs {4:F1})",
                                    Fp32Seconds * 1e6, ToDpuSeconds * 1e6, LaunchSeconds * 1e6, KernelFp32Seconds * 1e6, FromDpuSeconds * 1e6));
        sb.AppendLine(string.Format(ci, "  ESTIMATE (cost model, not a measurement) int32 storage: {0,10:F1} us/batch  (kernel {1:F1})",
                                    Int32Seconds * 1e6, KernelInt32Seconds * 1e6));
        if (CpuSeconds is double cpu)
        {
            sb.AppendLine(string.Format(ci, "  MEASURED CPU embedding-bag kernel on this machine:      {0,10:F1} us/batch  ({1})", cpu * 1e6, CpuNote));
            sb.AppendLine(string.Format(ci, "  estimate / measurement: fp32 {0:F2}x, int32 {1:F2}x faster than this CPU; UpDLRM reports up to {2}x over CPU-only (its CPU, its datasets)",
                                        cpu / Fp32Seconds, cpu / Int32Seconds, PimCostModel.UpDlrmReportedSpeedup));
        }
        else sb.AppendLine($"  CPU kernel: {CpuNote}");
        AppendPull(sb, this, "");
        if (SingleCopy is { } one)
        {
            sb.AppendLine(string.Format(ci, "  one copy over all {0} DPUs instead (no bag-local copies): ESTIMATE fp32 {1:F1} / int32 {2:F1} us/batch",
                                        Dpus, one.Fp32Seconds * 1e6, one.Int32Seconds * 1e6));
            AppendPull(sb, one, "  ");
        }
        sb.AppendLine(string.Format(ci, "  ESTIMATE merge push of the {0} hottest rows of a table (PIM lookups of it wait; worst table): bag-local {1:F2} ms{2}",
                                    MergeRows, MergePushSeconds * 1e3,
                                    SingleCopy is { } o ? string.Format(ci, ", one copy {0:F2} ms (every copy receives every merged row)", o.MergePushSeconds * 1e3) : ""));
        sb.AppendLine(string.Format(ci, "  ESTIMATE bound, int32, every DPU at the mean (balanced, nothing padded): {0,10:F1} us/batch", BalancedInt32Seconds * 1e6));
        if (CpuSeconds is double measured)
            sb.AppendLine(string.Format(ci, "  {0}x over this CPU would need <= {1:F1} us/batch in all: the fixed launch and two transfer calls alone are {2:F1} us",
                                        PimCostModel.UpDlrmReportedSpeedup, measured / PimCostModel.UpDlrmReportedSpeedup * 1e6,
                                        (PimCostModel.LaunchFixedSeconds + 2 * PimCostModel.TransferCallFixedSeconds) * 1e6));
        sb.Append(PimPlanReport.Legend());
        return sb.ToString();
    }

    /// <summary>Where the pull goes: every DPU is pulled at the length of the DPU with the most partial sums (one length
    /// per transfer), against the mean of what the DPUs hold and the pooled output they reduce to.</summary>
    static void AppendPull(StringBuilder sb, PimServerEstimate e, string indent)
    {
        var ci = CultureInfo.InvariantCulture;
        sb.AppendLine(string.Format(ci, "  {6}pull per batch: {0:F2} KiB from each of {1} DPUs (their partial sums: mean {2:F2} KiB; the pull is sized by the largest) = {3:F0} KiB, " +
                                        "for {4:F0} KiB of pooled output ({5:F1}x)",
                                    e.PullBytesPerDpu / 1024, e.Dpus, e.PartialBytesPerDpuMean / 1024, e.PullBytesPerDpu * e.Dpus / 1024, e.PooledBytes / 1024,
                                    e.PullBytesPerDpu * e.Dpus / Math.Max(1, e.PooledBytes), indent));
        sb.AppendLine(string.Format(ci, "  {2}partial sums: {0:F2} per pooled vector; per DPU max/mean {1:F2}",
                                    e.PartialSumsPerBag, e.PartialSumImbalance, indent));
    }
}
