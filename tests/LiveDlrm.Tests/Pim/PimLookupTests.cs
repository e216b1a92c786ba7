using LiveDlrm.Embeddings;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>Lookups through the shim on the emulated DPUs equal the scalar reference for every strategy.</summary>
internal class PimLookupTests
{
    const int Dpus = 64;

    public enum Workload { Uniform, Zipf }

    static AccessProfile Profile(Workload w, long rows, int seed) => w == Workload.Uniform
        ? AccessProfile.Uniform(rows, batches: 4, bagsPerBatch: 64, pooling: 12, seed)
        : AccessProfile.Zipf(rows, 1.05, batches: 4, bagsPerBatch: 64, pooling: 12, seed);

    [Test]
    public void EveryStrategyMatchesTheReference([Values] PimStrategy strategy, [Values] Workload workload)
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("t", rows: 3000, dim: 16);
        var profile = Profile(workload, table.Rows, seed: 3);
        var plan = PimPartitioner.Build(strategy, profile, table.Dim, Dpus);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        // A batch the plan was not built from (same distribution, other seed) and one it was.
        foreach (var batch in new[] { Profile(workload, table.Rows, seed: 11).Batches[0], profile.Batches[1] })
        {
            var actual = new float[batch.Bags * table.Dim];
            var expected = new float[actual.Length];
            backend.Forward(table, batch.Indices, batch.Offsets, actual);
            EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
            PimTestSupport.AssertSumsMatch(table, batch.Indices, batch.Offsets, actual, expected, $"{strategy}/{workload}");
        }
        var stats = backend.Stats(table);
        Assert.That(stats.Backend, Is.EqualTo(PimTestSupport.Backend));
        Assert.That(stats.Batches, Is.EqualTo(2));
        Assert.That(stats.Items, Is.GreaterThanOrEqualTo(2L * 64 * 12 * plan.Tiles / 2), "pairs may merge two lookups, never more");
        Assert.That(backend.Name, Is.EqualTo("pim-" + PimTestSupport.Backend.ToString().ToLowerInvariant()));
        if (strategy == PimStrategy.CacheAware) Assert.That(stats.CacheItems, Is.GreaterThan(0));
    }

    /// <summary>Weighted sums: weights travel with their items (cache items included); pair sums are not used.</summary>
    [Test]
    public void WeightedSumsMatchTheReferenceForEveryStrategy([Values] PimStrategy strategy)
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("weighted", rows: 3000, dim: 20);
        var profile = Profile(Workload.Zipf, table.Rows, seed: 3);
        var plan = strategy == PimStrategy.CacheAware
            ? PimPartitioner.CacheAware(profile, table.Dim, Dpus, new PimPlanOptions { CacheBytes = 64 * 20 * 4, MinPairCount = 1 })
            : PimPartitioner.Build(strategy, profile, table.Dim, Dpus);
        if (strategy == PimStrategy.CacheAware) Assert.That(plan.Pairs, Is.Not.Empty, "the plan must have pair sums the weighted route has to avoid");
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        var batch = profile.Batches[1];
        var rng = new Random(4);
        var weights = batch.Indices.Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var actual = new float[batch.Bags * table.Dim];
        var expected = new float[actual.Length];
        backend.Forward(table, batch.Indices, batch.Offsets, actual, PoolingMode.WeightedSum, weights);
        EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected, PoolingMode.WeightedSum, weights);
        PimTestSupport.AssertSumsMatch(table, batch.Indices, batch.Offsets, actual, expected, $"{strategy}/weighted", weights);
        var stats = backend.Stats(table);
        Assert.That(stats.Items, Is.EqualTo((long)batch.Indices.Length * plan.Tiles), "one item per lookup and tile: no pair sums");
        // The same batch unweighted still uses pairs and still matches.
        backend.Forward(table, batch.Indices, batch.Offsets, actual);
        EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
        PimTestSupport.AssertSumsMatch(table, batch.Indices, batch.Offsets, actual, expected, $"{strategy}/plain");
        if (strategy == PimStrategy.CacheAware)
            Assert.That(backend.Stats(table).Items - stats.Items, Is.LessThan(stats.Items), "the plain route merges pairs into one item");
    }

    /// <summary>Long weighted segments: a weighted batch reads items and weights in chunks of 32 (half the plain
    /// chunk), so bags of 71 and 64 rows on one DPU cross chunk boundaries and end on an odd count.</summary>
    [Test]
    public void LongWeightedSegmentsCrossChunkBoundaries()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("long", rows: 640, dim: 24);
        var plan = PimPartitioner.UniformRowWise(table.Rows, table.Dim, 8);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        var rng = new Random(6);
        int[] lengths = [71, 64, 33, 1];
        var offsets = new long[lengths.Length + 1];
        var indices = new List<long>();
        for (int b = 0; b < lengths.Length; b++)
        {
            for (int i = 0; i < lengths[b]; i++) indices.Add(b * 80 + rng.Next(80));   // all on DPU b
            offsets[b + 1] = indices.Count;
        }
        var weights = indices.Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var actual = new float[lengths.Length * 24];
        var expected = new float[actual.Length];
        backend.Forward(table, indices.ToArray(), offsets, actual, PoolingMode.WeightedSum, weights);
        EmbeddingBagReference.Forward(table, indices.ToArray(), offsets, expected, PoolingMode.WeightedSum, weights);
        PimTestSupport.AssertSumsMatch(table, indices.ToArray(), offsets, actual, expected, "long weighted segments", weights);
    }

    [Test]
    public void SameSummationOrderIsBitExact()
    {
        // Uniform row-wise with every bag inside one DPU's row range: the DPU adds the rows in bag order from
        // zero and the host adds that single partial to zero, exactly the reference's order.
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("exact", rows: 640, dim: 24);
        var plan = PimPartitioner.UniformRowWise(table.Rows, table.Dim, 8);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        var rng = new Random(5);
        var indices = new long[8 * 10];
        var offsets = new long[9];
        for (int b = 0; b < 8; b++)
        {
            offsets[b + 1] = (b + 1) * 10;
            for (int i = 0; i < 10; i++) indices[b * 10 + i] = b * 80 + rng.Next(80);   // DPU b holds rows [80b, 80b + 80)
        }
        var actual = new float[8 * 24];
        var expected = new float[8 * 24];
        backend.Forward(table, indices, offsets, actual);
        EmbeddingBagReference.Forward(table, indices, offsets, expected);
        Assert.That(actual, Is.EqualTo(expected));
    }

    [Test]
    public void WideRowsSplitIntoColumnTilesAndMeanPoolingAndEmptyBagsWork()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("wide", rows: 500, dim: 136);   // 2 tiles of 68 floats
        var profile = AccessProfile.Zipf(table.Rows, 1.05, 2, 32, 8, seed: 2);
        var plan = PimPartitioner.CacheAware(profile, table.Dim, 9);
        Assert.That((plan.Tiles, plan.SliceFloats, plan.UsedDpus), Is.EqualTo((2, 68, 8)));
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        long[] indices = [1, 2, 3, 499, 7, 7, 7];
        long[] offsets = [0, 4, 4, 7];   // bag 1 is empty
        var actual = new float[3 * 136];
        var expected = new float[3 * 136];
        backend.Forward(table, indices, offsets, actual, PoolingMode.Mean);
        EmbeddingBagReference.Forward(table, indices, offsets, expected, PoolingMode.Mean);
        PimTestSupport.AssertSumsMatch(table, indices, offsets, actual, expected, "mean, 2 tiles");
        Assert.That(actual.AsSpan(136, 136).ToArray(), Is.All.EqualTo(0f));
    }

    [Test]
    public void UpdatedRowsAreServedFromEveryReplicaCacheCopyAndPairSum()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("upd", rows: 2000, dim: 16);
        var profile = AccessProfile.Zipf(table.Rows, 1.05, 8, 128, 12, seed: 4);
        var plan = PimPartitioner.CacheAware(profile, table.Dim, 16, new PimPlanOptions { CacheBytes = 64 * 16 * 4, MinPairCount = 1 });
        Assert.That(plan.Pairs.Length, Is.GreaterThan(0), "the test needs pair sums");
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend });
        backend.Load(table, plan);
        // Change a cached row, the most replicated uncached row and both rows of a pair.
        var pair = plan.Pairs[0];
        long replicated = Enumerable.Range(0, (int)table.Rows).Where(r => plan.CacheOrdinal[r] < 0).MaxBy(r => plan.ReplicaCount(r));
        long[] changed = [plan.CachedRows[0], replicated, pair.A, pair.B];
        Assert.That(plan.ReplicaCount(replicated), Is.GreaterThan(1));
        var values = new float[16];
        foreach (long r in changed)
        {
            for (int d = 0; d < 16; d++) values[d] = 100 + r + d;
            table.WriteRow(r, values);
        }
        backend.UpdateRows(table, changed);
        var batch = profile.Batches[0];
        long[] indices = [.. batch.Indices, pair.A, pair.B, replicated, replicated, replicated, replicated, plan.CachedRows[0]];
        long[] offsets = [.. batch.Offsets, batch.Offsets[^1] + 2, batch.Offsets[^1] + 6, batch.Offsets[^1] + 7];
        var actual = new float[(offsets.Length - 1) * 16];
        var expected = new float[actual.Length];
        backend.Forward(table, indices, offsets, actual);
        EmbeddingBagReference.Forward(table, indices, offsets, expected);
        PimTestSupport.AssertSumsMatch(table, indices, offsets, actual, expected, "after update");
    }
}
