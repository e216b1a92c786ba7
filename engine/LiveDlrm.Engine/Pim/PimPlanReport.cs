using System.Globalization;
using System.Text;

namespace LiveDlrm.Pim;

/// <summary>What one plan costs on a workload: placement facts from the plan, per-batch traffic measured by routing
/// the profile's batches exactly as the backend would, and a COST MODEL estimate of hardware time
/// (<see cref="PimCostModel"/>; a model, not a measurement).</summary>
internal sealed record PimPlanReport
{
    public required PimStrategy Strategy { get; init; }
    public required int Dpus { get; init; }
    public required int Tiles { get; init; }
    public required int SliceFloats { get; init; }
    public required long MramBytesPerDpuMax { get; init; }
    public required double MramBytesPerDpuMean { get; init; }
    public required int CachedRows { get; init; }
    public required int PairSums { get; init; }
    /// <summary>Expected lookups per DPU from the access profile (max / mean).</summary>
    public required double ExpectedLookupsMax { get; init; }
    public required double ExpectedLookupsMean { get; init; }
    public double ExpectedImbalance => ExpectedLookupsMean > 0 ? ExpectedLookupsMax / ExpectedLookupsMean : 1;
    /// <summary>Per routed batch, averaged: max/mean of items per DPU.</summary>
    public required double BatchImbalance { get; init; }
    /// <summary>Per routed batch, averaged: max/mean of partial sums (segments) per DPU — what sizes the pull.</summary>
    public required double PartialSumImbalance { get; init; }
    /// <summary>Partial sums per batch over all DPUs (each is one slot of pull), and per pooled output vector.</summary>
    public required double PartialSumsPerBatch { get; init; }
    public double PartialSumsPerBag => LookupsPerBatch > 0 && BagsPerBatch > 0 ? PartialSumsPerBatch / (BagsPerBatch * Tiles) : 0;
    public required double BagsPerBatch { get; init; }
    public required double LookupsPerBatch { get; init; }
    public required double CacheHitRate { get; init; }
    public required double PairItemsPerBatch { get; init; }
    /// <summary>MRAM bytes the kernels read per batch, all DPUs: vectors, item lists, segment descriptors, header.</summary>
    public required double MramBytesReadPerBatch { get; init; }
    public required double MramBytesWrittenPerBatch { get; init; }
    /// <summary>Host↔DPU bytes per batch as transferred: the padded common length × DPUs.</summary>
    public required double HostToDpuBytesPerBatch { get; init; }
    public required double DpuToHostBytesPerBatch { get; init; }
    /// <summary>COST MODEL, seconds per batch: slowest DPU's DMA cycles, its compute cycles, the kernel (max of both),
    /// the two transfers, and their sum.</summary>
    public required double ModelDmaSeconds { get; init; }
    public required double ModelComputeSeconds { get; init; }
    public required double ModelKernelSeconds { get; init; }
    /// <summary>The same with int32 storage (integer adds instead of soft-float ones).</summary>
    public required double ModelComputeInt32Seconds { get; init; }
    public required double ModelKernelInt32Seconds { get; init; }
    /// <summary>Including each transfer call's fixed cost.</summary>
    public required double ModelToDpuSeconds { get; init; }
    public required double ModelFromDpuSeconds { get; init; }
    /// <summary>Transfers, the launch's fixed cost and the kernel (fp32 / int32).</summary>
    public double ModelBatchSeconds => ModelToDpuSeconds + PimCostModel.LaunchFixedSeconds + ModelKernelSeconds + ModelFromDpuSeconds;
    public double ModelBatchInt32Seconds => ModelToDpuSeconds + PimCostModel.LaunchFixedSeconds + ModelKernelInt32Seconds + ModelFromDpuSeconds;

    /// <summary>What one routed batch costs each DPU of <paramref name="plan"/>: DMA cycles (header, segment
    /// descriptors, item lists, MRAM vectors, partial-sum writes), compute cycles for fp32 and int32 storage, MRAM bytes
    /// read and written, and the DPU's input and output lengths as the shim packs them.</summary>
    internal readonly record struct DpuCost(double DmaCycles, double Fp32Cycles, double Int32Cycles, long MramRead, long MramWritten,
                                            long InBytes, long OutBytes, long Items);

