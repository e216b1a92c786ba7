using LiveDlrm.Embeddings;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>Bag-local copies: every bag served whole by one copy of the table, bags spread over the copies. Results
/// equal the CPU kernel; partial sums and the pull shrink against one placement over all DPUs.</summary>
internal class PimBagLocalTests
{
    const int Dpus = 16;

    static AccessProfile Zipf(long rows, int seed, int bags = 48, int pooling = 20) => AccessProfile.Zipf(rows, 1.05, batches: 2, bagsPerBatch: bags, pooling, seed);

    [Test]
    public void PlanWithCopiesMirrorsOnePlacementOverReplicaGroups()
    {
        var profile = Zipf(3000, 1);
        var plan = PimPartitioner.CacheAware(profile, 200, Dpus, new PimPlanOptions { Copies = 4, CacheBytes = 0 });   // 2 tiles
        plan.Validate();
        Assert.That((plan.Copies, plan.Tiles, plan.GroupSize, plan.UsedDpus), Is.EqualTo((4, 2, 2, 16)));
        for (int d = 0; d < Dpus; d++)
        {
            Assert.That(plan.DpuOf(plan.MemberOf(d), plan.TileOf(d), plan.CopyOf(d)), Is.EqualTo(d));
            Assert.That(plan.SlotsOn(d), Is.EqualTo(plan.MemberSlots[d / 2 % 2].Count), "every copy holds the same slots");
        }
        Assert.Throws<ArgumentException>(() => PimPartitioner.CacheAware(profile, 200, Dpus, new PimPlanOptions { Copies = 9 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => PimPartitioner.NonUniform(profile, 16, Dpus, new PimPlanOptions { Copies = 0 }));
    }

    [Test]
    public void BagLocalCopiesSplitOnlyTheTablesThatDoNotFit()
    {
        // 51.2 + 12.8 + 3.2 MB: all three whole on one DPU exceed 3/4 of the 56 MiB, the largest is halved.
        var copies = PimPartitioner.BagLocalCopies([(200_000, 64), (100_000, 32), (50_000, 16)], 2560);
        Assert.That(copies.Select(c => c.Copies), Is.EqualTo(new[] { 1280, 2560, 2560 }));
        Assert.That(copies.Sum(c => c.MramShareBytes), Is.LessThanOrEqualTo(PimLayout.MramTableBytes * 3L / 4));
        Assert.That(copies[0].MramShareBytes, Is.GreaterThanOrEqualTo(100_000L * 64 * 4));
        Assert.Throws<ArgumentException>(() => PimPartitioner.BagLocalCopies([(2_000_000, 128)], 4));
    }

    [Test]
    public void CopiesServeTheSameSumsWithFewerPartialsAndASmallerPull()
    {
        PimTestSupport.RequireLibrary();
        using var a = PimTestSupport.RandomTable("a", 4000, 32, seed: 1);
        using var b = PimTestSupport.RandomTable("b", 600, 200, seed: 2);   // two column tiles
        var profileA = Zipf(a.Rows, 1);
        var profileB = Zipf(b.Rows, 2);
        var batchA = Zipf(a.Rows, 11).Batches[0];
        var batchB = Zipf(b.Rows, 12).Batches[0];
        var single = PimPartitioner.CacheAware(profileA, a.Dim, Dpus, new PimPlanOptions { CacheBytes = 2048 });
        var copied = PimPartitioner.CacheAware(profileA, a.Dim, Dpus, new PimPlanOptions { CacheBytes = 2048, Copies = 8 });

        // The balance metric and partials per bag, from routing the profile's batches as the backend does.
        var reportSingle = PimPlanReport.Evaluate(single, profileA);
        var reportCopied = PimPlanReport.Evaluate(copied, profileA);
        Assert.That(reportCopied.PartialSumsPerBag, Is.LessThan(reportSingle.PartialSumsPerBag / 2),
                    $"partial sums per bag: copies {reportCopied.PartialSumsPerBag:F2} vs one placement {reportSingle.PartialSumsPerBag:F2}");
        Assert.That(reportCopied.PartialSumsPerBag, Is.LessThanOrEqualTo(2.0), "a copy has two members: at most two partials per bag");
        Assert.That(reportCopied.PartialSumImbalance, Is.LessThan(1.5), "bags spread over the copies: partial sums per DPU near the mean");

        var expectedA = new float[batchA.Bags * a.Dim];
        EmbeddingBagReference.Forward(a, batchA.Indices, batchA.Offsets, expectedA, PoolingMode.Sum);
        long PullOf(PimPlan plan)
        {
            using var device = PimDevice.Open(Dpus, PimTestSupport.Backend);
            device.Load(0, a, plan);
            // The pull the shim must make: every DPU at the length of the DPU with the most partial sums.
            var routed = new PimRouter(plan).Route(batchA.Indices, batchA.Offsets);
            long expectedPull = routed.SegmentsPerDpu.Max() * (long)plan.SlotBytes * Dpus;
            long before = device.Stats().BytesFromDpu;
            var actual = new float[expectedA.Length];
            device.LookupSum(0, batchA.Indices, batchA.Offsets, actual);
            PimTestSupport.AssertSumsMatch(a, batchA.Indices, batchA.Offsets, actual, expectedA, $"{plan.Copies} copies");
            long pulled = device.Stats().BytesFromDpu - before;
            Assert.That(pulled, Is.EqualTo(expectedPull), "the pull is sized by the DPU with the most partial sums");
            return pulled;
        }
        long pullSingle = PullOf(single), pullCopied = PullOf(copied);
        Assert.That(pullCopied, Is.LessThan(pullSingle / 2), $"pull: copies {pullCopied} B vs one placement {pullSingle} B");

        // Two tables with copies in one launch through the backend (shared load across the set), and a row update
        // reaching every copy.
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, DpusPerTable = Dpus });
        backend.Load(a, copied);
        backend.Load(b, PimPartitioner.NonUniform(profileB, b.Dim, Dpus, new PimPlanOptions { Copies = 4 }));
        var output = new float[batchA.Bags * a.Dim + batchB.Bags * b.Dim];
        var lookups = new List<TableLookup>
        {
            new(a, batchA.Indices, batchA.Offsets, 0),
            new(b, batchB.Indices, batchB.Offsets, batchA.Bags * a.Dim),
        };
        long launches = backend.Stats(a).Launches;
        backend.ForwardTables(lookups, output);
        Assert.That(backend.Stats(a).Launches - launches, Is.EqualTo(1));
        PimTestSupport.AssertSumsMatch(a, batchA.Indices, batchA.Offsets, output[..expectedA.Length], expectedA, "a in one launch");
        var expectedB = new float[batchB.Bags * b.Dim];
        EmbeddingBagReference.Forward(b, batchB.Indices, batchB.Offsets, expectedB, PoolingMode.Sum);
        PimTestSupport.AssertSumsMatch(b, batchB.Indices, batchB.Offsets, output[expectedA.Length..], expectedB, "b in one launch");

        // Change the hottest rows of b, push them, and serve every bag again: whichever copy a bag lands on, it sees them.
        var hot = profileB.Counts.Select((c, r) => (c, r)).OrderByDescending(x => x.c).Take(20).Select(x => (long)x.r).ToArray();
        var row = new float[b.Dim];
        foreach (long r in hot)
        {
            b.ReadRow(r, row);
            for (int d = 0; d < row.Length; d++) row[d] += 0.5f;
            b.WriteRow(r, row);
        }
        backend.UpdateRows(b, hot);
        for (int round = 0; round < 3; round++)
        {
            backend.ForwardTables(lookups, output);
            EmbeddingBagReference.Forward(b, batchB.Indices, batchB.Offsets, expectedB, PoolingMode.Sum);
            PimTestSupport.AssertSumsMatch(b, batchB.Indices, batchB.Offsets, output[expectedA.Length..], expectedB, $"b after the update, round {round}");
        }
    }
}
