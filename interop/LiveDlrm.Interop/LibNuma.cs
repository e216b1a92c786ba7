using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>libnuma 2.x (<c>libnuma.so.1</c>). Optional: callers check <see cref="IsUsable"/>, which requires both
/// the library and a kernel with NUMA support (<c>numa_available() != -1</c>, the documented precondition of every
/// other call).</summary>
internal static partial class LibNuma
{
    // int numa_available(void);   -1 when the kernel has no NUMA API; must be called before anything else.
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_available")]
    internal static partial int Available();

    // int numa_max_node(void);
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_max_node")]
    internal static partial int MaxNode();

    // int numa_num_configured_nodes(void);
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_num_configured_nodes")]
    internal static partial int NumConfiguredNodes();

    // int numa_node_of_cpu(int cpu);   -1 with errno EINVAL for a CPU that does not exist
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_node_of_cpu", SetLastError = true)]
    internal static partial int NodeOfCpu(int cpu);

    // long long numa_node_size64(int node, long long *freep);
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_node_size64")]
    internal static unsafe partial long NodeSize64(int node, long* free);

    // void *numa_alloc_onnode(size_t size, int node);   NULL on failure; memory is page aligned, not yet faulted
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_alloc_onnode")]
    internal static partial nint AllocOnNode(nuint size, int node);

    // void *numa_alloc_interleaved(size_t size);   interleaved over all nodes the process may use
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_alloc_interleaved")]
    internal static partial nint AllocInterleaved(nuint size);

    // void numa_free(void *start, size_t size);   size must be the size given at allocation
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_free")]
    internal static partial void Free(nint start, nuint size);

    // void numa_tonode_memory(void *start, size_t size, int node);   sets the policy of a range (mbind MPOL_BIND);
    // pages already faulted in stay where they are unless strict/move flags were set — see NumaMemory.MoveTo.
    [LibraryImport(Libraries.Numa, EntryPoint = "numa_tonode_memory")]
    internal static partial void ToNodeMemory(nint start, nuint size, int node);

    static int _usable = -1;   // -1 unknown, 0 no, 1 yes

    internal static bool IsUsable
    {
        get
        {
            if (_usable < 0) _usable = NativeLibraries.IsAvailable(Libraries.Numa) && Available() != -1 ? 1 : 0;
            return _usable == 1;
        }
    }
}

/// <summary>Memory from <c>numa_alloc_onnode</c>/<c>numa_alloc_interleaved</c>, released with <c>numa_free</c>
/// (which needs the length, so the handle carries it).</summary>
internal sealed class NumaMemoryHandle : SafeHandle
{
    public nuint Length { get; }

    NumaMemoryHandle(nint address, nuint length) : base(0, ownsHandle: true) { SetHandle(address); Length = length; }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle() { LibNuma.Free(handle, Length); return true; }

    /// <summary>Allocates on <paramref name="node"/>, or interleaved over all nodes when node is null.
    /// Throws OutOfMemoryException naming the request when libnuma returns NULL.</summary>
    internal static NumaMemoryHandle Allocate(nuint length, int? node)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length), "a NUMA allocation needs a non-zero length");
        nint p = node is int n ? LibNuma.AllocOnNode(length, n) : LibNuma.AllocInterleaved(length);
        if (p == 0)
            throw new OutOfMemoryException($"libnuma could not allocate {length} bytes {(node is int m ? $"on node {m}" : "interleaved")}");
        return new NumaMemoryHandle(p, length);
    }
}
