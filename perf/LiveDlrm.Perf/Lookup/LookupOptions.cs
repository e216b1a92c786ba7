namespace LiveDlrm.Perf.Lookup;

/// <summary>Options of <c>./build.sh bench lookup</c>. Defaults are the reference configuration (fp32/fp16/int8,
/// dim 64, pooling 32, batch 2048, 100 k and 4 M rows, uniform and Zipf(1.05)); --quick shrinks everything for the
/// smoke test.</summary>
sealed record LookupOptions
{
    public int Threads { get; init; } = Environment.ProcessorCount;
    public int Runs { get; init; } = 5;
    public double RunSeconds { get; init; } = 0.3;
    public double WarmupSeconds { get; init; } = 0.15;
    public int Dim { get; init; } = 64;
    public int Pooling { get; init; } = 32;
    public int Batch { get; init; } = 2048;
    public long[] Rows { get; init; } = [100_000, 4L << 20];
    /// <summary>Distinct pre-generated batches cycled through (32 × 65 536 lookups touch ~512 MB of a 1 GiB table,
    /// far past the last-level cache, so repeating batches does not turn a DRAM case into a cache case).</summary>
    public int BatchCount { get; init; } = 32;
    public int[] Prefetch { get; init; } = [0, 4, 8, 16, 24, 32];
    /// <summary>Also time LiveDlrm's kernel at these prefetch distances (a tuning aid; the reported livedlrm figure
    /// is always the engine's default distance).</summary>
    public int[] LiveDlrmPrefetch { get; init; } = [];
    public string[] Cases { get; init; } = [];
    public bool Quick { get; init; }
    /// <summary>Also time the LoRA-augmented lookup (rank 16, adapter at its 1 % budget) on every case.</summary>
    public bool Lora { get; init; } = true;
    /// <summary>Also time the pieces of a lookup outside the kernel loop alone (<see cref="PieceContender"/>).</summary>
    public bool Breakdown { get; init; }
    public string? Out { get; init; }
}
