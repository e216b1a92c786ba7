using System.Runtime.InteropServices;
using LiveDlrm.Interop;

namespace LiveDlrm.Numa;

/// <summary>Reads the topology through hwloc 2.x: every PU object, its ancestors for core, package and last-level
/// cache, and its nodeset for the NUMA node.</summary>
internal static class HwlocTopologyReader
{
    public static bool IsAvailable => NativeLibraries.IsAvailable(Libraries.Hwloc) && Hwloc.IsSupportedApi(Hwloc.GetApiVersion());

    public static Topology Read()
    {
        using var topology = Load();
        return Read(topology);
    }

    internal static HwlocTopologyHandle Load()
    {
        if (!NativeLibraries.IsAvailable(Libraries.Hwloc)) throw new NotSupportedException("hwloc is unavailable (libhwloc.so.15 not found)");
        uint api = Hwloc.GetApiVersion();
        if (!Hwloc.IsSupportedApi(api))
            throw new NotSupportedException($"hwloc API 0x{api:x} is not 2.x; the struct layouts bound here are hwloc 2.x's");
        if (Hwloc.TopologyInit(out var topology) != 0)
        {
            topology.Dispose();
            throw new InvalidOperationException($"hwloc_topology_init failed (errno {Marshal.GetLastPInvokeError()})");
        }
        if (Hwloc.TopologyLoad(topology) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            topology.Dispose();
            throw new InvalidOperationException($"hwloc_topology_load failed (errno {errno})");
        }
        return topology;
    }

    static unsafe Topology Read(HwlocTopologyHandle topology)
    {
        int puDepth = Hwloc.GetTypeDepth(topology, Hwloc.ObjPU);
        if (puDepth < 0) throw new InvalidOperationException($"hwloc reports no PU level (depth {puDepth})");
        uint count = Hwloc.GetNbObjsByDepth(topology, puDepth);

        var raw = new List<Topology.RawPu>();
        var llcInfo = new Dictionary<string, (int, long?)>(StringComparer.Ordinal);
        bool anyCore = false, anyCache = false;
        for (uint i = 0; i < count; i++)
        {
            HwlocObj* pu = Hwloc.GetObjByDepth(topology, puDepth, i);
            if (pu == null || pu->Type != Hwloc.ObjPU) throw new InvalidOperationException($"hwloc PU {i} at depth {puDepth} is not a PU object");
            int package = 0;
            long coreKey = -1;
            string? llcKey = null; int llcLevel = 0; long? llcSize = null;
            for (var o = (HwlocObj*)pu->Parent; o != null; o = (HwlocObj*)o->Parent)
            {
                switch (o->Type)
                {
                    case Hwloc.ObjCore when coreKey < 0: coreKey = (long)o->GpIndex; anyCore = true; break;
                    case Hwloc.ObjPackage: package = o->OsIndex != HwlocObj.UnknownIndex ? (int)o->OsIndex : (int)o->LogicalIndex; break;
                    case >= Hwloc.ObjL1Cache and <= Hwloc.ObjL3Cache + 2:   // L1..L5 data/unified; keep the outermost
                        int level = o->Type - Hwloc.ObjL1Cache + 1;
                        if (level > llcLevel)
                        {
                            llcLevel = level;
                            llcKey = $"L{level}#{o->GpIndex}";
                            llcSize = o->Attr != 0 ? (long)((HwlocCacheAttr*)o->Attr)->Size : null;
                        }
                        break;
                }
            }
            if (coreKey < 0) coreKey = -1 - (long)pu->GpIndex;   // no core object: the PU is its own core
            if (llcKey is null) llcKey = $"package{package}"; else { anyCache = true; llcInfo[llcKey] = (llcLevel, llcSize); }
            int node = Hwloc.BitmapFirst(pu->Nodeset);
            raw.Add(new Topology.RawPu((int)pu->OsIndex, package, coreKey, Math.Max(node, 0), llcKey));
        }

        var nodeMemory = new Dictionary<int, long?>();
        uint nodes = Hwloc.GetNbObjsByDepth(topology, Hwloc.TypeDepthNumaNode);
        for (uint i = 0; i < nodes; i++)
        {
            HwlocObj* n = Hwloc.GetObjByDepth(topology, Hwloc.TypeDepthNumaNode, i);
            if (n == null || n->Type != Hwloc.ObjNumaNode) continue;
            nodeMemory[(int)n->OsIndex] = n->Attr != 0 ? (long)((HwlocNumaNodeAttr*)n->Attr)->LocalMemory : null;
        }

        var notes = new List<string>();
        if (!anyCore) notes.Add("hwloc reported no Core objects: each PU assumed to be its own core");
        if (!anyCache) notes.Add("hwloc reported no caches: last-level cache assumed shared per package");
        return Topology.Build(TopologySource.Hwloc, raw, nodeMemory, llcInfo, notes);
    }

    /// <summary>Binds the calling thread to <paramref name="pus"/> with <c>hwloc_set_cpubind(HWLOC_CPUBIND_THREAD)</c>
    /// — the hwloc route to what <see cref="ThreadAffinity.PinCurrentThread"/> does with sched_setaffinity.</summary>
    public static void BindCurrentThread(IReadOnlyCollection<int> pus)
    {
        if (pus.Count == 0) throw new ArgumentException("cannot bind a thread to an empty PU set", nameof(pus));
        using var topology = Load();
        using var set = Hwloc.BitmapAlloc();
        if (set.IsInvalid) throw new OutOfMemoryException("hwloc_bitmap_alloc returned NULL");
        foreach (int pu in pus)
        {
            if (pu < 0) throw new ArgumentOutOfRangeException(nameof(pus), pu, "PU ids are non-negative");
            Hwloc.BitmapSet(set, (uint)pu);
        }
        if (Hwloc.SetCpubind(topology, set, Hwloc.CpubindThread) != 0)
            throw new InvalidOperationException($"hwloc_set_cpubind(thread, [{CpuList.Format(pus)}]) failed (errno {Marshal.GetLastPInvokeError()})");
    }
}
