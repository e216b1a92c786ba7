using System.CommandLine;
using LiveDlrm.CommandLine;
using LiveDlrm.Interop;
using LiveDlrm.Numa;
using LiveDlrm.Scheduling.Resctrl;

namespace LiveDlrm.Cli.Commands;

internal sealed class TopologyCommand : CliCommand
{
    readonly Option<string?> _sysRoot = Opt.Text("--sys-root", "read a sysfs tree at DIR instead of asking hwloc/libnuma (e.g. a canned tree)", helpName: "DIR");
    readonly Option<string?> _hide = Opt.Text("--hide", "treat these native libraries as missing, comma-separated logical names (livedlrm:hwloc, livedlrm:numa): shows what the engine does without them", helpName: "LIBS");
    readonly Option<double> _share = Opt.Double("--trainer-share", "fraction of each node's physical cores for the trainer", 0.25, 0.01, 0.99);
    readonly Option<string?> _resctrlRoot = Opt.Text("--resctrl-root", "resctrl mount to probe", ResctrlSupport.DefaultRoot, "DIR");

    public TopologyCommand() : base("topology", "the machine (NUMA nodes, cores, SMT, LLC groups), the inference/trainer placement plan, and QoS support")
    {
        Add(_sysRoot); Add(_hide); Add(_share); Add(_resctrlRoot);
    }

    protected override int Run(ParseResult result)
    {
        string? sysRoot = result.GetValue(_sysRoot);
        string? hide = result.GetValue(_hide);
        double share = result.GetValue(_share);
        string resctrlRoot = result.GetValue(_resctrlRoot)!;

        if (hide is not null)
            foreach (var lib in hide.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!NativeLibraries.Known.Contains(lib)) throw new UsageException($"--hide: unknown library '{lib}' (known: {string.Join(", ", NativeLibraries.Known)})");
                NativeLibraries.Hidden.Add(lib);
            }
        if (sysRoot is not null && !Directory.Exists(sysRoot)) throw new UsageException($"--sys-root: directory '{sysRoot}' does not exist");

        Console.WriteLine($"hwloc             {(HwlocTopologyReader.IsAvailable ? NativeLibraries.LoadedFrom(Libraries.Hwloc) : "unavailable")}");
        Console.WriteLine($"libnuma           {(NumaBuffer.IsAvailable ? NativeLibraries.LoadedFrom(Libraries.Numa) : "unavailable")}");
        var topology = sysRoot is null ? Topology.Detect() : SysfsTopologyReader.Read(sysRoot);
        Console.Write(topology.Describe());
        Console.WriteLine();
        Console.WriteLine("plan");
        var plan = ResourcePlan.Create(topology, new PlanOptions { TrainerCoreShare = share });
        Console.Write(plan.Describe());
        var p = plan.PlaceTable("example-1GiB", 1L << 30, TableUser.Inference);
        Console.WriteLine($"table placement   a 1 GiB inference table → {p.Policy} on node(s) [{CpuList.Format(p.Nodes)}]: {p.Reason}");
        Console.WriteLine();
        var support = ResctrlSupport.Detect(resctrlRoot);
        Console.WriteLine($"resctrl           {support.Describe()}");
        return 0;
    }
}
