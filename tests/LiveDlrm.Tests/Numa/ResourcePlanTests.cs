using System.Diagnostics;
using LiveDlrm.Numa;

namespace LiveDlrm.Tests.Numa;

internal class ResourcePlanTests
{
    static void AssertInvariants(ResourcePlan plan)
    {
        var t = plan.Topology;
        var inference = plan.InferencePus.ToHashSet();
        var trainer = plan.TrainerPus.ToHashSet();
        Assert.That(inference.Union(trainer), Is.EquivalentTo(t.Pus.Select(p => p.Id)), "every PU has a role");
        if (!plan.SharesPus)
        {
            Assert.That(inference.Intersect(trainer), Is.Empty, "no PU in both roles");
            var inferenceCores = inference.Select(p => t.Pu(p).Core).ToHashSet();
            Assert.That(trainer.Select(p => t.Pu(p).Core).Where(inferenceCores.Contains), Is.Empty, "trainer never on an inference worker's physical core");
        }
        else Assert.That(plan.Notes, Has.Some.Contains("SHARE"), "sharing is said explicitly");
        Assert.That(plan.InferenceWorkerPus.SelectMany(p => p), Is.SubsetOf(inference));
        Assert.That(plan.TrainerThreadPus.SelectMany(p => p), Is.SubsetOf(trainer));
        Assert.That(plan.TrainerThreadPus, Is.Not.Empty);
        Assert.That(plan.InferenceWorkerPus, Is.Not.Empty);
    }

    [Test]
    public void TwoSocketSmtSplitsWholeCoresPerNode()
    {
        using var tree = CannedSysfs.TwoSocketSmt();
        var plan = ResourcePlan.Create(SysfsTopologyReader.Read(tree.Root));
        AssertInvariants(plan);
        Assert.That(plan.Nodes, Has.Count.EqualTo(2));
        // 4 cores a node, a quarter to the trainer: the last core of each socket with both its SMT threads.
        Assert.That(plan.Nodes[0].TrainerPus, Is.EqualTo(new[] { 3, 11 }));
        Assert.That(plan.Nodes[1].TrainerPus, Is.EqualTo(new[] { 7, 15 }));
        Assert.That(plan.InferenceWorkerPus, Has.Count.EqualTo(12), "one inference worker per inference PU");
        Assert.That(plan.TrainerThreadPus, Is.EqualTo(new[] { new[] { 3, 11 }, new[] { 7, 15 } }), "one trainer thread per trainer core");
        Assert.That(plan.SharesPus, Is.False);
    }