    internal static DpuCost[] CostPerDpu(PimPlan plan, PimRoutedBatch routed)
    {
        var costs = new DpuCost[plan.DpuCount];
        int slotBytes = plan.SlotBytes;
        int seg = 0, item = 0;
        for (int d = 0; d < plan.DpuCount; d++)
        {
            int segs = (int)routed.SegmentsPerDpu[d], items = (int)routed.ItemsPerDpu[d];
            long read = PimLayout.BatchHeaderBytes, padded = 0;
            double cycles = PimCostModel.DmaReadCycles(PimLayout.BatchHeaderBytes);
            long mramItems = 0;
            for (int s = 0; s < segs; s++)
            {
                var g = routed.Segments[seg + s];
                read += PimLayout.SegmentBytes;
                cycles += PimCostModel.DmaReadCycles(PimLayout.SegmentBytes);
                for (uint done = 0; done < g.ItemCount; done += PimLayout.ItemChunk)
                {
                    long n = Math.Min(PimLayout.ItemChunk, g.ItemCount - done);
                    long bytes = ((n + 1) & ~1L) * sizeof(uint);
                    read += bytes;
                    cycles += PimCostModel.DmaReadCycles(bytes);
                }
                padded += (g.ItemCount + 1) & ~1u;
                cycles += PimCostModel.DmaWriteCycles(slotBytes);
            }
            for (int x = 0; x < items; x++)
                if ((routed.Items[item + x] & PimLayout.ItemCacheBit) == 0) mramItems++;
            read += mramItems * slotBytes;
            cycles += mramItems * PimCostModel.DmaReadCycles(slotBytes);
            long inLen = Round8(Round8(PimLayout.BatchHeaderBytes + (long)segs * PimLayout.SegmentBytes) + (padded + 1) * sizeof(uint));
            costs[d] = new DpuCost(cycles, PimCostModel.ComputeCycles(items, plan.SliceFloats),
                                   PimCostModel.ComputeCycles(items, plan.SliceFloats, PimPrecision.Int32), read, (long)segs * slotBytes,
                                   inLen, (long)segs * slotBytes, items);
            seg += segs;
            item += items;
        }
        return costs;
    }

