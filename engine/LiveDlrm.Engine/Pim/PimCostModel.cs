namespace LiveDlrm.Pim;

/// <summary>COST MODEL (an estimate, not a measurement) of what a batch would take on real UPMEM hardware. Every
/// constant lives here. Sources: ../shared/reference/upmem.md (PrIM paper, UPMEM documentation) except where marked
/// ASSUMPTION.</summary>
public static class PimCostModel
{
    /// <summary>DPU clock (upmem.md: 267–350 MHz; the model takes the top).</summary>
    public const double DpuClockHz = 350e6;
    /// <summary>MRAM→WRAM DMA: α + β·bytes cycles (upmem.md: α ≈ 77 read / 61 write, β ≈ 0.5 cycle/byte).</summary>
    public const double MramReadAlphaCycles = 77;
    public const double MramWriteAlphaCycles = 61;
    public const double MramBetaCyclesPerByte = 0.5;
    /// <summary>Host↔DPU bandwidth of one 64-DPU rank with parallel transfers (upmem.md: ~6.7 GB/s to, ~4.7 GB/s from).</summary>
    public const double HostToDpuBytesPerSecondPerRank = 6.7e9;
    public const double DpuToHostBytesPerSecondPerRank = 4.7e9;
    public const int DpusPerRank = 64;
    /// <summary>Tasklets needed to keep the 14-stage pipeline issuing one instruction per cycle (upmem.md: ≥ 11).</summary>
    public const int TaskletsToFillPipeline = 11;
    /// <summary>Tasklets the kernel runs (native/pim CMakeLists NR_TASKLETS).</summary>
    public const int KernelTasklets = 16;
    /// <summary>ASSUMPTION (not in the reference sheet): cycles for one fp32 accumulate (load, add, store) on a DPU.
    /// DPUs have no FPU, fp32 add is a runtime software routine, so this is an order-of-magnitude figure to be
    /// replaced by a hardware measurement; the report shows DMA and compute cycles separately for that reason.</summary>
    public const double Fp32AccumulateCycles = 40;
    /// <summary>ASSUMPTION: kernel instructions per item outside the vector loop (decode, branch, loop).</summary>
    public const double PerItemOverheadCycles = 20;

    public static double DmaReadCycles(long bytes) => MramReadAlphaCycles + MramBetaCyclesPerByte * bytes;
    public static double DmaWriteCycles(long bytes) => MramWriteAlphaCycles + MramBetaCyclesPerByte * bytes;

    /// <summary>Instruction throughput factor: below 11 tasklets the pipeline issues less than one per cycle.</summary>
    public static double PipelineFactor(int tasklets) => Math.Max(1.0, (double)TaskletsToFillPipeline / tasklets);

    /// <summary>Seconds to move <paramref name="bytesPerDpu"/> to (or from) each of <paramref name="dpus"/> DPUs in one
    /// parallel transfer: ranks work in parallel, a rank moves its DPUs' bytes at the rank bandwidth.</summary>
    public static double TransferSeconds(long bytesPerDpu, int dpus, bool toDpu)
    {
        double perRank = (double)bytesPerDpu * Math.Min(dpus, DpusPerRank);
        return perRank / (toDpu ? HostToDpuBytesPerSecondPerRank : DpuToHostBytesPerSecondPerRank);
    }
}
