using LiveDlrm.Interop;
using Native = LiveDlrm.Interop.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>The emulation enforces the DMA rules and the WRAM budget: the probe kernel (native/pim/dpu/dma_probe.c)
/// performs exactly one transfer described by the test, through the same host API the shim uses.</summary>
public unsafe class PimEmulationTests
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
        Assert.That(Native.LastError, Does.Contain("dpu_load").And.Contain("does not fit WRAM").And.Contain("16 tasklets x 1024 B stack"));
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
