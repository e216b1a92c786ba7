using System.Runtime.InteropServices;
using LiveDlrm.Interop;

namespace LiveDlrm.Numa;

/// <summary>How a block of memory should be spread over NUMA nodes.</summary>
internal enum MemoryPolicy
{
    /// <summary>First touch (the kernel default): pages land on the node of the thread that first writes them.</summary>
    Default,
    /// <summary>All pages on one node, the one whose PUs read the memory most.</summary>
    NodeLocal,
    /// <summary>Pages round-robin over nodes: no node is remote for everyone, bandwidth of all nodes is used.</summary>
    Interleaved,
}

/// <summary>Native memory placed by libnuma (<c>numa_alloc_onnode</c> / <c>numa_alloc_interleaved</c>), page aligned,
/// zero-filled on first touch. Only usable where <see cref="IsAvailable"/>; otherwise allocate normally and let
/// first touch decide.</summary>
internal sealed class NumaBuffer : IDisposable
{
    readonly NumaMemoryHandle _memory;

    public static bool IsAvailable => LibNuma.IsUsable;
    public long Length { get; }
    public MemoryPolicy Policy { get; }
    public int? Node { get; }

    NumaBuffer(NumaMemoryHandle memory, long length, MemoryPolicy policy, int? node)
    { _memory = memory; Length = length; Policy = policy; Node = node; }

    public static NumaBuffer Allocate(long bytes, MemoryPolicy policy, int node = 0)
    {
        if (!IsAvailable) throw new PlatformNotSupportedException("libnuma is unavailable: NUMA placement of allocations is not possible here");
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "length must be positive");
        if (policy == MemoryPolicy.NodeLocal && (node < 0 || node > LibNuma.MaxNode()))
            throw new ArgumentOutOfRangeException(nameof(node), node, $"node must be in [0, {LibNuma.MaxNode()}]");
        var handle = NumaMemoryHandle.Allocate((nuint)bytes, policy == MemoryPolicy.Interleaved ? null : node);
        return new NumaBuffer(handle, bytes, policy, policy == MemoryPolicy.Interleaved ? null : node);
    }

    /// <summary>Address of the first byte; valid until <see cref="Dispose"/>.</summary>
    public nint Address => _memory.IsClosed ? throw new ObjectDisposedException(nameof(NumaBuffer)) : _memory.DangerousGetHandle();

    public unsafe Span<byte> AsSpan() => Length <= int.MaxValue
        ? new Span<byte>((void*)Address, (int)Length)
        : throw new InvalidOperationException($"buffer of {Length} bytes is too long for one span");

    public void Dispose() => _memory.Dispose();
}

/// <summary>Policy changes on memory allocated elsewhere (e.g. an embedding table's block), via the mbind system
/// call with MPOL_MF_MOVE so pages that were already touched migrate too (numa_tonode_memory only affects future
/// faults).</summary>
internal static unsafe class MemoryPlacement
{
    public static long PageSize => NativeLibraries.IsAvailable(Libraries.LibC) ? LibC.SysConf(LibC.ScPageSize) : 4096;

    /// <summary>Applies <paramref name="policy"/> to [address, address+length) rounded out to whole pages, over
    /// <paramref name="nodes"/> (one node for NodeLocal, the set to interleave over for Interleaved). Throws with
    /// errno when the kernel refuses (EINVAL for a node that does not exist, EIO when pages could not move).</summary>
    public static void Apply(nint address, long length, MemoryPolicy policy, IReadOnlyCollection<int> nodes)
    {
        if (address == 0 || length <= 0) throw new ArgumentException($"invalid range 0x{address:x}+{length}");
        if (!NativeLibraries.IsAvailable(Libraries.LibC)) throw new PlatformNotSupportedException("libc unavailable: cannot call mbind");
        if (policy == MemoryPolicy.NodeLocal && nodes.Count != 1) throw new ArgumentException($"NodeLocal needs exactly one node, got [{CpuList.Format(nodes)}]", nameof(nodes));
        if (policy == MemoryPolicy.Interleaved && nodes.Count == 0) throw new ArgumentException("Interleaved needs at least one node", nameof(nodes));
        long page = PageSize;
        long start = address & ~(page - 1), end = (address + length + page - 1) & ~(page - 1);
        const int maskWords = 16;   // 1024 nodes, far above any machine's node count
        ulong* mask = stackalloc ulong[maskWords];
        new Span<ulong>(mask, maskWords).Clear();
        foreach (int n in nodes)
        {
            if ((uint)n >= maskWords * 64) throw new ArgumentOutOfRangeException(nameof(nodes), n, "node id out of range");
            mask[n >> 6] |= 1UL << (n & 63);
        }
        int mode = policy switch
        {
            MemoryPolicy.NodeLocal => LibC.MpolBind,
            MemoryPolicy.Interleaved => LibC.MpolInterleave,
            _ => LibC.MpolDefault,
        };
        long rc = LibC.Mbind((nint)start, (nuint)(end - start), mode, policy == MemoryPolicy.Default ? null : mask,
                             policy == MemoryPolicy.Default ? 0 : (nuint)(maskWords * 64), LibC.MpolMfMove);
        if (rc != 0)
            throw new InvalidOperationException($"mbind({policy}, nodes [{CpuList.Format(nodes)}]) on {end - start} bytes failed: errno {Marshal.GetLastPInvokeError()}");
    }
}

/// <summary>Applies a plan's <see cref="TablePlacement"/> to an embedding table's memory.</summary>
internal static class TableMemoryPlacement
{
    /// <summary>Moves <paramref name="table"/>'s pages as <paramref name="placement"/> says. On a one-node machine
    /// this is a valid no-op move; it throws where the kernel refuses (see <see cref="MemoryPlacement.Apply"/>).</summary>
    public static unsafe void Apply(LiveDlrm.Embeddings.EmbeddingTable table, TablePlacement placement)
    {
        if (placement.Table != table.Name) throw new ArgumentException($"placement is for table '{placement.Table}', not '{table.Name}'", nameof(placement));
        if (placement.Policy == MemoryPolicy.Default) return;
        MemoryPlacement.Apply((nint)table.DataPointer, table.ByteSize, placement.Policy, placement.Nodes);
    }
}