    public static PimPlanReport Evaluate(PimPlan plan, AccessProfile profile)
    {
        if (profile.Rows != plan.Rows) throw new ArgumentException($"profile covers {profile.Rows} rows, the plan {plan.Rows}");
        if (profile.Batches.Count == 0) throw new ArgumentException("the access profile has no batches to route");
        var router = new PimRouter(plan);
        PimRoutedBatch? routed = null;
        double segImbalance = 0, segments = 0, bags = 0;
        double imbalance = 0, lookups = 0, cacheItems = 0, allItems = 0, pairs = 0, mramRead = 0, mramWritten = 0, toBytes = 0, fromBytes = 0;
        double dma = 0, compute = 0, computeInt = 0, kernel = 0, kernelInt = 0, toS = 0, fromS = 0;
        foreach (var batch in profile.Batches)
        {
            routed = router.Route(batch.Indices, batch.Offsets, routed);
            lookups += batch.Indices.Length;
            cacheItems += routed.CacheItems;
            allItems += routed.MramItems + routed.CacheItems;
            pairs += routed.PairItems;
            var costs = CostPerDpu(plan, routed);
            long maxIn = 0, maxOut = 0, maxItems = 0, sumItems = 0;
            double worstDma = 0, worstCompute = 0, worstComputeInt = 0, worstKernel = 0, worstKernelInt = 0;
            for (int d = 0; d < plan.DpuCount; d++)
            {
                var c = costs[d];
                worstDma = Math.Max(worstDma, c.DmaCycles);
                worstCompute = Math.Max(worstCompute, c.Fp32Cycles);
                worstComputeInt = Math.Max(worstComputeInt, c.Int32Cycles);
                worstKernel = Math.Max(worstKernel, Math.Max(c.DmaCycles, c.Fp32Cycles));
                worstKernelInt = Math.Max(worstKernelInt, Math.Max(c.DmaCycles, c.Int32Cycles));
                mramRead += c.MramRead;
                mramWritten += c.MramWritten;
                maxIn = Math.Max(maxIn, c.InBytes);
                maxOut = Math.Max(maxOut, c.OutBytes);
                if (d < plan.UsedDpus) { maxItems = Math.Max(maxItems, c.Items); sumItems += c.Items; }
            }
            double mean = (double)sumItems / plan.UsedDpus;
            imbalance += mean > 0 ? maxItems / mean : 1;
            segImbalance += SegmentImbalance(routed.SegmentsPerDpu, plan.UsedDpus);
            segments += routed.SegmentCount;
            bags += batch.Bags;
            toBytes += (double)maxIn * plan.DpuCount;
            fromBytes += (double)maxOut * plan.DpuCount;
            dma += worstDma / PimCostModel.DpuClockHz;
            compute += worstCompute / PimCostModel.DpuClockHz;
            computeInt += worstComputeInt / PimCostModel.DpuClockHz;
            kernel += worstKernel / PimCostModel.DpuClockHz;
            kernelInt += worstKernelInt / PimCostModel.DpuClockHz;
            toS += PimCostModel.TransferSeconds(maxIn, plan.DpuCount, toDpu: true);
            fromS += PimCostModel.TransferSeconds(maxOut, plan.DpuCount, toDpu: false);
        }
        double nb = profile.Batches.Count;
        var expected = plan.ExpectedDpuLookups().Take(plan.UsedDpus).ToArray();
        var mramPerDpu = Enumerable.Range(0, plan.DpuCount).Select(plan.MramBytesOn).ToArray();
        return new PimPlanReport
        {
            Strategy = plan.Strategy, Dpus = plan.DpuCount, Tiles = plan.Tiles, SliceFloats = plan.SliceFloats,
            MramBytesPerDpuMax = mramPerDpu.Max(), MramBytesPerDpuMean = mramPerDpu.Average(),
            CachedRows = plan.CachedRows.Length, PairSums = plan.Pairs.Length,
            ExpectedLookupsMax = expected.Max(), ExpectedLookupsMean = expected.Average(),
            BatchImbalance = imbalance / nb, LookupsPerBatch = lookups / nb,
            PartialSumImbalance = segImbalance / nb, PartialSumsPerBatch = segments / nb, BagsPerBatch = bags / nb,
            CacheHitRate = allItems > 0 ? cacheItems / allItems : 0, PairItemsPerBatch = pairs / nb,
            MramBytesReadPerBatch = mramRead / nb, MramBytesWrittenPerBatch = mramWritten / nb,
            HostToDpuBytesPerBatch = toBytes / nb, DpuToHostBytesPerBatch = fromBytes / nb,
            ModelDmaSeconds = dma / nb, ModelComputeSeconds = compute / nb, ModelKernelSeconds = kernel / nb,
            ModelComputeInt32Seconds = computeInt / nb, ModelKernelInt32Seconds = kernelInt / nb,
            ModelToDpuSeconds = toS / nb, ModelFromDpuSeconds = fromS / nb,
        };
    }

    static long Round8(long n) => (n + 7) & ~7L;

    /// <summary>max / mean of partial sums over the first <paramref name="dpus"/> DPUs (1 when there are none).</summary>
    internal static double SegmentImbalance(ReadOnlySpan<uint> segmentsPerDpu, int dpus)
    {
        long sum = 0, max = 0;
        for (int d = 0; d < dpus; d++) { sum += segmentsPerDpu[d]; max = Math.Max(max, segmentsPerDpu[d]); }
        return sum > 0 ? max / ((double)sum / dpus) : 1;
    }

