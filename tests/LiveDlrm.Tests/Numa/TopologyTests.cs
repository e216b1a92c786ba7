using LiveDlrm.Interop;
using LiveDlrm.Numa;

namespace LiveDlrm.Tests.Numa;

internal class TopologyTests
{
    [Test]
    public void TwoSocketSmtTreeGivesNodesCoresSiblingsAndLlcGroups()
    {
        using var tree = CannedSysfs.TwoSocketSmt();
        var t = SysfsTopologyReader.Read(tree.Root);

        Assert.That(t.Source, Is.EqualTo(TopologySource.Sysfs));
        Assert.That(t.Pus, Has.Count.EqualTo(16));
        Assert.That(t.Packages, Is.EqualTo(new[] { 0, 1 }));
        Assert.That(t.Cores, Has.Count.EqualTo(8), "core_id repeats per socket: cores are (package, core_id)");
        Assert.That(t.ThreadsPerCore, Is.EqualTo(2));
        Assert.That(t.SmtSiblings(3), Is.EqualTo(new[] { 3, 11 }));
        Assert.That(t.SmtSiblings(12), Is.EqualTo(new[] { 4, 12 }));
        Assert.That(t.Nodes.Select(n => n.Id), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(t.Nodes[1].Pus, Is.EqualTo(new[] { 4, 5, 6, 7, 12, 13, 14, 15 }));
        Assert.That(t.Nodes[0].MemoryBytes, Is.EqualTo(64L << 30));
        Assert.That(t.LlcGroups, Has.Count.EqualTo(2));
        Assert.That(t.LlcGroups.Select(g => g.Level), Is.All.EqualTo(3));
        Assert.That(t.LlcGroups[0].SizeBytes, Is.EqualTo(32L << 20));
        Assert.That(t.LlcGroups[0].Pus, Is.EqualTo(new[] { 0, 1, 2, 3, 8, 9, 10, 11 }));
        Assert.That(t.Pus.All(p => t.Cores[p.Core].Node == p.Node && t.Cores[p.Core].Pus.Contains(p.Id)));
        Assert.That(t.Notes, Is.Empty);
    }

    [Test]
    public void OneNodeBoxHasFourCoresOneLlcOneNode()
    {
        using var tree = CannedSysfs.OneNodeBox();
        var t = SysfsTopologyReader.Read(tree.Root);
        Assert.That(t.Nodes, Has.Count.EqualTo(1));
        Assert.That(t.Cores, Has.Count.EqualTo(4));
        Assert.That(t.ThreadsPerCore, Is.EqualTo(1));
        Assert.That(t.LlcGroups.Single().Pus, Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(t.LlcGroups.Single().Level, Is.EqualTo(3), "the L3, not a per-core L2, is the last level");
    }

    [Test]
    public void TreeWithoutNodesOrCachesAssumesOneNodeAndSaysSo()
    {
        using var tree = new CannedSysfs();
        tree.Write("devices/system/cpu/online", "0-1");
        tree.Write("devices/system/cpu/cpu0/topology/core_id", "0");
        tree.Write("devices/system/cpu/cpu1/topology/core_id", "1");
        var t = SysfsTopologyReader.Read(tree.Root);
        Assert.That(t.Nodes.Single().Pus, Is.EqualTo(new[] { 0, 1 }));
        Assert.That(t.Notes, Has.Some.Contains("node").And.Some.Contains("cache"));
    }

    [Test]
    public void MalformedCpulistIsAnErrorNamingTheFile()
    {
        using var tree = CannedSysfs.OneNodeBox();
        tree.Write("devices/system/node/node0/cpulist", "0-x");
        var e = Assert.Throws<FormatException>(() => SysfsTopologyReader.Read(tree.Root));
        Assert.That(e!.Message, Does.Contain("node0").And.Contain("'x'"));
    }

    [Test]
    public void MissingTreeIsAnIOException() =>
        Assert.That(() => SysfsTopologyReader.Read(Path.Combine(Path.GetTempPath(), "no-such-sysfs-" + Guid.NewGuid())), Throws.InstanceOf<IOException>());

    [TestCase("0-3,8,10-11", new[] { 0, 1, 2, 3, 8, 10, 11 })]
    [TestCase("  \n", new int[0])]
    [TestCase("5", new[] { 5 })]
    public void CpuListRoundTrips(string text, int[] ids)
    {
        Assert.That(CpuList.Parse(text), Is.EqualTo(ids));
        Assert.That(CpuList.Parse(CpuList.Format(ids)), Is.EqualTo(ids));
    }

    [TestCase("3-1")]
    [TestCase("a")]
    [TestCase("-1")]
    public void CpuListRejectsGarbage(string text) => Assert.Throws<FormatException>(() => CpuList.Parse(text));

    [Test]
    public void ThisMachineAgreesAcrossSources()
    {
        var fromSys = SysfsTopologyReader.Read("/sys");
        Assert.That(fromSys.Pus.Select(p => p.Id), Is.EqualTo(Enumerable.Range(0, Environment.ProcessorCount)),
            "this test assumes all processors are online and allowed, as on the project machine");
        if (HwlocTopologyReader.IsAvailable)
        {
            var fromHwloc = HwlocTopologyReader.Read();
            Assert.That(fromHwloc.Source, Is.EqualTo(TopologySource.Hwloc));
            Assert.That(fromHwloc.Pus, Has.Count.EqualTo(Environment.ProcessorCount), "hwloc PU count");
            Assert.That(fromHwloc.Pus.Select(p => p.Id), Is.EqualTo(fromSys.Pus.Select(p => p.Id)));
            Assert.That(fromHwloc.Cores.Select(c => c.Pus), Is.EqualTo(fromSys.Cores.Select(c => c.Pus)), "SMT grouping");
            Assert.That(fromHwloc.Nodes.Select(n => n.Pus), Is.EqualTo(fromSys.Nodes.Select(n => n.Pus)), "node membership");
            Assert.That(fromHwloc.Nodes.Select(n => n.MemoryBytes), Is.All.GreaterThan(0));
        }
        if (NumaBuffer.IsAvailable)
        {
            var fromNuma = SysfsTopologyReader.Read("/sys", useLibNuma: true, []);
            Assert.That(fromNuma.Source, Is.EqualTo(TopologySource.LibNuma));
            Assert.That(fromNuma.Nodes.Select(n => n.Pus), Is.EqualTo(fromSys.Nodes.Select(n => n.Pus)));
        }
        var detected = Topology.Detect();
        Assert.That(detected.Source, Is.EqualTo(HwlocTopologyReader.IsAvailable ? TopologySource.Hwloc : NumaBuffer.IsAvailable ? TopologySource.LibNuma : TopologySource.Sysfs));
    }

    [Test]
    public void BuildTheProjectNeedsHwlocAndLibNumaPresentForTheseTests()
    {
        // build.sh installs libnuma1 and libhwloc15: if they do not load, the tests above silently cover less.
        Assert.That(NativeLibraries.IsAvailable(Libraries.Hwloc), "libhwloc.so.15 should load (build.sh installs libhwloc15)");
        Assert.That(NativeLibraries.IsAvailable(Libraries.Numa), "libnuma.so.1 should load (build.sh installs libnuma1)");
    }
}
