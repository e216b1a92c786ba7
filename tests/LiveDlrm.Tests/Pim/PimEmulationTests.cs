using LiveDlrm.Interop;
using Native = LiveDlrm.Interop.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>The emulation enforces the DMA rules and the WRAM budget: the probe kernel (native/pim/dpu/dma_probe.c)
/// performs exactly one transfer described by the test, through the same host API the shim uses.</summary>
internal unsafe class PimEmulationTests
{
    static string Probe => Path.Combine(PimTestSupport.KernelDir, "livedlrm_pim_dma_probe.dpu");

    [SetUp]
    public void OnlyOnTheEmulation() => PimTestSupport.RequireEmulation();

    public enum DmaCase { SizeNotMultipleOf8, SizeBelow8, SizeAbove2048, MramMisaligned, WramMisaligned, MramPastEnd, WramOutside }

    static (PimProbeArgs Args, string Reason) Describe(DmaCase c) => c switch
    {
        DmaCase.SizeNotMultipleOf8 => (new PimProbeArgs { Size = 12 }, "size not a multiple of 8"),
        DmaCase.SizeBelow8 => (new PimProbeArgs { Size = 0 }, "size below 8"),
        DmaCase.SizeAbove2048 => (new PimProbeArgs { Size = 2056 }, "size above 2048"),
        DmaCase.MramMisaligned => (new PimProbeArgs { Size = 16, MramOffset = 4, Write = 1 }, "MRAM address not 8-byte aligned"),
        DmaCase.WramMisaligned => (new PimProbeArgs { Size = 16, WramOffset = 4 }, "WRAM address not 8-byte aligned"),
        DmaCase.MramPastEnd => (new PimProbeArgs { Size = 64, MramOffset = (1u << 20) - 32 }, "MRAM range runs past the end"),
        DmaCase.WramOutside => (new PimProbeArgs { Size = 2048, WramOffset = 4096 - 1024 }, "WRAM range outside"),
        _ => throw new ArgumentOutOfRangeException(nameof(c)),
    };

    [Test]
    public void EachDmaRuleViolationAbortsTheLaunchNamingKernelTaskletAddressAndSize([Values] DmaCase violation)
    {
        PimTestSupport.RequireLibrary();
        var (args, reason) = Describe(violation);
        int status = Native.RunProbe(Probe, null, &args);
        string message = Native.LastError;
        Assert.That(status, Is.EqualTo(Native.StatusDpu), message);
        Assert.That(message, Does.Contain("dpu_launch").And.Contain("kernel 'livedlrm_pim_dma_probe'").And.Contain("tasklet 0"));
        Assert.That(message, Does.Contain($"{(args.Write != 0 ? "mram_write" : "mram_read")} of {args.Size} bytes"));
        Assert.That(message, Does.Contain($"MRAM 0x{args.MramOffset:x7}"));
        Assert.That(message, Does.Contain(reason));
        // The same mapping the engine uses turns it into a PimException.
        Assert.Throws<PimException>(() => Native.Check(status, "probe"));
    }

    [Test]
    public void ALegalTransferOfEverySizeClassPasses([Values(8u, 16u, 2048u)] uint size, [Values(0u, 1u)] uint write)
    {
        PimTestSupport.RequireLibrary();
        var args = new PimProbeArgs { Size = size, Write = write, MramOffset = (1u << 20) - size, WramOffset = 4096 - size };
        Assert.That(Native.RunProbe(Probe, null, &args), Is.EqualTo(Native.StatusOk), Native.LastError);
    }

    [Test]
    public void AKernelOverTheWramBudgetIsRefusedAtLoad()
    {
        PimTestSupport.RequireLibrary();
        int status = Native.RunProbe(Path.Combine(PimTestSupport.KernelDir, "livedlrm_pim_wram_hog.dpu"), null, null);
        Assert.That(status, Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain("dpu_load").And.Contain("does not fit v1B WRAM").And.Contain("16 tasklets x 1024 B stack"));
    }

    [Test]
    public void ABinaryThatIsNotAKernelIsRefused()
    {
        PimTestSupport.RequireLibrary();
        string path = Path.Combine(Path.GetTempPath(), $"not-a-kernel-{Environment.ProcessId}.dpu");
        File.WriteAllText(path, "hello\n");
        try
        {
            Assert.That(Native.RunProbe(path, null, null), Is.EqualTo(Native.StatusDpu));
            Assert.That(Native.LastError, Does.Contain("not an emulated kernel descriptor"));
        }
        finally { File.Delete(path); }
    }