    /// <summary>What MODEL means and the constants behind it.</summary>
    public static string Legend() => string.Format(CultureInfo.InvariantCulture,
        "MODEL = cost model estimate for real UPMEM hardware, not a measurement: DMA {0}+{1}*bytes cycles, {2} MHz, " +
        "{3}/{4} GB/s per 64-DPU rank to/from capped at {5}/{6} GB/s per server (ASSUMPTION), {7} us per launch and {8} us per " +
        "transfer call (ASSUMPTION), {9} tasklets (>= {10} fill the pipeline), per element fp32 add {11} cycles (ASSUMPTION), " +
        "int32 add {12}.",
        PimCostModel.MramReadAlphaCycles, PimCostModel.MramBetaCyclesPerByte, PimCostModel.DpuClockHz / 1e6,
        PimCostModel.HostToDpuBytesPerSecondPerRank / 1e9, PimCostModel.DpuToHostBytesPerSecondPerRank / 1e9,
        PimCostModel.SystemHostToDpuBytesPerSecond / 1e9, PimCostModel.SystemDpuToHostBytesPerSecond / 1e9,
        PimCostModel.LaunchFixedSeconds * 1e6, PimCostModel.TransferCallFixedSeconds * 1e6,
        PimCostModel.KernelTasklets, PimCostModel.TaskletsToFillPipeline, PimCostModel.Fp32AccumulateCycles, PimCostModel.Int32AccumulateCycles);

    /// <summary>A side-by-side text table of several reports (the <c>pim-plan</c> output).</summary>
    public static string Format(IReadOnlyList<PimPlanReport> reports)
    {
        var ci = CultureInfo.InvariantCulture;
        var rows = new List<(string Name, Func<PimPlanReport, string> Value)>
        {
            ("DPUs x tiles (slice floats)", r => $"{r.Dpus} x {r.Tiles} ({r.SliceFloats})"),
            ("MRAM bytes per DPU max", r => Mib(r.MramBytesPerDpuMax)),
            ("MRAM bytes per DPU mean", r => Mib(r.MramBytesPerDpuMean)),
            ("WRAM-cached rows / pair sums", r => $"{r.CachedRows} / {r.PairSums}"),
            ("expected lookups/DPU max/mean", r => string.Format(ci, "{0:F3}", r.ExpectedImbalance)),
            ("  (from the plan's own profile)", r => ""),
            ("per-batch items/DPU max/mean", r => string.Format(ci, "{0:F3}", r.BatchImbalance)),
            ("partial sums/DPU max/mean", r => string.Format(ci, "{0:F3}", r.PartialSumImbalance)),
            ("partial sums per bag", r => string.Format(ci, "{0:F2}", r.PartialSumsPerBag)),
            ("cache hit rate", r => string.Format(ci, "{0:P1}", r.CacheHitRate)),
            ("pair-sum items / batch", r => string.Format(ci, "{0:F1}", r.PairItemsPerBatch)),
            ("MRAM bytes read / batch", r => Kib(r.MramBytesReadPerBatch)),
            ("host->DPU bytes / batch", r => Kib(r.HostToDpuBytesPerBatch)),
            ("DPU->host bytes / batch", r => Kib(r.DpuToHostBytesPerBatch)),
            ("MODEL DMA us / batch", r => Us(r.ModelDmaSeconds)),
            ("MODEL compute us / batch", r => Us(r.ModelComputeSeconds)),
            ("MODEL compute us / batch int32", r => Us(r.ModelComputeInt32Seconds)),
            ("MODEL host->DPU us / batch", r => Us(r.ModelToDpuSeconds)),
            ("MODEL DPU->host us / batch", r => Us(r.ModelFromDpuSeconds)),
            ("MODEL total us / batch", r => Us(r.ModelBatchSeconds)),
            ("MODEL total us / batch int32", r => Us(r.ModelBatchInt32Seconds)),
        };
        var sb = new StringBuilder();
        sb.Append(string.Format(ci, "{0,-30}", "")).AppendJoin("", reports.Select(r => string.Format(ci, "{0,20}", r.Strategy))).AppendLine();
        foreach (var (name, value) in rows)
            sb.Append(string.Format(ci, "{0,-30}", name)).AppendJoin("", reports.Select(r => string.Format(ci, "{0,20}", value(r)))).AppendLine();
        sb.AppendLine(Legend());
        return sb.ToString();

        string Mib(double b) => string.Format(ci, "{0:F2} MiB", b / (1 << 20));
        string Kib(double b) => string.Format(ci, "{0:F1} KiB", b / 1024);
        string Us(double s) => string.Format(ci, "{0:F1}", s * 1e6);
    }
}
