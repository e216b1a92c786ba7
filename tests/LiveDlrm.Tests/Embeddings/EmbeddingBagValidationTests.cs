using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Every bad input is rejected with the documented exception and a message naming the table, position and
/// value. Bad offsets, weights or output length leave the output exactly as it was; an index outside the table, which
/// the kernels find in their loop, leaves the output's bags × dim floats zeroed; guard values past the output are
/// never written.</summary>
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
    public void RejectedWithNoPartialOutput(BadInput bad, bool intIndices, bool threaded)
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
        if (IsIndexFault(bad))
        {
            Assert.That(buffer.AsSpan(0, c.OutputLength).ToArray(), Is.All.EqualTo(0f), "partial sums were left in the output");
            Assert.That(buffer.AsSpan(c.OutputLength).ToArray(), Is.All.EqualTo(Sentinel), "guard values were written");
        }
        else Assert.That(buffer, Is.All.EqualTo(Sentinel), "output or guard values were written");
    }

    static bool IsIndexFault(BadInput bad) => bad is BadInput.NegativeIndex or BadInput.IndexEqualsRows or BadInput.IndexFarPastRows;

    /// <summary>A bad index in a batch large enough for the pool, late in the batch, after bags other threads have
    /// written: the same exception, and no partial sums left anywhere in the output.</summary>
    [TestCase(false), TestCase(true)]
    public void BadIndexInAPooledBatchLeavesNoPartialSums(bool intIndices)
    {
        const int bags = 512, pooling = 16;
        using var table = EmbeddingTestData.RandomTable("bad-pooled", 1000, Dim, EmbeddingStorage.Fp32, seed: 5);
        using var pool = new EmbeddingWorkerPool(2);
        var random = new Random(9);
        var indices = Enumerable.Range(0, bags * pooling).Select(_ => (long)random.Next(1000)).ToArray();
        var offsets = Enumerable.Range(0, bags + 1).Select(b => (long)b * pooling).ToArray();
        int position = bags * pooling - 7;
        indices[position] = 1000;
        var buffer = new float[bags * Dim + 16];
        buffer.AsSpan().Fill(Sentinel);
        var output = buffer.AsSpan(0, bags * Dim);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            if (intIndices) EmbeddingBag.Forward(table, EmbeddingTestData.ToInt(indices), EmbeddingTestData.ToInt(offsets), buffer.AsSpan(0, bags * Dim), pool: pool);
            else EmbeddingBag.Forward(table, indices, offsets, buffer.AsSpan(0, bags * Dim), pool: pool);
        });
        Assert.That(e!.Message, Does.Contain($"indices[{position}] = 1000"));
        Assert.That(buffer.AsSpan(0, bags * Dim).ToArray(), Is.All.EqualTo(0f));
        Assert.That(buffer.AsSpan(bags * Dim).ToArray(), Is.All.EqualTo(Sentinel));
    }

    /// <summary>The multi-table lookup validates every table's indices before writing, so a bad index leaves even the
    /// ranges of the other tables untouched (ForwardTablesTests), and the full <c>EmbeddingBagValidation.Validate</c>
    /// names the same index as the kernels' check does.</summary>
    [TestCase(BadInput.NegativeIndex), TestCase(BadInput.IndexEqualsRows), TestCase(BadInput.IndexFarPastRows)]
    public void FullValidationNamesTheSameIndex(BadInput bad)
    {
        var c = Build(bad);
        using var table = EmbeddingTestData.RandomTable("full-validation", Rows, Dim, EmbeddingStorage.Fp32, seed: 3);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingBagValidation.Validate(table, (ReadOnlySpan<long>)c.Indices, (ReadOnlySpan<long>)c.Offsets, c.OutputLength, c.Pooling, c.Weights));
        foreach (var part in c.MessageParts) Assert.That(e!.Message, Does.Contain(part));
    }

    /// <summary>The vectorised index check against a scalar one on long and int ids, every position of a bad id in
    /// batches that cover the vector blocks and the scalar tail.</summary>
    [Test]
    public void VectorisedIndexCheckFindsTheFirstBadIndex()
    {
        var random = new Random(17);
        foreach (int length in new[] { 0, 1, 7, 31, 32, 33, 64, 65, 200 })
            for (int trial = 0; trial < 20; trial++)
            {
                const long rows = 1000;
                var ids = Enumerable.Range(0, length).Select(_ => random.NextInt64(rows)).ToArray();
                int bad = length == 0 || trial == 0 ? -1 : random.Next(length);
                if (bad >= 0)
                {
                    ids[bad] = random.Next(3) switch { 0 => -1 - random.Next(5), 1 => rows + random.Next(5), _ => long.MinValue };
                    if (trial % 3 == 0 && bad + 1 < length) ids[random.Next(bad + 1, length)] = rows;   // a later bad one too
                }
                Assert.That(EmbeddingBagValidation.FirstOutOfRange((ReadOnlySpan<long>)ids, rows), Is.EqualTo(bad), $"long, length {length}");
                var ints = ids.Select(v => v == long.MinValue ? int.MinValue : (int)v).ToArray();
                Assert.That(EmbeddingBagValidation.FirstOutOfRange((ReadOnlySpan<int>)ints, rows), Is.EqualTo(bad), $"int, length {length}");
            }
        Assert.That(EmbeddingBagValidation.FirstOutOfRange((ReadOnlySpan<int>)[int.MaxValue, 0], 3L << 31), Is.EqualTo(-1), "int ids into a table past int.MaxValue rows");
        Assert.That(EmbeddingBagValidation.FirstOutOfRange((ReadOnlySpan<int>)[0, -1], 3L << 31), Is.EqualTo(1));
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
        Assert.That(output, Is.All.EqualTo(0f));
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
