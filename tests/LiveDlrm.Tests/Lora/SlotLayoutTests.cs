using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>The slot pool is two arrays (A vectors, then records). The kernels read 8 or 16 floats of A per hit and
/// rely on each A being as few cache lines as its size allows; the trainer relies on A and records never overlapping.</summary>
internal class SlotLayoutTests
{
    /// <summary>Every slot's A (its padded bytes, which the kernels load whole) and its record lie inside the pool and
    /// overlap nothing else; an A of 64 bytes or less never crosses a cache line.</summary>
    [Test]
    public unsafe void AVectorsAndRecordsTileThePool([Values(1, 5, 8, 9, 12, 16, 17, 24, 32, 48)] int rank)
    {
        using var table = EmbeddingTable.Create("layout", 1 << 16, 64, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = rank, MinRank = 1, MaxRank = 64 });
        var g = adapter.Pin();
        try
        {
            int aBytes = SlotLayout.ABytesFor(rank);
            Assert.That(aBytes % 32, Is.EqualTo(0), "A is padded to whole 8-float loads");
            Assert.That(aBytes, Is.GreaterThanOrEqualTo(rank * sizeof(float)));
            Assert.That((nuint)g.PoolPointer % 64, Is.EqualTo((nuint)0), "A array not 64-byte aligned");
            byte* begin = g.PoolPointer, end = begin + g.Pool.Length;
            var owner = new int[g.Pool.Length];
            void Claim(byte* p, int bytes, int who, string what)
            {
                Assert.That(p >= begin && p + bytes <= end, $"rank {rank}: {what} outside the pool");
                for (long k = p - begin; k < p - begin + bytes; k++)
                {
                    if (owner[k] != 0) Assert.Fail($"rank {rank}: {what} overlaps byte {k}, already used by #{owner[k]}");
                    owner[k] = who;
                }
            }
            for (int s = 0; s < g.SlotCapacity; s++)
            {
                byte* a = (byte*)g.APointer(s);
                Claim(a, aBytes, 2 * s + 1, $"A of slot {s}");
                Claim((byte*)g.Record(s), SlotLayout.RecordBytes, 2 * s + 2, $"record of slot {s}");
                if (aBytes <= 64)
                    Assert.That((nuint)a / 64, Is.EqualTo((nuint)(a + aBytes - 1) / 64), $"rank {rank}: A of slot {s} crosses a cache line");
            }
        }
        finally { TableAdapter.Unpin(g); }
    }
}
