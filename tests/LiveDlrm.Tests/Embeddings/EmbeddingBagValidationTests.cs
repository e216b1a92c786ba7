using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Every bad input is rejected with the documented exception, a message naming the table, position and
/// value, and an output left exactly as it was (including guard values past its end).</summary>
[TestFixture]
internal class EmbeddingBagValidationTests
{
    public enum BadInput
    {
        NegativeIndex, IndexEqualsRows, IndexFarPastRows, OffsetsDecreasing, OffsetPastEnd, LastOffsetShort, FirstOffsetNotZero,
        OffsetsEmpty, WeightsTooShort, WeightsTooLong, WeightsWithoutWeightedPooling, OutputTooSmall,
    }

    const int Dim = 8, Rows = 10;
    const float Sentinel = -12345.5f;

    sealed record Case(long[] Indices, long[] Offsets, float[] Weights, PoolingMode Pooling, int OutputLength, Type Exception, string[] MessageParts);

    static Case Build(BadInput bad)
    {
        long[] indices = [1, 2, 3, 4, 5, 6];
        long[] offsets = [0, 2, 2, 6];
        float[] weights = [];
        var pooling = PoolingMode.Sum;
        int output = 3 * Dim;
        Type ex = typeof(ArgumentException);
        string[] parts;
        switch (bad)
        {
            case BadInput.NegativeIndex: indices[3] = -1; ex = typeof(ArgumentOutOfRangeException); parts = ["indices[3]", "-1"]; break;
            case BadInput.IndexEqualsRows: indices[5] = Rows; ex = typeof(ArgumentOutOfRangeException); parts = ["indices[5]", "10"]; break;
            case BadInput.IndexFarPastRows: indices[0] = int.MaxValue; ex = typeof(ArgumentOutOfRangeException); parts = ["indices[0]", int.MaxValue.ToString()]; break;
            case BadInput.OffsetsDecreasing: offsets = [0, 3, 2, 6]; parts = ["offsets[2]", "2"]; break;
            case BadInput.OffsetPastEnd: offsets = [0, 2, 9, 6]; ex = typeof(ArgumentOutOfRangeException); parts = ["offsets[2]", "9"]; break;
            case BadInput.LastOffsetShort: offsets = [0, 2, 2, 5]; parts = ["offsets[3]", "5"]; break;
            case BadInput.FirstOffsetNotZero: offsets = [1, 2, 2, 6]; parts = ["offsets[0]", "1"]; break;
            case BadInput.OffsetsEmpty: offsets = []; output = 0; parts = ["offsets"]; break;
            case BadInput.WeightsTooShort: pooling = PoolingMode.WeightedSum; weights = [1, 2, 3, 4, 5]; parts = ["5 weights", "6 indices"]; break;
            case BadInput.WeightsTooLong: pooling = PoolingMode.WeightedSum; weights = [1, 2, 3, 4, 5, 6, 7]; parts = ["7 weights", "6 indices"]; break;
            case BadInput.WeightsWithoutWeightedPooling: weights = [1, 2, 3, 4, 5, 6]; parts = ["6 per-sample weights", "Sum"]; break;
            case BadInput.OutputTooSmall: output = 3 * Dim - 1; parts = ["output holds 23", "need 24"]; break;
            default: throw new ArgumentOutOfRangeException(nameof(bad));
        }
        return new Case(indices, offsets, weights, pooling, output, ex, parts);
    }

    static IEnumerable<TestCaseData> Cases()
    {
        foreach (var bad in Enum.GetValues<BadInput>())
            foreach (bool intIndices in new[] { false, true })
                foreach (bool threaded in new[] { false, true })
                    yield return new TestCaseData(bad, intIndices, threaded).SetName($"{bad}_{(intIndices ? "int" : "long")}_{(threaded ? "pool" : "caller")}");
    }

