using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>hwloc 2.x (<c>libhwloc.so.15</c>). Only exported functions are bound: the <c>..._by_type</c> helpers
/// (<c>hwloc_get_nbobjs_by_type</c>, <c>hwloc_get_obj_by_type</c>) are static inline in hwloc/inlines.h and do
/// not exist in the library, so objects are walked by depth (<see cref="GetTypeDepth"/> then
/// <see cref="GetNbObjsByDepth"/>/<see cref="GetObjByDepth"/>), which is what those inlines do.</summary>
internal static unsafe partial class Hwloc
{
    // hwloc_obj_type_t (hwloc.h, enum hwloc_obj_type_e), hwloc 2.x numbering.
    internal const int ObjMachine = 0, ObjPackage = 1, ObjCore = 2, ObjPU = 3, ObjL1Cache = 4, ObjL2Cache = 5,
        ObjL3Cache = 6, ObjGroup = 12, ObjNumaNode = 13, ObjDie = 19;

    // Results of hwloc_get_type_depth that are not depths; NUMA nodes live at this virtual depth in 2.x.
    internal const int TypeDepthUnknown = -1, TypeDepthMultiple = -2, TypeDepthNumaNode = -3;

    internal const int CpubindProcess = 1 << 0, CpubindThread = 1 << 1, CpubindStrict = 1 << 2;

    // unsigned hwloc_get_api_version(void);   e.g. 0x00020800 for 2.9.0 (the API level, not the release)
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_get_api_version")]
    internal static partial uint GetApiVersion();

    // int hwloc_topology_init(hwloc_topology_t *topologyp);   0 on success
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_topology_init", SetLastError = true)]
    internal static partial int TopologyInit(out HwlocTopologyHandle topology);

    // int hwloc_topology_load(hwloc_topology_t topology);   0 on success, -1 with errno
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_topology_load", SetLastError = true)]
    internal static partial int TopologyLoad(HwlocTopologyHandle topology);

    // void hwloc_topology_destroy(hwloc_topology_t topology);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_topology_destroy")]
    internal static partial void TopologyDestroy(nint topology);

    // int hwloc_get_type_depth(hwloc_topology_t topology, hwloc_obj_type_t type);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_get_type_depth")]
    internal static partial int GetTypeDepth(HwlocTopologyHandle topology, int type);

    // unsigned hwloc_get_nbobjs_by_depth(hwloc_topology_t topology, int depth);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_get_nbobjs_by_depth")]
    internal static partial uint GetNbObjsByDepth(HwlocTopologyHandle topology, int depth);

    // hwloc_obj_t hwloc_get_obj_by_depth(hwloc_topology_t topology, int depth, unsigned idx);
    // The object belongs to the topology: valid only while the topology handle is alive.
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_get_obj_by_depth")]
    internal static partial HwlocObj* GetObjByDepth(HwlocTopologyHandle topology, int depth, uint index);

    // int hwloc_set_cpubind(hwloc_topology_t topology, hwloc_const_cpuset_t set, int flags);
    // With HWLOC_CPUBIND_THREAD it binds the calling thread only.
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_set_cpubind", SetLastError = true)]
    internal static partial int SetCpubind(HwlocTopologyHandle topology, HwlocBitmapHandle set, int flags);

    // int hwloc_get_cpubind(hwloc_topology_t topology, hwloc_cpuset_t set, int flags);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_get_cpubind", SetLastError = true)]
    internal static partial int GetCpubind(HwlocTopologyHandle topology, HwlocBitmapHandle set, int flags);

    // hwloc_bitmap_t hwloc_bitmap_alloc(void);   NULL on failure
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_alloc")]
    internal static partial HwlocBitmapHandle BitmapAlloc();

    // void hwloc_bitmap_free(hwloc_bitmap_t bitmap);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_free")]
    internal static partial void BitmapFree(nint bitmap);

    // int hwloc_bitmap_set(hwloc_bitmap_t bitmap, unsigned id);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_set")]
    internal static partial int BitmapSet(HwlocBitmapHandle bitmap, uint id);

    // int hwloc_bitmap_first(hwloc_const_bitmap_t bitmap);   -1 when empty
    // Bitmaps read here are the borrowed cpuset/nodeset pointers of objects, hence nint.
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_first")]
    internal static partial int BitmapFirst(nint bitmap);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_first")]
    internal static partial int BitmapFirst(HwlocBitmapHandle bitmap);

