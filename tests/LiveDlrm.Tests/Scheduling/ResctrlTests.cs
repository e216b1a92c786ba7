using LiveDlrm.Scheduling.Resctrl;

namespace LiveDlrm.Tests.Scheduling;

/// <summary>The resctrl file protocol against a directory laid out like /sys/fs/resctrl on a 2-domain machine with
/// L3 CAT (12 ways) and Intel-style MB (percent, step 10).</summary>
internal class ResctrlTests
{
    string _root = null!;

    [SetUp]
    public void CreateTree()
    {
        _root = Path.Combine(Path.GetTempPath(), "livedlrm-resctrl-" + Guid.NewGuid().ToString("N"));
        Write("info/L3/cbm_mask", "fff");
        Write("info/L3/min_cbm_bits", "1");
        Write("info/L3/num_closids", "16");
        Write("info/MB/min_bandwidth", "10");
        Write("info/MB/bandwidth_gran", "10");
        Write("info/MB/num_closids", "8");
        Write("info/last_cmd_status", "ok");
        Write("schemata", "    L3:0=fff;1=fff\n    MB:0=100;1=100\n");
        Write("tasks", "1\n");
    }

    [TearDown]
    public void RemoveTree() { if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true); }

    void Write(string relative, string text)
    {
        string p = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        File.WriteAllText(p, text.EndsWith('\n') ? text : text + "\n");
    }

    string[] Groups() => Directory.GetDirectories(_root).Select(Path.GetFileName).Where(n => n != "info").Select(n => n!).Order().ToArray();

    [Test]
    public void DetectReadsInfoAndDomains()
    {
        var s = ResctrlSupport.Detect(_root);
        Assert.That(s.IsUsable, s.Reason);
        Assert.That(s.L3!.Ways, Is.EqualTo(12));
        Assert.That(s.L3.NumClosids, Is.EqualTo(16));
        Assert.That(s.Mb!.Granularity, Is.EqualTo(10));
        Assert.That(s.Mb.MaxValue, Is.EqualTo(100));
        Assert.That(s.L3Domains, Is.EqualTo(new[] { 0, 1 }));
        Assert.That(s.NumClosids, Is.EqualTo(8), "the scarcer resource limits groups");
    }

    [Test]
    public void AbsentOrForeignDirectoriesAreUnavailableWithAReason()
    {
        var missing = ResctrlSupport.Detect(Path.Combine(_root, "nope"));
        Assert.That(missing.IsUsable, Is.False);
        Assert.That(missing.Reason, Does.Contain("not mounted"));
        Directory.Delete(Path.Combine(_root, "info"), recursive: true);
        Assert.That(ResctrlSupport.Detect(_root).Reason, Does.Contain("no info/"));
    }

    [Test]
    public void TryCreateOnAnAbsentMountSaysSoAndReturnsNull()
    {
        var log = new List<string>();
        var groups = ResctrlGroups.TryCreate(ResctrlSupport.Detect(Path.Combine(_root, "nope")), new ResctrlAllocation(), new ListLogger(log));
        Assert.That(groups, Is.Null);
        // "Once per process": another test may have been first, so at most one line here.
        Assert.That(log, Has.Count.LessThanOrEqualTo(1));
        Assert.That(log, Has.All.Contains("software QoS only"));
    }

    [Test]
    public void CreateWritesDisjointSchemataMovesTidsAndDisposeRemovesGroups()
    {
        var support = ResctrlSupport.Detect(_root);
        using (var g = ResctrlGroups.Create(support, new ResctrlAllocation(InferenceL3Share: 0.75, TrainerBandwidthPercent: 25)))
        {
            Assert.That(Groups(), Is.EqualTo(new[] { "livedlrm-inference", "livedlrm-trainer" }));
            Assert.That(File.ReadAllText(Path.Combine(g.InferenceGroup, "schemata")), Is.EqualTo("L3:0=ff8;1=ff8\nMB:0=100;1=100\n"));
            Assert.That(File.ReadAllText(Path.Combine(g.TrainerGroup, "schemata")), Is.EqualTo("L3:0=7;1=7\nMB:0=30;1=30\n"),
                "3 of 12 ways (low bits), 25 % rounded up to the 10 % step");
            g.AssignInference([101, 102]);
            g.AssignTrainer([201]);
            Assert.That(File.ReadAllLines(Path.Combine(g.InferenceGroup, "tasks")), Is.EqualTo(new[] { "101", "102" }));
            Assert.That(File.ReadAllLines(Path.Combine(g.TrainerGroup, "tasks")), Is.EqualTo(new[] { "201" }));
            Assert.Throws<ArgumentOutOfRangeException>(() => g.AssignTrainer([0]));
        }
        Assert.That(Groups(), Is.Empty, "dispose removes both groups");
    }

    [Test]
    public void AmdAbsoluteBandwidthIsScaledFromTheDefaultGroupsValue()
    {
        Write("schemata", "L3:0=ffff\nMB:0=2048\n");
        Write("info/L3/cbm_mask", "ffff");
        Write("info/MB/min_bandwidth", "0");
        Write("info/MB/bandwidth_gran", "1");
        var (inference, trainer) = ResctrlGroups.ComputeSchemata(ResctrlSupport.Detect(_root), new ResctrlAllocation(0.75, 30));
        Assert.That(inference, Is.EqualTo("L3:0=fff0\nMB:0=2048\n"));
        Assert.That(trainer, Is.EqualTo("L3:0=f\nMB:0=614\n"));
    }

    [Test]
    public void TooFewWaysToSplitIsAClearError()
    {
        Write("info/L3/cbm_mask", "3");
        Write("info/L3/min_cbm_bits", "2");
        var e = Assert.Throws<ResctrlException>(() => ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation()));
        Assert.That(e!.Message, Does.Contain("2 ways").And.Contain("at least 2"));
        Assert.That(Groups(), Is.Empty);
    }

    [Test]
    public void NoFreeClosidIsAClearErrorAndCreatesNothing()
    {
        Write("info/MB/num_closids", "3");
        Directory.CreateDirectory(Path.Combine(_root, "someone-else"));
        var e = Assert.Throws<ResctrlException>(() => ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation()));
        Assert.That(e!.Message, Does.Contain("no free CLOSID").And.Contain("has 3, 2 in use").And.Contain("someone-else"));
        Assert.That(Groups(), Is.EqualTo(new[] { "someone-else" }));
    }

    [Test]
    public void LeftoverGroupOfAnEarlierRunIsReportedNotReused()
    {
        Directory.CreateDirectory(Path.Combine(_root, "livedlrm-trainer"));
        var e = Assert.Throws<ResctrlException>(() => ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation()));
        Assert.That(e!.Message, Does.Contain("livedlrm-trainer already exists"));
        Assert.That(Groups(), Is.EqualTo(new[] { "livedlrm-trainer" }), "the inference group was not created either");
    }

    /// <summary>A "kernel" that refuses one operation the way resctrl does (EINVAL on a bad schemata write, ENOSPC on
    /// mkdir when CLOSIDs run out) and records the explanation in last_cmd_status.</summary>
    sealed class RefusingFs(string root, Func<string, bool> refuseWrite, Func<string, bool> refuseMkdir) : ResctrlFileSystem
    {
        public override void Write(string path, string text)
        {
            if (refuseWrite(path))
            {
                File.WriteAllText(Path.Combine(root, "info", "last_cmd_status"), "Invalid argument: mask ff8 has non-consecutive 1-bits\n");
                throw new IOException("Invalid argument");
            }
            base.Write(path, text);
        }

        public override void CreateDirectory(string path)
        {
            if (refuseMkdir(path)) throw new IOException("No space left on device");
            base.CreateDirectory(path);
        }
    }

    [Test]
    public void RefusedSchemataWriteIsAClearErrorAndRollsBackBothGroups()
    {
        var fs = new RefusingFs(_root, p => p.Contains("livedlrm-trainer"), _ => false);
        var e = Assert.Throws<ResctrlException>(() => ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation(), fs: fs));
        Assert.That(e!.Message, Does.Contain("livedlrm-trainer/schemata").And.Contain("Invalid argument").And.Contain("last_cmd_status: Invalid argument: mask"));
        Assert.That(Groups(), Is.Empty, "the inference group created before the failure is removed");
    }

    [Test]
    public void KernelGroupLimitOnMkdirIsAClearErrorAndRollsBack()
    {
        var fs = new RefusingFs(_root, _ => false, p => p.EndsWith("livedlrm-trainer", StringComparison.Ordinal));
        var e = Assert.Throws<ResctrlException>(() => ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation(), fs: fs));
        Assert.That(e!.Message, Does.Contain("create group").And.Contain("No space left on device"));
        Assert.That(Groups(), Is.Empty);
    }

    [Test]
    public void RefusedTaskMoveNamesTheTid()
    {
        var fs = new RefusingTasksFs();
        using var g = ResctrlGroups.Create(ResctrlSupport.Detect(_root), new ResctrlAllocation(), fs: fs);
        var e = Assert.Throws<ResctrlException>(() => g.AssignTrainer([424242]));
        Assert.That(e!.Message, Does.Contain("TID 424242").And.Contain("No such process"));
    }

    sealed class RefusingTasksFs : ResctrlFileSystem
    {
        public override void Append(string path, string text) => throw new IOException("No such process");
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    public void BadAllocationIsRejected(double share) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => ResctrlGroups.ComputeSchemata(ResctrlSupport.Detect(_root), new ResctrlAllocation(share)));
}
