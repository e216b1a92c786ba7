using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>Partition invariants and the UpDLRM claims the plans must meet on Zipf(1.05) with 64 DPUs.</summary>
internal class PimPartitionTests
{
    static AccessProfile? _zipf;
    /// <summary>Zipf(1.05) ids over 50,000 rows: 16 batches of 256 bags × 20 lookups (81,920 lookups).</summary>
    static AccessProfile Zipf => _zipf ??= AccessProfile.Zipf(50_000, 1.05, batches: 16, bagsPerBatch: 256, pooling: 20, seed: 1);

    [Test]
    public void EveryStrategyPlacesEveryRowWithinCapacity([Values] PimStrategy strategy, [Values(16, 64, 200)] int dim)
    {
        var plan = PimPartitioner.Build(strategy, Zipf, dim, 64);
        plan.Validate();
        long capacity = PimLayout.MramTableBytes / plan.SlotBytes;
        for (int d = 0; d < 64; d++) Assert.That(plan.SlotsOn(d), Is.LessThanOrEqualTo(capacity));
        long placed = Enumerable.Range(0, (int)plan.Rows).Count(r => plan.ReplicaCount(r) > 0 || plan.CacheOrdinal[r] >= 0);
        Assert.That(placed, Is.EqualTo(plan.Rows));
        Assert.That((long)plan.Tiles * plan.SliceFloats, Is.GreaterThanOrEqualTo(dim));
    }

    [Test]
    public void ATightCapacityIsRespectedAndTooTightIsRefused([Values(PimStrategy.NonUniform, PimStrategy.CacheAware)] PimStrategy strategy)
    {
        // 50,000 rows of 64 B over 64 DPUs need 782 slots each; give 800 (replication has to stay within it).
        var tight = new PimPlanOptions { MramCapacityBytes = 800 * 64 };
        var plan = PimPartitioner.Build(strategy, Zipf, 16, 64, tight);
        plan.Validate();
        Assert.That(Enumerable.Range(0, 64).Max(plan.SlotsOn), Is.LessThanOrEqualTo(800));
        var tooTight = new PimPlanOptions { MramCapacityBytes = 700 * 64 };
        var e = Assert.Throws<ArgumentException>(() => PimPartitioner.Build(strategy, Zipf, 16, 64, tooTight));
        Assert.That(e!.Message, Does.Contain("use more DPUs"));
    }

    [Test]
    public void ValidateCatchesABrokenPlan()
    {
        var plan = PimPartitioner.NonUniform(Zipf, 16, 64);
        long row = Enumerable.Range(0, (int)plan.Rows).First(r => plan.ReplicaCount(r) == 1);
        int member = plan.ReplicaMember[plan.ReplicaStart[row]];
        int slot = plan.ReplicaSlot[plan.ReplicaStart[row]];
        plan.MemberSlots[member][slot] = (row + 1, -1);
        var e = Assert.Throws<InvalidOperationException>(plan.Validate);
        Assert.That(e!.Message, Does.Contain($"row {row}"));
    }

    [Test]
    public void NonUniformBalancesExpectedLookupsOnZipfWith64Dpus()
    {
        var uniform = PimPartitioner.UniformRowWise(Zipf.Rows, 16, 64, Zipf);
        var plan = PimPartitioner.NonUniform(Zipf, 16, 64);
        TestContext.Out.WriteLine($"expected imbalance: uniform {uniform.ExpectedImbalance:F3}, non-uniform {plan.ExpectedImbalance:F3}");
        Assert.That(plan.ExpectedImbalance, Is.LessThanOrEqualTo(1.05));
        Assert.That(uniform.ExpectedImbalance, Is.GreaterThan(1.5), "the hottest row alone overloads one DPU of a uniform plan");
        Assert.That(PimPartitioner.CacheAware(Zipf, 16, 64).ExpectedImbalance, Is.LessThanOrEqualTo(1.05));
    }

    [Test]
    public void CacheAwareReadsAtLeast30PercentLessMramThanNonUniform([Values(16, 64)] int dim)
    {
        var nonUniform = PimPlanReport.Evaluate(PimPartitioner.NonUniform(Zipf, dim, 64), Zipf);
        var cacheAware = PimPlanReport.Evaluate(PimPartitioner.CacheAware(Zipf, dim, 64), Zipf);
        double reduction = 1 - cacheAware.MramBytesReadPerBatch / nonUniform.MramBytesReadPerBatch;
        TestContext.Out.WriteLine($"dim {dim}: MRAM bytes read/batch non-uniform {nonUniform.MramBytesReadPerBatch:F0}, cache-aware {cacheAware.MramBytesReadPerBatch:F0} ({reduction:P1} less), cache hit rate {cacheAware.CacheHitRate:P1}");
        Assert.That(reduction, Is.GreaterThanOrEqualTo(0.30));
        Assert.That(cacheAware.CacheHitRate, Is.GreaterThan(0.3));
    }

    [Test]
    public void ReportCountsTrafficAsTheShimTransfersIt()
    {
        // One bag of 3 rows on a 2-DPU uniform plan: DPU 0 gets rows 0 and 1, DPU 1 row 3.
        var profile = new AccessProfile(4, [new PimBatch([0, 1, 3], [0, 3])], "tiny");
        var report = PimPlanReport.Evaluate(PimPartitioner.UniformRowWise(4, 8, 2, profile), profile);
        // In: header 16 + 1 segment 16 = 32, items padded to even (2) + 1 spare = 3 x 4 = 12 → 44 → 48 B per DPU, x 2 DPUs.
        Assert.That(report.HostToDpuBytesPerBatch, Is.EqualTo(96));
        // Out: one partial of 8 floats per DPU, x 2.
        Assert.That(report.DpuToHostBytesPerBatch, Is.EqualTo(64));
        // MRAM reads: DPU 0 16 + 16 + 8 (2 items) + 2 x 32; DPU 1 16 + 16 + 8 (1 item, padded) + 32.
        Assert.That(report.MramBytesReadPerBatch, Is.EqualTo(104 + 72));
        Assert.That(report.ModelBatchSeconds, Is.GreaterThan(0));
    }
}
