using System.Globalization;
using System.Text.RegularExpressions;
using LiveDlrm.Interop;

namespace LiveDlrm.Numa;

/// <summary>Reads the topology from a sysfs tree: <c>{root}/devices/system/cpu</c> (online list, per-CPU
/// <c>topology/</c> and <c>cache/index*/</c>) and <c>{root}/devices/system/node/node*/</c>. The root is a parameter
/// so tests can point it at canned trees of machines we do not have.</summary>
internal static partial class SysfsTopologyReader
{
    public static Topology Read(string root = "/sys") => Read(root, useLibNuma: false, []);

    internal static Topology Read(string root, bool useLibNuma, IEnumerable<string> earlierNotes)
    {
        var notes = new List<string>(earlierNotes);
        string cpuDir = Path.Combine(root, "devices", "system", "cpu");
        if (!Directory.Exists(cpuDir)) throw new DirectoryNotFoundException($"{cpuDir} does not exist (not a sysfs tree)");

        string onlinePath = Path.Combine(cpuDir, "online");
        List<int> cpus = File.Exists(onlinePath)
            ? CpuList.Parse(File.ReadAllText(onlinePath), onlinePath)
            : Directory.GetDirectories(cpuDir).Select(Path.GetFileName).Select(n => CpuDirName().Match(n!))
                .Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).Order().ToList();
        if (cpus.Count == 0) throw new FormatException($"{cpuDir}: no online CPUs");

        // Node of each CPU: libnuma asks the kernel directly; otherwise node*/cpulist.
        var nodeOf = new Dictionary<int, int>();
        var nodeMemory = new Dictionary<int, long?>();
        string nodeDir = Path.Combine(root, "devices", "system", "node");
        if (useLibNuma)
        {
            foreach (int cpu in cpus)
            {
                int node = LibNuma.NodeOfCpu(cpu);
                if (node < 0) throw new IOException($"numa_node_of_cpu({cpu}) failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
                nodeOf[cpu] = node;
            }
            foreach (int node in nodeOf.Values.Distinct())
            {
                long size;
                unsafe { size = LibNuma.NodeSize64(node, null); }
                nodeMemory[node] = size > 0 ? size : null;
            }
        }
        else if (Directory.Exists(nodeDir))
        {
            foreach (var dir in Directory.GetDirectories(nodeDir))
            {
                var m = NodeDirName().Match(Path.GetFileName(dir));
                if (!m.Success) continue;
                int node = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                string list = Path.Combine(dir, "cpulist");
                if (File.Exists(list))
                    foreach (int cpu in CpuList.Parse(File.ReadAllText(list), list)) nodeOf[cpu] = node;
                nodeMemory[node] = ReadNodeMemTotal(Path.Combine(dir, "meminfo"));
            }
        }
        else notes.Add($"{nodeDir} missing: all CPUs assumed on node 0");

        bool anyCache = false, anyTopology = false;
        var llcInfo = new Dictionary<string, (int, long?)>(StringComparer.Ordinal);
        var raw = new List<Topology.RawPu>();
        foreach (int cpu in cpus)
        {
            string dir = Path.Combine(cpuDir, $"cpu{cpu}");
            string topo = Path.Combine(dir, "topology");
            int package = ReadInt(Path.Combine(topo, "physical_package_id")) ?? 0;
            int? coreId = ReadInt(Path.Combine(topo, "core_id"));
            anyTopology |= coreId is not null;
            var (llcKey, level, size) = ReadLastLevelCache(Path.Combine(dir, "cache"));
            if (llcKey is null) llcKey = $"package{package}";
            else { anyCache = true; llcInfo[llcKey] = (level, size); }
            if (!nodeOf.TryGetValue(cpu, out int node))
            {
                if (Directory.Exists(nodeDir) && !useLibNuma) notes.Add($"CPU {cpu} is in no node*/cpulist: assumed node 0");
                node = 0;
            }
            raw.Add(new Topology.RawPu(cpu, package, coreId ?? cpu, node, llcKey));
        }
        if (!anyTopology) notes.Add("no cpu*/topology/core_id: each CPU assumed to be its own core (SMT unknown)");
        if (!anyCache) notes.Add("no cpu*/cache/ information: last-level cache assumed shared per package");
        return Topology.Build(useLibNuma ? TopologySource.LibNuma : TopologySource.Sysfs, raw, nodeMemory, llcInfo, notes);
    }

    /// <summary>The highest-level data/unified cache of a CPU, keyed by its level and shared CPU list (identical
    /// lists on different CPUs are the same cache instance).</summary>
    static (string? Key, int Level, long? Size) ReadLastLevelCache(string cacheDir)
    {
        if (!Directory.Exists(cacheDir)) return (null, 0, null);
        string? bestKey = null; int bestLevel = 0; long? bestSize = null;
        foreach (var index in Directory.GetDirectories(cacheDir, "index*"))
        {
            int? level = ReadInt(Path.Combine(index, "level"));
            string? type = ReadText(Path.Combine(index, "type"));
            string? shared = ReadText(Path.Combine(index, "shared_cpu_list"));
            if (level is not int l || type is "Instruction" || shared is null) continue;
            if (l <= bestLevel) continue;
            bestLevel = l;
            bestKey = $"L{l}:{CpuList.Format(CpuList.Parse(shared, Path.Combine(index, "shared_cpu_list")))}";
            bestSize = ParseSize(ReadText(Path.Combine(index, "size")));
        }
        return (bestKey, bestLevel, bestSize);
    }

    static long? ParseSize(string? s)
    {
        if (string.IsNullOrEmpty(s)) return null;
        long mult = s[^1] switch { 'K' => 1024L, 'M' => 1024L * 1024, 'G' => 1024L * 1024 * 1024, _ => 1 };
        string digits = char.IsDigit(s[^1]) ? s : s[..^1];
        return long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v * mult : null;
    }

    static long? ReadNodeMemTotal(string meminfo)
    {
        string? text = ReadText(meminfo);
        if (text is null) return null;
        var m = MemTotal().Match(text);
        return m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) * 1024 : null;
    }

    static string? ReadText(string path) => File.Exists(path) ? File.ReadAllText(path).Trim() : null;

    static int? ReadInt(string path)
    {
        string? s = ReadText(path);
        if (s is null) return null;
        return int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) ? v
            : throw new FormatException($"{path}: '{s}' is not an integer");
    }

    [GeneratedRegex(@"^cpu(\d+)$")] private static partial Regex CpuDirName();
    [GeneratedRegex(@"^node(\d+)$")] private static partial Regex NodeDirName();
    [GeneratedRegex(@"MemTotal:\s*(\d+)\s*kB")] private static partial Regex MemTotal();
}
