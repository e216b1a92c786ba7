namespace LiveDlrm.Pim;

/// <summary>COST MODEL (an estimate, not a measurement) of what a batch would take on real UPMEM hardware. Every
/// constant lives here with its source. "PrIM" is Gómez-Luna, El Hajj, Fernandez, Giannoula, Oliveira, Mutlu,
/// "Benchmarking a New Paradigm: Experimental Analysis and Characterization of a Real Processing-in-Memory System",
/// IEEE Access 10 (2022), arXiv 2105.03814: measurements on a 2,556-DPU server at 350 MHz (section "MRAM Bandwidth and
/// Latency" for the DMA terms, section "CPU-DPU Communication" for host transfers, both also in
/// ../shared/reference/upmem.md). ASSUMPTION marks a constant no published measurement was found for — those are what
/// a run on a UPMEM server should replace (the kernel's <c>pim_cycles</c> counter, <see cref="PimDevice.KernelCycles"/>,
/// measures the kernel with perfcounter there).</summary>
internal static class PimCostModel
{
    /// <summary>DPU clock: PrIM's 2,556-DPU server runs its DPUs at 350 MHz (its 640-DPU one at 267 MHz).</summary>
    public const double DpuClockHz = 350e6;
    /// <summary>MRAM↔WRAM DMA of n bytes: α + β·n cycles, PrIM ("MRAM Bandwidth and Latency"): α ≈ 77 cycles for
    /// <c>mram_read</c>, ≈ 61 for <c>mram_write</c>, β = 0.5 cycle/B — so ~630 MB/s per DPU at 2,048-byte transfers
    /// (700 MB/s is the β limit at 350 MHz) and latency-bound below a few hundred bytes.</summary>
    public const double MramReadAlphaCycles = 77;
    public const double MramWriteAlphaCycles = 61;
    public const double MramBetaCyclesPerByte = 0.5;
    /// <summary>Host↔DPU, parallel transfers (<c>dpu_prepare_xfer</c> + <c>dpu_push_xfer</c>) to all 64 DPUs of one rank,
    /// large buffers: PrIM ("CPU-DPU Communication") measures 6.68 GB/s CPU→DPU and 4.74 GB/s DPU→CPU (serial transfers to
    /// one DPU: 0.33 / 0.12 GB/s; broadcast to a rank: 16.88 GB/s). Per rank only: PrIM measures within one rank.</summary>
    public const double HostToDpuBytesPerSecondPerRank = 6.68e9;
    public const double DpuToHostBytesPerSecondPerRank = 4.74e9;
    /// <summary>ASSUMPTION: host↔PIM bandwidth of the whole server. The per-rank figures cannot simply be multiplied by 40
    /// ranks: every byte is copied (and transposed) by host threads through the host's own memory channels, and NUMA
    /// placement alone moves host–PIM transfer throughput by up to 2.9x ("UPMEM Unleashed: Software Secrets for Speed",
    /// arXiv 2510.15927). No published whole-server figure was found; the model caps at about three ranks' worth.</summary>
    public const double SystemHostToDpuBytesPerSecond = 20e9;
    public const double SystemDpuToHostBytesPerSecond = 14e9;
    /// <summary>ASSUMPTION: fixed host cost of one <c>dpu_launch</c> of a set (boot every rank, poll for completion).</summary>
    public const double LaunchFixedSeconds = 20e-6;
    /// <summary>ASSUMPTION: fixed host cost of one transfer call (<c>dpu_push_xfer</c>, <c>dpu_broadcast_to</c>, <c>dpu_copy_to</c>).</summary>
    public const double TransferCallFixedSeconds = 10e-6;
    public const int DpusPerRank = 64;
    /// <summary>Tasklets needed to keep the 14-stage pipeline issuing one instruction per cycle (PrIM: arithmetic
    /// throughput saturates at 11 tasklets or more).</summary>
    public const int TaskletsToFillPipeline = 11;
    /// <summary>Tasklets the kernel runs (native/pim CMakeLists NR_TASKLETS).</summary>
    public const int KernelTasklets = 16;
    /// <summary>ASSUMPTION: cycles for one fp32 accumulate (load, soft-float <c>__addsf3</c>, store) on a DPU, which has no
    /// FPU. PrIM's section "Arithmetic Throughput" measures fp32 add and multiply throughput on a DPU; these two constants
    /// have not been checked against its figures.</summary>
    public const double Fp32AccumulateCycles = 40;
    /// <summary>ASSUMPTION: extra cycles of the soft-float <c>__mulsf3</c> per element of a weighted sum (the DPU multiplies
    /// 8 x 8 bits per instruction).</summary>
    public const double Fp32MultiplyCycles = 60;
    /// <summary>One int32 accumulate: load, add, store — three instructions, one per cycle with ≥ 11 tasklets.</summary>
    public const double Int32AccumulateCycles = 3;
    /// <summary>ASSUMPTION: kernel instructions per item outside the vector loop (decode, branch, loop).</summary>
    public const double PerItemOverheadCycles = 20;
    /// <summary>UpDLRM (DAC'24): up to 4.6x faster than CPU-only embedding lookups on six real datasets — the published
    /// anchor an estimate here can be compared with.</summary>
    public const double UpDlrmReportedSpeedup = 4.6;

    public static double DmaReadCycles(long bytes) => MramReadAlphaCycles + MramBetaCyclesPerByte * bytes;
    public static double DmaWriteCycles(long bytes) => MramWriteAlphaCycles + MramBetaCyclesPerByte * bytes;

    /// <summary>Instruction throughput factor: below 11 tasklets the pipeline issues less than one per cycle.</summary>
    public static double PipelineFactor(int tasklets) => Math.Max(1.0, (double)TaskletsToFillPipeline / tasklets);

    /// <summary>Kernel cycles (pipeline-issued instructions) to sum <paramref name="items"/> vectors of
    /// <paramref name="sliceFloats"/> elements.</summary>
    public static double ComputeCycles(long items, int sliceFloats, PimPrecision precision = PimPrecision.Fp32, bool weighted = false)
    {
        double perElement = precision == PimPrecision.Int32 ? Int32AccumulateCycles : Fp32AccumulateCycles + (weighted ? Fp32MultiplyCycles : 0);
        return items * (sliceFloats * perElement + PerItemOverheadCycles) * PipelineFactor(KernelTasklets);
    }

    /// <summary>Seconds of one parallel transfer of <paramref name="bytesPerDpu"/> to (or from) each of <paramref name="dpus"/>
    /// DPUs: ranks in parallel at the rank bandwidth, capped by the server's, plus the call's fixed cost.</summary>
    public static double TransferSeconds(long bytesPerDpu, int dpus, bool toDpu)
    {
        int ranks = (dpus + DpusPerRank - 1) / DpusPerRank;
        double bandwidth = Math.Min(ranks * (toDpu ? HostToDpuBytesPerSecondPerRank : DpuToHostBytesPerSecondPerRank),
                                    toDpu ? SystemHostToDpuBytesPerSecond : SystemDpuToHostBytesPerSecond);
        return TransferCallFixedSeconds + (double)bytesPerDpu * dpus / bandwidth;
    }
}
