using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary><see cref="IEmbeddingBackend.ForwardTables"/> as every backend without its own gets it: each table into its
/// range, the same values as one <see cref="IEmbeddingBackend.Forward"/> per table, all lookups validated first.</summary>
internal class ForwardTablesTests
{
    [Test]
    public void SeveralTablesEqualOneForwardPerTableAndBadInputWritesNothing()
    {
        using var a = EmbeddingTestData.RandomTable("a", 300, 8, EmbeddingStorage.Fp32, seed: 1);
        using var b = EmbeddingTestData.RandomTable("b", 50, 16, EmbeddingStorage.Fp32, seed: 2);
        var (ia, oa, _) = EmbeddingTestData.RandomBatch(a.Rows, 20, 6, seed: 3);
        var (ib, ob, wb) = EmbeddingTestData.RandomBatch(b.Rows, 20, 6, seed: 4);
        IEmbeddingBackend backend = new CpuEmbeddingBackend(new EmbeddingWorkerPool(0), ownsPool: true);
        using var _ = backend;
        // b first in the output, a after it, a gap of 5 floats before a: ranges are the lookups' own.
        int startA = 20 * 16 + 5;
        var output = new float[startA + 20 * 8];
        TableLookup[] lookups = [new(a, ia, oa, startA, PoolingMode.Mean), new(b, ib, ob, 0, PoolingMode.WeightedSum, wb)];
        backend.ForwardTables(lookups, output);

        var expectedA = new float[20 * 8];
        var expectedB = new float[20 * 16];
        backend.Forward(a, ia, oa, expectedA, PoolingMode.Mean);
        backend.Forward(b, ib, ob, expectedB, PoolingMode.WeightedSum, wb);
        Assert.That(output.AsSpan(startA).ToArray(), Is.EqualTo(expectedA));
        Assert.That(output.AsSpan(0, 20 * 16).ToArray(), Is.EqualTo(expectedB));
        Assert.That(output.AsSpan(20 * 16, 5).ToArray(), Is.All.EqualTo(0f), "the gap is not written");

        var bad = ib.ToArray();
        bad[0] = -1;
        var untouched = Enumerable.Repeat(3f, output.Length).ToArray();
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => backend.ForwardTables([lookups[0], lookups[1] with { Indices = bad }], untouched));
        Assert.That(error!.Message, Does.Contain("'b'"));
        Assert.That(untouched, Is.All.EqualTo(3f), "a bad second lookup leaves the first table's range unwritten too");
        Assert.Throws<ArgumentException>(() => backend.ForwardTables([lookups[0], lookups[1] with { OutputStart = startA - 8 }], output), "overlapping ranges");
        Assert.Throws<ArgumentException>(() => backend.ForwardTables(lookups, new float[output.Length - 1]), "output too short");
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.ForwardTables([lookups[0] with { OutputStart = -1 }], output));
    }
}
