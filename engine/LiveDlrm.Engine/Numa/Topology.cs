using System.Text;
using LiveDlrm.Interop;

namespace LiveDlrm.Numa;

/// <summary>Where a <see cref="Topology"/> came from, best first: hwloc knows caches and cores from CPUID as well as
/// the OS; libnuma adds the kernel's node mapping to what /sys says about cores; /sys alone is the last OS source;
/// <see cref="ProcessorCount"/> is the guess of last resort (one node, one core per processor).</summary>
internal enum TopologySource { Hwloc, LibNuma, Sysfs, ProcessorCount }

/// <summary>One logical processor (hardware thread). <see cref="Id"/> is the OS CPU number (what affinity masks
/// use); <see cref="Core"/> and <see cref="LlcGroup"/> index <see cref="Topology.Cores"/> and
/// <see cref="Topology.LlcGroups"/>.</summary>
internal sealed record ProcessingUnit(int Id, int Core, int Package, int Node, int LlcGroup);

/// <summary>A physical core; more than one PU means SMT siblings, which share the core's execution units and L1/L2.</summary>
internal sealed record PhysicalCore(int Index, int Package, int Node, int LlcGroup, IReadOnlyList<int> Pus);

internal sealed record NumaNode(int Id, IReadOnlyList<int> Pus, long? MemoryBytes);

/// <summary>PUs sharing one last-level cache (an L3 slice on AMD CCXs, a whole socket on most Intel parts).</summary>
internal sealed record CacheGroup(int Index, int Level, IReadOnlyList<int> Pus, long? SizeBytes);

/// <summary>The machine as the engine sees it: NUMA nodes, packages, physical cores with their SMT sibling PUs, and
/// last-level-cache groups. Immutable; <see cref="Detect"/> picks the best available source.</summary>
internal sealed class Topology
{
    public TopologySource Source { get; }
    public IReadOnlyList<NumaNode> Nodes { get; }
    public IReadOnlyList<int> Packages { get; }
    public IReadOnlyList<PhysicalCore> Cores { get; }
    public IReadOnlyList<ProcessingUnit> Pus { get; }
    public IReadOnlyList<CacheGroup> LlcGroups { get; }
    /// <summary>What the source could not tell and what was assumed instead.</summary>
    public IReadOnlyList<string> Notes { get; }

    readonly Dictionary<int, ProcessingUnit> _byId;

    Topology(TopologySource source, IReadOnlyList<NumaNode> nodes, IReadOnlyList<int> packages, IReadOnlyList<PhysicalCore> cores,
             IReadOnlyList<ProcessingUnit> pus, IReadOnlyList<CacheGroup> llc, IReadOnlyList<string> notes)
    {
        Source = source; Nodes = nodes; Packages = packages; Cores = cores; Pus = pus; LlcGroups = llc; Notes = notes;
        _byId = pus.ToDictionary(p => p.Id);
    }

    public ProcessingUnit Pu(int id) => _byId.TryGetValue(id, out var p) ? p
        : throw new ArgumentOutOfRangeException(nameof(id), id, $"PU {id} is not in this topology (PUs: {CpuList.Format(_byId.Keys)})");

    public bool HasPu(int id) => _byId.ContainsKey(id);

    /// <summary>The PUs of <paramref name="pu"/>'s physical core, itself included.</summary>
    public IReadOnlyList<int> SmtSiblings(int pu) => Cores[Pu(pu).Core].Pus;

    public int ThreadsPerCore => Cores.Max(c => c.Pus.Count);