    [TestCaseSource(nameof(Cases))]
    public void RejectedBeforeAnyOutputIsWritten(BadInput bad, bool intIndices, bool threaded)
    {
        var c = Build(bad);
        using var table = EmbeddingTestData.RandomTable("bad-input-table", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        using var pool = new EmbeddingWorkerPool(threaded ? 1 : 0);
        // The output is a window of a larger buffer: the guard values after it catch any write past its end.
        var buffer = new float[c.OutputLength + 16];
        buffer.AsSpan().Fill(Sentinel);
        var output = buffer.AsSpan(0, c.OutputLength);
        Exception? thrown = null;
        try
        {
            if (intIndices)
                EmbeddingBag.Forward(table, EmbeddingTestData.ToInt(c.Indices), EmbeddingTestData.ToInt(c.Offsets), output, c.Pooling, c.Weights, pool);
            else
                EmbeddingBag.Forward(table, c.Indices, c.Offsets, output, c.Pooling, c.Weights, pool);
        }
        catch (Exception e) { thrown = e; }
        Assert.That(thrown, Is.Not.Null, $"{bad} was accepted");
        Assert.That(thrown, Is.TypeOf(c.Exception));
        Assert.That(thrown!.Message, Does.Contain("bad-input-table"));
        foreach (var part in c.MessageParts) Assert.That(thrown.Message, Does.Contain(part));
        Assert.That(buffer, Is.All.EqualTo(Sentinel), "output or guard values were written");
    }

    /// <summary>The same batch made valid is accepted (so the cases above fail for the stated reason only).</summary>
    [Test]
    public void TheUncorruptedBatchIsAccepted()
    {
        using var table = EmbeddingTestData.RandomTable("ok", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        var output = new float[3 * Dim];
        EmbeddingBag.Forward(table, [1, 2, 3, 4, 5, 6], [0, 2, 2, 6], output);
        EmbeddingBag.Forward(table, [1, 2, 3, 4, 5, 6], [0, 2, 2, 6], output, PoolingMode.WeightedSum, [1, 2, 3, 4, 5, 6]);
        Assert.That(output.AsSpan(Dim, Dim).ToArray(), Is.All.EqualTo(0f), "empty bag");
    }

    [Test]
    public void BackendRejectsTheSameWay()
    {
        var c = Build(BadInput.IndexEqualsRows);
        using var table = EmbeddingTestData.RandomTable("backend-table", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        using var backend = new CpuEmbeddingBackend();
        var output = new float[c.OutputLength];
        output.AsSpan().Fill(Sentinel);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.Forward(table, c.Indices, c.Offsets, output));
        Assert.That(output, Is.All.EqualTo(Sentinel));
    }

    [Test]
    public void DisposedTableIsRejected()
    {
        var table = EmbeddingTestData.RandomTable("gone", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        table.Dispose();
        var output = new float[Dim];
        output.AsSpan().Fill(Sentinel);
        Assert.Throws<ObjectDisposedException>(() => EmbeddingBag.Forward(table, [1L], [0L, 1L], output));
        Assert.Throws<ObjectDisposedException>(() => EmbeddingBag.Forward(table, [1], [0, 1], output));
        Assert.That(output, Is.All.EqualTo(Sentinel));
    }

    [Test]
    public void NullTableIsRejected()
    {
        var output = new float[Dim];
        Assert.Throws<ArgumentNullException>(() => EmbeddingBag.Forward(null!, [1L], [0L, 1L], output));
    }

    [TestCase(0, 8)]
    [TestCase(-1, 8)]
    [TestCase(10, 0)]
    [TestCase(10, -3)]
    public void EmptyShapesAreRejectedAtConstruction(long rows, int dim)
    {
        foreach (var storage in Enum.GetValues<EmbeddingStorage>())
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingTable.Create("empty", rows, dim, storage));
            Assert.That(e!.Message, Does.Contain("empty"));
        }
    }

    [Test]
    public void EmptySpansAreRejectedByFromFp32()
    {
        Assert.Throws<ArgumentException>(() => EmbeddingTable.FromFp32("none", ReadOnlySpan<float>.Empty, 4, EmbeddingStorage.Fp32));
        Assert.Throws<ArgumentException>(() => EmbeddingTable.FromFp32("ragged", new float[7], 4, EmbeddingStorage.Fp32));
        Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingTable.FromFp32("dim0", new float[8], 0, EmbeddingStorage.Fp32));
    }

    [Test]
    public void ZeroBagsIsANoOp()
    {
        using var table = EmbeddingTestData.RandomTable("t", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        var output = new float[4];
        output.AsSpan().Fill(Sentinel);
        EmbeddingBag.Forward(table, ReadOnlySpan<long>.Empty, [0L], output);
        Assert.That(output, Is.All.EqualTo(Sentinel));
    }
}
