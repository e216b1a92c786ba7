using LiveDlrm.Numa;

namespace LiveDlrm.Tests.Numa;

internal class NumaMemoryTests
{
    [Test]
    public void NodeLocalAndInterleavedBuffersAreUsable()
    {
        Assume.That(NumaBuffer.IsAvailable, "libnuma not usable");
        foreach (var policy in new[] { MemoryPolicy.NodeLocal, MemoryPolicy.Interleaved })
        {
            using var b = NumaBuffer.Allocate(3 * 4096 + 17, policy);
            Assert.That((long)b.Address % 4096, Is.Zero, "libnuma returns page-aligned memory");
            var span = b.AsSpan();
            span.Fill(0x5a);
            Assert.That(span[^1], Is.EqualTo(0x5a));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => NumaBuffer.Allocate(4096, MemoryPolicy.NodeLocal, node: 999));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumaBuffer.Allocate(0, MemoryPolicy.Interleaved));
    }

    [Test]
    public unsafe void MbindMovesTouchedPagesToANodeAndRejectsAMissingOne()
    {
        long page = MemoryPlacement.PageSize;
        void* p = System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(page * 4), (nuint)page);
        try
        {
            new Span<byte>(p, (int)(page * 4)).Fill(1);   // touched: pages exist before the policy changes
            int node = Topology.Detect().Nodes[0].Id;
            MemoryPlacement.Apply((nint)p, page * 4, MemoryPolicy.NodeLocal, [node]);
            MemoryPlacement.Apply((nint)p, page * 4, MemoryPolicy.Interleaved, [node]);
            var e = Assert.Throws<InvalidOperationException>(() => MemoryPlacement.Apply((nint)p, page * 4, MemoryPolicy.NodeLocal, [900]));
            Assert.That(e!.Message, Does.Contain("errno"));
            Assert.Throws<ArgumentException>(() => MemoryPlacement.Apply((nint)p, page, MemoryPolicy.NodeLocal, [0, 1]));
        }
        finally { System.Runtime.InteropServices.NativeMemory.AlignedFree(p); }
    }
}