    /// <summary>Best available source: hwloc, else libnuma (+ /sys for cores), else /sys, else the processor count.
    /// Never throws for a missing library or an unreadable /sys; the result's <see cref="Source"/> and
    /// <see cref="Notes"/> say what was used.</summary>
    public static Topology Detect(string sysRoot = "/sys")
    {
        var notes = new List<string>();
        if (NativeLibraries.IsAvailable(Libraries.Hwloc))
        {
            try { return HwlocTopologyReader.Read(); }
            catch (Exception e) when (e is InvalidOperationException or NotSupportedException) { notes.Add($"hwloc failed: {e.Message}"); }
        }
        else notes.Add("hwloc unavailable (libhwloc.so.15 not found)");
        if (LibNuma.IsUsable)
        {
            try { return SysfsTopologyReader.Read(sysRoot, useLibNuma: true, notes); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { notes.Add($"libnuma + /sys failed: {e.Message}"); }
        }
        else notes.Add("libnuma unavailable (libnuma.so.1 not found or numa_available() == -1)");
        try { return SysfsTopologyReader.Read(sysRoot, useLibNuma: false, notes); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { notes.Add($"{sysRoot} unreadable: {e.Message}"); }
        return FromProcessorCount(Environment.ProcessorCount, notes);
    }

    /// <summary>One node, one package, one core per processor: what is left when nothing can be asked.</summary>
    public static Topology FromProcessorCount(int processors, IEnumerable<string>? notes = null)
    {
        if (processors < 1) throw new ArgumentOutOfRangeException(nameof(processors), processors, "need at least one processor");
        var all = new List<string>(notes ?? []) { $"no topology source: assumed {processors} PUs, one core each, one node" };
        return Build(TopologySource.ProcessorCount,
            Enumerable.Range(0, processors).Select(i => new RawPu(i, 0, i, 0, "package")).ToList(),
            new Dictionary<int, long?>(), new Dictionary<string, (int, long?)>(), all);
    }

    /// <summary>What a reader knows about one PU: core identity is (package, coreKey), LLC identity a key string.</summary>
    internal readonly record struct RawPu(int Id, int Package, long CoreKey, int Node, string LlcKey);

    /// <summary>Groups raw PUs into cores, nodes and LLC groups with dense indices in PU order.</summary>
    internal static Topology Build(TopologySource source, IReadOnlyList<RawPu> raw, IReadOnlyDictionary<int, long?> nodeMemory,
                                   IReadOnlyDictionary<string, (int Level, long? Size)> llcInfo, IReadOnlyList<string> notes)
    {
        if (raw.Count == 0) throw new FormatException($"{source}: no processors found");
        var dup = raw.GroupBy(r => r.Id).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new FormatException($"{source}: PU {dup.Key} listed twice");
        var sorted = raw.OrderBy(r => r.Id).ToList();

        var coreIndex = new Dictionary<(int, long), int>();
        var llcIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        var pus = new List<ProcessingUnit>();
        foreach (var r in sorted)
        {
            if (!coreIndex.TryGetValue((r.Package, r.CoreKey), out int core)) coreIndex[(r.Package, r.CoreKey)] = core = coreIndex.Count;
            if (!llcIndex.TryGetValue(r.LlcKey, out int llc)) llcIndex[r.LlcKey] = llc = llcIndex.Count;
            pus.Add(new ProcessingUnit(r.Id, core, r.Package, r.Node, llc));
        }
        var cores = pus.GroupBy(p => p.Core).OrderBy(g => g.Key).Select(g =>
        {
            var first = g.First();
            if (g.Any(p => p.Node != first.Node))
                throw new FormatException($"{source}: core of PUs {CpuList.Format(g.Select(p => p.Id))} spans NUMA nodes");
            return new PhysicalCore(g.Key, first.Package, first.Node, first.LlcGroup, g.Select(p => p.Id).ToList());
        }).ToList();
        var nodes = pus.GroupBy(p => p.Node).OrderBy(g => g.Key)
            .Select(g => new NumaNode(g.Key, g.Select(p => p.Id).ToList(), nodeMemory.TryGetValue(g.Key, out var m) ? m : null)).ToList();
        var llcGroups = llcIndex.OrderBy(kv => kv.Value).Select(kv =>
        {
            var info = llcInfo.TryGetValue(kv.Key, out var i) ? i : (Level: 0, Size: (long?)null);
            return new CacheGroup(kv.Value, info.Level, pus.Where(p => p.LlcGroup == kv.Value).Select(p => p.Id).ToList(), info.Size);
        }).ToList();
        var packages = pus.Select(p => p.Package).Distinct().Order().ToList();
        return new Topology(source, nodes, packages, cores, pus, llcGroups, notes.ToList());
    }

    public string Describe()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"source            {Source}");
        sb.AppendLine($"packages          {Packages.Count}");
        sb.AppendLine($"NUMA nodes        {Nodes.Count}");
        sb.AppendLine($"physical cores    {Cores.Count} ({ThreadsPerCore} PU{(ThreadsPerCore > 1 ? "s" : "")} per core)");
        sb.AppendLine($"PUs               {Pus.Count} [{CpuList.Format(Pus.Select(p => p.Id))}]");
        foreach (var n in Nodes)
            sb.AppendLine($"  node {n.Id}          PUs [{CpuList.Format(n.Pus)}]{(n.MemoryBytes is long m ? $", {m / (1024.0 * 1024 * 1024):F1} GiB" : "")}");
        foreach (var g in LlcGroups)
            sb.AppendLine($"  LLC {g.Index,-3}{(g.Level > 0 ? $"(L{g.Level})" : "    ")}     PUs [{CpuList.Format(g.Pus)}]{(g.SizeBytes is long s ? $", {s / 1024} KiB" : "")}");
        foreach (var c in Cores)
            sb.AppendLine($"  core {c.Index,-3}        package {c.Package}, node {c.Node}, PUs [{CpuList.Format(c.Pus)}]");
        foreach (var note in Notes) sb.AppendLine($"note: {note}");
        return sb.ToString();
    }
}
