using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveDlrm.Interop;
using LiveDlrm.Numa;

namespace LiveDlrm.Tests.Numa;

internal class HwlocInteropTests
{
    /// <summary>Numbers printed by hwloc_layout.c (next to this file) against hwloc.h of 2.9.0.</summary>
    [Test]
    public void ObjectLayoutMatchesHwloc29Header()
    {
        Assert.That(Unsafe.SizeOf<HwlocObj>(), Is.EqualTo(248));
        var expected = new Dictionary<string, int>
        {
            [nameof(HwlocObj.Type)] = 0, [nameof(HwlocObj.OsIndex)] = 16, [nameof(HwlocObj.TotalMemory)] = 32,
            [nameof(HwlocObj.Attr)] = 40, [nameof(HwlocObj.Depth)] = 48, [nameof(HwlocObj.LogicalIndex)] = 52,
            [nameof(HwlocObj.Parent)] = 72, [nameof(HwlocObj.Arity)] = 104, [nameof(HwlocObj.Children)] = 112,
            [nameof(HwlocObj.SymmetricSubtree)] = 136, [nameof(HwlocObj.MemoryArity)] = 140,
            [nameof(HwlocObj.Cpuset)] = 184, [nameof(HwlocObj.Nodeset)] = 200, [nameof(HwlocObj.InfosCount)] = 224,
            [nameof(HwlocObj.GpIndex)] = 240,
        };
        foreach (var (field, offset) in expected)
            Assert.That((int)Marshal.OffsetOf<HwlocObj>(field), Is.EqualTo(offset), field);
        Assert.That(Unsafe.SizeOf<HwlocCacheAttr>(), Is.EqualTo(24));
        Assert.That((int)Marshal.OffsetOf<HwlocCacheAttr>(nameof(HwlocCacheAttr.Associativity)), Is.EqualTo(16));
    }

    [Test]
    public unsafe void LiveObjectsReadThroughTheLayoutAreConsistent()
    {
        Assume.That(HwlocTopologyReader.IsAvailable, "hwloc not installed");
        using var topology = HwlocTopologyReader.Load();
        int puDepth = Hwloc.GetTypeDepth(topology, Hwloc.ObjPU);
        Assert.That(Hwloc.GetNbObjsByDepth(topology, puDepth), Is.EqualTo((uint)Environment.ProcessorCount));
        var root = Hwloc.GetObjByDepth(topology, 0, 0);
        Assert.That(root->Type, Is.EqualTo(Hwloc.ObjMachine));
        Assert.That(root->Parent, Is.EqualTo((nint)0));
        Assert.That(Hwloc.BitmapWeight(root->Cpuset), Is.EqualTo(Environment.ProcessorCount));
        for (uint i = 0; i < Hwloc.GetNbObjsByDepth(topology, puDepth); i++)
        {
            var pu = Hwloc.GetObjByDepth(topology, puDepth, i);
            // A misread offset would show as a wrong type/depth/index or a cpuset that is not {os_index}.
            Assert.That(pu->Type, Is.EqualTo(Hwloc.ObjPU));
            Assert.That(pu->Depth, Is.EqualTo(puDepth));
            Assert.That(pu->LogicalIndex, Is.EqualTo(i));
            Assert.That(Hwloc.BitmapMembers(pu->Cpuset), Is.EqualTo(new[] { (int)pu->OsIndex }));
            Assert.That(pu->Arity, Is.Zero);
            int depth = 0;
            for (var o = (HwlocObj*)pu->Parent; o != null; o = (HwlocObj*)o->Parent) depth++;
            Assert.That(depth, Is.EqualTo(puDepth), "parent chain length equals the PU depth");
        }
        Assert.That(Hwloc.GetNbObjsByDepth(topology, Hwloc.TypeDepthNumaNode), Is.GreaterThanOrEqualTo(1u));
    }

    [Test]
    public void HwlocBindsTheCallingThreadOnly()
    {
        Assume.That(HwlocTopologyReader.IsAvailable, "hwloc not installed");
        int target = Environment.ProcessorCount - 1;
        IReadOnlyList<int>? inside = null;
        var t = new Thread(() => { HwlocTopologyReader.BindCurrentThread([target]); inside = ThreadAffinity.GetCurrentThreadAffinity(); });
        t.Start(); t.Join();
        Assert.That(inside, Is.EqualTo(new[] { target }));
        Assert.That(ThreadAffinity.GetCurrentThreadAffinity(), Has.Count.EqualTo(Environment.ProcessorCount), "the test thread itself is unaffected");
    }
}