    // int hwloc_bitmap_next(hwloc_const_bitmap_t bitmap, int prev);   -1 after the last
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_next")]
    internal static partial int BitmapNext(nint bitmap, int prev);
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_next")]
    internal static partial int BitmapNext(HwlocBitmapHandle bitmap, int prev);

    // int hwloc_bitmap_weight(hwloc_const_bitmap_t bitmap);   -1 for an infinite set
    [LibraryImport(Libraries.Hwloc, EntryPoint = "hwloc_bitmap_weight")]
    internal static partial int BitmapWeight(nint bitmap);

    /// <summary>Members of a bitmap in increasing order.</summary>
    internal static List<int> BitmapMembers(nint bitmap)
    {
        var members = new List<int>();
        if (bitmap == 0) return members;
        for (int i = BitmapFirst(bitmap); i >= 0; i = BitmapNext(bitmap, i)) members.Add(i);
        return members;
    }

    /// <summary>The struct layouts below are those of hwloc 2.x (API 0x0002xxxx, soname libhwloc.so.15); a
    /// different major API would have a different <c>struct hwloc_obj</c>.</summary>
    internal static bool IsSupportedApi(uint apiVersion) => (apiVersion >> 16) == 2;
}

/// <summary><c>struct hwloc_obj</c> of hwloc 2.x, field for field (hwloc.h of 2.9.0; checked with offsetof: size
/// 248, type@0 os_index@16 attr@40 depth@48 logical_index@52 parent@72 arity@104 children@112 cpuset@184
/// nodeset@200 gp_index@240 — tests/LiveDlrm.Tests/Numa/hwloc_layout.c prints them). Read-only: objects belong to
/// the topology. Pointers are kept as nint so no raw struct pointer escapes the layout.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HwlocObj
{
    public int Type;                 // hwloc_obj_type_t
    public nint Subtype;             // char*
    public uint OsIndex;             // HWLOC_UNKNOWN_INDEX (uint.MaxValue) when the OS gives none
    public nint Name;                // char*
    public ulong TotalMemory;        // bytes of NUMA memory below
    public nint Attr;                // union hwloc_obj_attr_u*
    public int Depth;
    public uint LogicalIndex;
    public nint NextCousin, PrevCousin, Parent;
    public uint SiblingRank;
    public nint NextSibling, PrevSibling;
    public uint Arity;
    public nint Children, FirstChild, LastChild;
    public int SymmetricSubtree;
    public uint MemoryArity;
    public nint MemoryFirstChild;
    public uint IoArity;
    public nint IoFirstChild;
    public uint MiscArity;
    public nint MiscFirstChild;
    public nint Cpuset, CompleteCpuset, Nodeset, CompleteNodeset;   // hwloc_bitmap_t (owned by the topology)
    public nint Infos;
    public uint InfosCount;
    public nint Userdata;
    public ulong GpIndex;

    internal const uint UnknownIndex = uint.MaxValue;
}

/// <summary><c>struct hwloc_cache_attr_s</c> (the <c>cache</c> member of <c>union hwloc_obj_attr_u</c>, at offset 0
/// of the union): size@0 depth@8 linesize@12 associativity@16 type@20, 24 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HwlocCacheAttr
{
    public ulong Size;
    public uint Depth;
    public uint LineSize;
    public int Associativity;   // 0 unknown, -1 fully associative
    public int CacheType;       // hwloc_obj_cache_type_t
}

/// <summary><c>struct hwloc_numanode_attr_s</c>: local_memory@0 (bytes), then page types.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HwlocNumaNodeAttr
{
    public ulong LocalMemory;
    public uint PageTypesLength;
    public nint PageTypes;
}

/// <summary>A loaded hwloc topology; destroyed with <c>hwloc_topology_destroy</c>.</summary>
internal sealed class HwlocTopologyHandle : SafeHandle
{
    public HwlocTopologyHandle() : base(0, ownsHandle: true) { }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() { Hwloc.TopologyDestroy(handle); return true; }
}

/// <summary>A bitmap this process allocated (<c>hwloc_bitmap_alloc</c>); freed with <c>hwloc_bitmap_free</c>.</summary>
internal sealed class HwlocBitmapHandle : SafeHandle
{
    public HwlocBitmapHandle() : base(0, ownsHandle: true) { }
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() { Hwloc.BitmapFree(handle); return true; }
}
