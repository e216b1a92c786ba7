using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>Bad input gets a clear error and leaves nothing half-loaded.</summary>
internal class PimBadInputTests
{
    [Test]
    public void AnIndexOutOfRangeThrowsBeforeAnyOutputIsWritten()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("oob", 100, 8);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated, DpusPerTable = 4 });
        var output = Enumerable.Repeat(-7f, 16).ToArray();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => backend.Forward(table, [1, 100], [0, 1, 2], output));
        Assert.That(e!.Message, Does.Contain("indices[1] = 100").And.Contain("'oob'"));
        Assert.That(output, Is.All.EqualTo(-7f));
    }

    [Test]
    public void MoreDpusThanTheEmulationAllowsIsRefused()
    {
        PimTestSupport.RequireLibrary();
        if (PimDevice.BuiltWithSdk) Assert.Ignore("built against the UPMEM SDK");
        int max = PimDevice.MaxDpus;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => PimDevice.Open(max + 1, PimBackendKind.Emulated));
        Assert.That(e!.Message, Does.Contain($"at most {max}"));
        // Below the engine's check, the emulation's dpu_alloc refuses too, and counts what is in use.
        using var held = PimDevice.Open(max - 2, PimBackendKind.Emulated);
        var e2 = Assert.Throws<PimException>(() => PimDevice.Open(4, PimBackendKind.Emulated));
        Assert.That(e2!.Message, Does.Contain("dpu_alloc").And.Contain($"at most {max}").And.Contain("2 are free"));
    }

    [Test]
    public void ATableLargerThanTheDpusMramIsRefusedBeforeAllocating()
    {
        var e = Assert.Throws<ArgumentException>(() => PimPartitioner.UniformRowWise(rows: 1L << 27, dim: 64, dpus: 64));
        Assert.That(e!.Message, Does.Contain("32768.0 MiB").And.Contain("3584.0 MiB").And.Contain("use more DPUs"));
    }

    [Test]
    public unsafe void TheShimRefusesAnOversizedLoadAndKeepsThePreviousTable()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("keep", 64, 8);
        using var device = PimDevice.Open(2, PimBackendKind.Emulated);
        device.Load(table, PimPartitioner.UniformRowWise(64, 8, 2));
        // Straight to the C ABI: DPU 1 asked to hold more vectors than its MRAM region.
        uint[] perDpu = [1, (uint)(PimLayout.MramTableBytes / 32) + 1];
        var slots = new PimSlotDesc[1];
        int status;
        fixed (uint* p = perDpu)
        fixed (PimSlotDesc* s = slots)
            status = LiveDlrm.Interop.Pim.LoadTable(device.Handle, 0, (float*)table.DataPointer, 64, 8, 8, 8, LiveDlrm.Interop.Pim.FormatFp32, s, p, null, 0);
        Assert.That(status, Is.EqualTo(LiveDlrm.Interop.Pim.StatusCapacity));
        Assert.That(LiveDlrm.Interop.Pim.LastError, Does.Contain("DPU 1").And.Contain("exceed its MRAM table region"));
        var output = new float[8];
        device.LookupSum([5, 40], [0, 2], output);
        var expected = new float[8];
        EmbeddingBagReference.Forward(table, [5L, 40L], [0L, 2L], expected);
        PimTestSupport.AssertSumsMatch(table, [5, 40], [0, 2], output, expected, "previous table");
    }

    [Test]
    public void AMissingKernelBinaryIsNamed()
    {
        PimTestSupport.RequireLibrary();
        var e = Assert.Throws<ArgumentException>(() => PimDevice.Open(2, PimBackendKind.Auto, "/nonexistent/livedlrm_pim_kernel.dpu"));
        Assert.That(e!.Message, Does.Contain("'/nonexistent/livedlrm_pim_kernel.dpu' not found"));
    }

    [Test]
    public void APlanThatDoesNotMatchTheTableOrDeviceIsRefusedAndTheBackendKeepsNothing()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("mismatch", 100, 8);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated });
        Assert.Throws<ArgumentException>(() => backend.Load(table, PimPartitioner.UniformRowWise(101, 8, 4)));
        Assert.That(backend.PlanOf(table), Is.Null);
        using var device = PimDevice.Open(4, PimBackendKind.Emulated);
        Assert.Throws<ArgumentException>(() => device.Load(table, PimPartitioner.UniformRowWise(100, 8, 8)));
        Assert.Throws<InvalidOperationException>(() => device.LookupSum([1], [0, 1], new float[8]));
    }

    [Test]
    public void UnsupportedStorageOrPoolingOrBackendIsNamed()
    {
        PimTestSupport.RequireLibrary();
        using var fp16 = EmbeddingTable.Create("half", 10, 8, EmbeddingStorage.Fp16);
        using var table = PimTestSupport.RandomTable("w", 10, 8);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated, DpusPerTable = 2 });
        Assert.That(Assert.Throws<NotSupportedException>(() => backend.Forward(fp16, [1], [0, 1], new float[8]))!.Message, Does.Contain("Fp16"));
        Assert.Throws<ArgumentException>(() => backend.Forward(table, [1, 2], [0, 2], new float[8], PoolingMode.WeightedSum, [1f]));   // one weight for two ids
        if (!PimDevice.BuiltWithSdk)
            Assert.That(Assert.Throws<PimException>(() => PimDevice.Open(2, PimBackendKind.Hardware))!.Message, Does.Contain("emulation"));
    }
}