    [Test]
    public void TablePlacementIsInterleavedWhenReadFromBothSocketsAndLarge()
    {
        using var tree = CannedSysfs.TwoSocketSmt();
        var plan = ResourcePlan.Create(SysfsTopologyReader.Read(tree.Root));
        var big = plan.PlaceTable("t_big", 1L << 30, TableUser.Inference);
        Assert.That(big.Policy, Is.EqualTo(MemoryPolicy.Interleaved));
        Assert.That(big.Nodes, Is.EqualTo(new[] { 0, 1 }));
        var small = plan.PlaceTable("t_small", 1L << 20, TableUser.Inference);
        Assert.That(small.Policy, Is.EqualTo(MemoryPolicy.NodeLocal));
        Assert.That(small.Nodes, Has.Count.EqualTo(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => plan.PlaceTable("t", -1, TableUser.Trainer));
    }

    [Test]
    public void TrainerOnOneNodeGetsNodeLocalTrainerTables()
    {
        using var tree = CannedSysfs.TwoSocketSmt();
        var topology = SysfsTopologyReader.Read(tree.Root);
        var plan = ResourcePlan.Create(topology, new PlanOptions { TrainerCoreShare = 0.25 });
        // Both nodes host trainer cores here, so a big trainer table is interleaved too; a small one goes node-local.
        Assert.That(plan.PlaceTable("adapters", 4 << 20, TableUser.Trainer).Policy, Is.EqualTo(MemoryPolicy.NodeLocal));
    }

    [Test]
    public void OneNodeBoxGivesTheTrainerOneCore()
    {
        using var tree = CannedSysfs.OneNodeBox();
        var plan = ResourcePlan.Create(SysfsTopologyReader.Read(tree.Root));
        AssertInvariants(plan);
        Assert.That(plan.TrainerPus, Is.EqualTo(new[] { 3 }));
        Assert.That(plan.InferencePus, Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(plan.PlaceTable("t", 1L << 30, TableUser.Inference).Policy, Is.EqualTo(MemoryPolicy.NodeLocal));
        Assert.That(plan.Notes, Has.Some.Contains("share a last-level cache"));
    }

    [Test]
    public void SingleCoreMachineSharesAndSaysSo()
    {
        var plan = ResourcePlan.Create(Topology.FromProcessorCount(1));
        AssertInvariants(plan);
        Assert.That(plan.SharesPus);
        Assert.That(plan.InferencePus, Is.EqualTo(plan.TrainerPus));
    }

    [Test]
    public void MoreWorkersThanPusWrapAndAreNoted()
    {
        using var tree = CannedSysfs.OneNodeBox();
        var plan = ResourcePlan.Create(SysfsTopologyReader.Read(tree.Root), new PlanOptions { InferenceWorkers = 5 });
        Assert.That(plan.InferenceWorkerPus.Select(p => p.Single()), Is.EqualTo(new[] { 0, 1, 2, 0, 1 }));
        Assert.That(plan.Notes, Has.Some.Contains("round-robin"));
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    [TestCase(double.NaN)]
    public void BadShareIsRejected(double share) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => ResourcePlan.Create(Topology.FromProcessorCount(4), new PlanOptions { TrainerCoreShare = share }));

    [Test]
    public void ThisMachinePlanSeparatesRolesAndPinsEveryThreadWhereItSays()
    {
        var plan = ResourcePlan.Create(Topology.Detect());
        AssertInvariants(plan);
        if (Environment.ProcessorCount >= 2) Assert.That(plan.SharesPus, Is.False, "2+ cores: no sharing");

        // Threads pin themselves through the plan's hooks; the check runs inside each thread with sched_getaffinity.
        var seen = new IReadOnlyList<int>?[plan.InferenceWorkerPus.Count + plan.TrainerThreadPus.Count];
        var threads = new List<Thread>();
        for (int i = 0; i < plan.InferenceWorkerPus.Count; i++)
        {
            int w = i;
            threads.Add(new Thread(() => { plan.InferenceWorkerStart(w); seen[w] = ThreadAffinity.GetCurrentThreadAffinity(); }));
        }
        for (int i = 0; i < plan.TrainerThreadPus.Count; i++)
        {
            int w = i;
            threads.Add(new Thread(() => { plan.TrainerThreadStart(w); seen[plan.InferenceWorkerPus.Count + w] = ThreadAffinity.GetCurrentThreadAffinity(); }));
        }
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        for (int i = 0; i < plan.InferenceWorkerPus.Count; i++) Assert.That(seen[i], Is.EqualTo(plan.InferenceWorkerPus[i]), $"inference worker {i}");
        for (int i = 0; i < plan.TrainerThreadPus.Count; i++)
            Assert.That(seen[plan.InferenceWorkerPus.Count + i], Is.EqualTo(plan.TrainerThreadPus[i]), $"trainer thread {i}");
    }

    [Test]
    public void PlanHooksSetThreadPrioritiesOrSayTheyCouldNot()
    {
        var plan = ResourcePlan.Create(Topology.Detect(), new PlanOptions { InferenceNice = -3, TrainerNice = 12 });
        int inferenceNice = 99, trainerNice = 99, before = 99;
        var a = new Thread(() => { before = ThreadAffinity.GetNice(ThreadAffinity.CurrentThreadId()); plan.InferenceWorkerStart(0); inferenceNice = ThreadAffinity.GetNice(ThreadAffinity.CurrentThreadId()); });
        var b = new Thread(() => { plan.TrainerThreadStart(0); trainerNice = ThreadAffinity.GetNice(ThreadAffinity.CurrentThreadId()); });
        a.Start(); a.Join(); b.Start(); b.Join();
        Assert.That(trainerNice, Is.EqualTo(12), "raising nice needs no privilege");
        if (plan.NiceRefused) Assert.That(inferenceNice, Is.EqualTo(before), "refused: unchanged, and the plan says so");
        else Assert.That(inferenceNice, Is.EqualTo(-3));
        Assert.That(plan.Describe(), Does.Contain("inference nice -3"));
        Assert.Throws<ArgumentOutOfRangeException>(() => ThreadAffinity.TrySetCurrentThreadNice(20));
        Assert.That(ResourcePlan.Create(Topology.FromProcessorCount(1)).TrainerNice, Is.EqualTo(10), "shared PUs: the trainer yields");
        Assert.That(ResourcePlan.Create(Topology.FromProcessorCount(4)).TrainerNice, Is.Null, "own cores: left alone");
    }

    [Test]
    public void IdlePolicyAppliesToTheCallingThreadOnly()
    {
        bool set = false, idle = false, otherIdle = true;
        int tid = 0;
        var t = new Thread(() => { set = ThreadAffinity.TrySetCurrentThreadIdlePolicy(); tid = ThreadAffinity.CurrentThreadId(); idle = ThreadAffinity.IsIdlePolicy(tid); });
        t.Start(); t.Join();
        otherIdle = ThreadAffinity.IsIdlePolicy(ThreadAffinity.CurrentThreadId());
        Assert.That(set, Is.True, "entering SCHED_IDLE needs no privilege");
        Assert.That(idle, Is.True, "the kernel reports SCHED_IDLE for that thread");
        Assert.That(otherIdle, Is.False, "the policy is per thread: the test thread keeps its own");
    }

    [Test]
    public void PinningToAnAbsentPuFailsWithTheErrno()
    {
        Exception? error = null;
        var t = new Thread(() => { try { ThreadAffinity.PinCurrentThread([1000]); } catch (Exception e) { error = e; } });
        t.Start(); t.Join();
        Assert.That(error, Is.TypeOf<InvalidOperationException>());
        Assert.That(error!.Message, Does.Contain("errno").And.Contain("1000"));
        Assert.Throws<ArgumentOutOfRangeException>(() => ThreadAffinity.PinCurrentThread([5000]));
        Assert.Throws<ArgumentException>(() => ThreadAffinity.PinCurrentThread([]));
    }

    [Test]
    public void CurrentThreadIdIsALinuxTidOfThisProcess()
    {
        int tid = ThreadAffinity.CurrentThreadId();
        Assert.That(Directory.Exists($"/proc/{Environment.ProcessId}/task/{tid}"));
    }
}
