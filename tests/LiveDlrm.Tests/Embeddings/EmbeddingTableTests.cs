using LiveDlrm.Embeddings;
using LiveDlrm.Memory;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>Quantisation round trips and native memory ownership of <see cref="EmbeddingTable"/>.</summary>
[TestFixture]
internal class EmbeddingTableTests
{
    [TestCase(1)]
    [TestCase(17)]
    [TestCase(64)]
    public void Fp32RoundTripIsExact(int dim)
    {
        var values = EmbeddingTestData.RandomValues(5 * dim, seed: dim);
        using var table = EmbeddingTable.FromFp32("fp32", values, dim, EmbeddingStorage.Fp32);
        var row = new float[dim];
        for (int r = 0; r < 5; r++)
        {
            table.ReadRow(r, row);
            Assert.That(row, Is.EqualTo(values.AsSpan(r * dim, dim).ToArray()));
        }
    }

    [TestCase(1)]
    [TestCase(17)]
    [TestCase(64)]
    public void Fp16RoundTripEqualsHalfConversion(int dim)
    {
        var values = EmbeddingTestData.RandomValues(5 * dim, seed: dim, range: 1000f);
        values[0] = 6.0e-8f;    // a half subnormal
        values[^1] = -65504f;   // the largest half
        using var table = EmbeddingTable.FromFp32("fp16", values, dim, EmbeddingStorage.Fp16);
        var row = new float[dim];
        for (int r = 0; r < 5; r++)
        {
            table.ReadRow(r, row);
            for (int d = 0; d < dim; d++)
            {
                float v = values[r * dim + d];
                Assert.That(row[d], Is.EqualTo((float)(Half)v), $"row {r} col {d}");
                Assert.That(Math.Abs(row[d] - v), Is.LessThanOrEqualTo(Math.Abs(v) * (1.0 / 2048) + 6e-8));
            }
        }
    }

    [Test]
    public void Fp16RejectsValuesThatWouldOverflow()
    {
        using var table = EmbeddingTable.Create("fp16", 2, 2, EmbeddingStorage.Fp16);
        var e = Assert.Throws<ArgumentException>(() => table.WriteRow(1, [1f, 70000f]));
        Assert.That(e!.Message, Does.Contain("fp16").And.Contain("70000"));
        var row = new float[2];
        table.ReadRow(1, row);
        Assert.That(row, Is.All.EqualTo(0f), "nothing written");
    }

    [TestCase(1)]
    [TestCase(17)]
    [TestCase(64)]
    [TestCase(256)]
    public void Int8RoundTripIsWithinHalfAStep(int dim)
    {
        var values = EmbeddingTestData.RandomValues(6 * dim, seed: dim, range: 3f);
        for (int d = 0; d < dim; d++) values[5 * dim + d] = 0.25f;   // a constant row: scale 0, exact
        using var table = EmbeddingTable.FromFp32("int8", values, dim, EmbeddingStorage.Int8Rowwise);
        Assert.That(table.RowStride, Is.EqualTo(dim + 8));
        var row = new float[dim];
        for (int r = 0; r < 6; r++)
        {
            table.ReadRow(r, row);
            var stored = table.StoredRow(r);
            float scale = BitConverter.ToSingle(stored.Slice(dim, 4));
            for (int d = 0; d < dim; d++)
                Assert.That(Math.Abs(row[d] - values[r * dim + d]), Is.LessThanOrEqualTo(scale / 2 * 1.0001 + 1e-6), $"row {r} col {d}, scale {scale}");
        }
        table.ReadRow(5, row);
        Assert.That(row, Is.All.EqualTo(0.25f));
    }

    [Test]
    public void NativeMemoryIsReleasedOnDispose()
    {
        long bytes = NativeBuffer.LiveBytes, count = NativeBuffer.LiveCount;
        for (int i = 0; i < 50; i++)
        {
            // Alternate small (C heap) and large (huge-page mapping) tables so both release paths run.
            long rows = i % 5 == 0 ? 20_000 : 100;
            var table = EmbeddingTable.Create($"leak-{i}", rows, 64, (EmbeddingStorage)(i % 3));
            Assert.That(NativeBuffer.LiveBytes, Is.EqualTo(bytes + table.ByteSize));
            Assert.That(NativeBuffer.LiveCount, Is.EqualTo(count + 1));
            table.StoredRow(rows - 1).Fill(1);   // touch the last byte: the whole length is mapped
            table.Dispose();
            table.Dispose();   // idempotent
            Assert.That(table.IsDisposed, Is.True);
        }
        Assert.That(NativeBuffer.LiveBytes, Is.EqualTo(bytes));
        Assert.That(NativeBuffer.LiveCount, Is.EqualTo(count));
    }

    [Test]
    public void LargeTablesAreHugePageMappingsAndZeroed()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("Linux only");
        using var large = EmbeddingTable.Create("large", (NativeBuffer.HugePageThreshold / 256) + 1, 64, EmbeddingStorage.Fp32);
        using var small = EmbeddingTable.Create("small", 10, 64, EmbeddingStorage.Fp32);
        Assert.That(large.HugePagesAdvised, Is.True);
        Assert.That(small.HugePagesAdvised, Is.False);
        var row = new float[64];
        large.ReadRow(large.Rows - 1, row);
        Assert.That(row, Is.All.EqualTo(0f));
    }
}
