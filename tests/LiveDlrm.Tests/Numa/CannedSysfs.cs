using LiveDlrm.Numa;

namespace LiveDlrm.Tests.Numa;

/// <summary>Builds sysfs trees of machines we do not have, laid out like the kernel's (devices/system/cpu and
/// devices/system/node), in a temporary directory removed on Dispose.</summary>
sealed class CannedSysfs : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "livedlrm-sysfs-" + Guid.NewGuid().ToString("N"));

    public void Dispose() { if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true); }

    public void Write(string relative, string text)
    {
        string path = Path.Combine(Root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text + "\n");
    }

    public void Cpu(int cpu, int package, int coreId, IEnumerable<int> siblings, params (int Level, string Type, IEnumerable<int> Shared, string Size)[] caches)
    {
        string d = $"devices/system/cpu/cpu{cpu}";
        Write($"{d}/topology/physical_package_id", package.ToString());
        Write($"{d}/topology/core_id", coreId.ToString());
        Write($"{d}/topology/thread_siblings_list", CpuList.Format(siblings));
        for (int i = 0; i < caches.Length; i++)
        {
            Write($"{d}/cache/index{i}/level", caches[i].Level.ToString());
            Write($"{d}/cache/index{i}/type", caches[i].Type);
            Write($"{d}/cache/index{i}/shared_cpu_list", CpuList.Format(caches[i].Shared));
            Write($"{d}/cache/index{i}/size", caches[i].Size);
        }
    }

    public void Node(int node, IEnumerable<int> cpus, long memKb)
    {
        Write($"devices/system/node/node{node}/cpulist", CpuList.Format(cpus));
        Write($"devices/system/node/node{node}/meminfo", $"Node {node} MemTotal:       {memKb} kB\nNode {node} MemFree:        1000 kB");
    }

    /// <summary>2 sockets × 4 cores × 2 SMT threads, Linux numbering: CPUs 0-7 are the first thread of each core
    /// (0-3 socket 0, 4-7 socket 1), 8-15 their siblings; one L3 and one NUMA node per socket.</summary>
    public static CannedSysfs TwoSocketSmt()
    {
        var t = new CannedSysfs();
        t.Write("devices/system/cpu/online", "0-15");
        for (int cpu = 0; cpu < 16; cpu++)
        {
            int first = cpu % 8, package = first / 4, core = first % 4;
            int[] siblings = [first, first + 8];
            var socket = Enumerable.Range(package * 4, 4).Concat(Enumerable.Range(8 + package * 4, 4)).ToArray();
            t.Cpu(cpu, package, core, siblings,
                (1, "Data", siblings, "48K"), (1, "Instruction", siblings, "32K"), (2, "Unified", siblings, "2048K"), (3, "Unified", socket, "32768K"));
        }
        t.Node(0, [0, 1, 2, 3, 8, 9, 10, 11], 64L * 1024 * 1024);
        t.Node(1, [4, 5, 6, 7, 12, 13, 14, 15], 64L * 1024 * 1024);
        return t;
    }

    /// <summary>A 4-core box without SMT, one node, one shared L3.</summary>
    public static CannedSysfs OneNodeBox()
    {
        var t = new CannedSysfs();
        t.Write("devices/system/cpu/online", "0-3");
        for (int cpu = 0; cpu < 4; cpu++)
            t.Cpu(cpu, 0, cpu, [cpu], (1, "Data", [cpu], "32K"), (2, "Unified", [cpu], "512K"), (3, "Unified", [0, 1, 2, 3], "8192K"));
        t.Node(0, [0, 1, 2, 3], 16L * 1024 * 1024);
        return t;
    }
}