    [Test]
    public void ProfilesOtherThanTheEmulationAreRefusedByTheEmulatedBuild()
    {
        var args = new PimProbeArgs { Size = 8 };
        Assert.That(Native.RunProbe(Probe, "backend=hw", &args), Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain("invalid profile").And.Contain("emulation"));
    }
}

/// <summary>The emulation is no looser than the hardware: chip limits, stack budget, MRAM size, tasklet interleavings.</summary>
internal class PimEmulationLimitTests
{
    [SetUp]
    public void OnlyOnTheEmulation() => PimTestSupport.RequireEmulation();

    static string Kernel(string name) => Path.Combine(PimTestSupport.KernelDir, $"livedlrm_pim_{name}.dpu");

    [Test]
    public unsafe void TheWramBudgetFollowsTheChosenChip([Values("v1A", "v1B")] string chip)
    {
        // Both refuse the 56 KiB hog; the message names the chip's WRAM and the runtime's share.
        Assert.That(Native.RunProbe(Kernel("wram_hog"), $"backend=emulated,emuChip={chip}", null), Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain($"does not fit {chip} WRAM").And.Contain("runtime 336 B")
                                              .And.Contain(chip == "v1A" ? "> 65536 B" : "> 63488 B"));
        // The embedding kernel (16 tasklets) fits both.
        var args = new PimProbeArgs { Size = 8 };
        Assert.That(Native.RunProbe(Kernel("kernel"), $"backend=emulated,emuChip={chip}", null), Is.EqualTo(Native.StatusOk), Native.LastError);
        Assert.That(Native.RunProbe(Kernel("dma_probe"), $"backend=emulated,emuChip={chip}", &args), Is.EqualTo(Native.StatusOk), Native.LastError);
    }

    [Test]
    public void AnUnknownChipIsRefused()
    {
        Assert.That(Native.RunRaceProbe(Kernel("race_probe"), "backend=emulated,emuChip=v2", 0, out _), Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain("emuChip=v2"));
    }

    [Test]
    public unsafe void MramArraysOverSixtyFourMegabytesAreRefusedAtLoad()
    {
        Assert.That(Native.RunProbe(Kernel("mram_hog"), null, null), Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain("dpu_load").And.Contain("MRAM arrays").And.Contain("a DPU has 67108864 B"));
    }

    [Test]
    public void AStackOverItsBudgetFaultsTheDpu()
    {
        int status = Native.RunKernel(Kernel("stack_hog"), null);
        Assert.That(status, Is.EqualTo(Native.StatusDpu));
        Assert.That(Native.LastError, Does.Contain("DPU fault").And.Contain("exceeds the tasklet's budget of 1024 B"));
    }

    /// <summary>The deterministic schedule switches tasklets only at barriers and mutexes, so an unguarded
    /// read-modify-write around an MRAM read looks correct; the randomised mode switches at DMA transfers and loses
    /// updates for some seed; the mutex makes every seed correct.</summary>
    [Test]
    public void RandomisedYieldsExposeARaceThatTheDeterministicScheduleHides()
    {
        Assert.That(Native.RunRaceProbe(Kernel("race_probe"), null, 0, out uint count), Is.EqualTo(Native.StatusOk), Native.LastError);
        Assert.That(count, Is.EqualTo(16));
        int lost = 0;
        for (int seed = 1; seed <= 20; seed++)
        {
            Assert.That(Native.RunRaceProbe(Kernel("race_probe"), $"backend=emulated,emuYield={seed}", 0, out uint racy), Is.EqualTo(Native.StatusOk), Native.LastError);
            if (racy < 16) lost++;
            Assert.That(Native.RunRaceProbe(Kernel("race_probe"), $"backend=emulated,emuYield={seed}", 1, out uint guarded), Is.EqualTo(Native.StatusOk), Native.LastError);
            Assert.That(guarded, Is.EqualTo(16), $"seed {seed}: the mutex must make the count exact");
        }
        Assert.That(lost, Is.GreaterThan(0), "no seed out of 20 lost an update");
    }
}
