using LiveDlrm.Metrics;
using LiveDlrm.Reports;

namespace LiveDlrm.Replay;

/// <summary>Metrics of one event-time window of one mode.</summary>
internal sealed record WindowResult(long Start, long End, MetricSummary Metrics, double OptimumAuc)
{
    /// <summary>Cumulative network bytes shipped by the end of the window (delta).</summary>
    public long NetworkBytes { get; init; }
    /// <summary>Cumulative update CPU-seconds by the end of the window.</summary>
    public double CpuSeconds { get; init; }
    /// <summary>Live: adapter bytes / table bytes (all tables) at the window's end, in percent.</summary>
    public double? AdapterMemoryPct { get; init; }
    /// <summary>Live: rank per adapted table at the window's end.</summary>
    public IReadOnlyDictionary<string, int>? Ranks { get; init; }
    public long? TrainerLagSeconds { get; init; }
    public long? TrainerDrops { get; init; }
}

/// <summary>A rank decision of a live adapter, with the event time it was observed by.</summary>
internal sealed record RankRecord(long Time, string Table, long Step, int OldRank, int NewRank, double KeptEnergy, long AdapterBytes, long BudgetBytes);

/// <summary>Costs of keeping one mode fresh.</summary>
internal sealed record UpdateCost
{
    public long NetworkBytes { get; init; }
    /// <summary>Update CPU-seconds (thread CPU clocks): trainer + apply, and for live the extra serving CPU.</summary>
    public double CpuSeconds => TrainerCpuSeconds + ApplyCpuSeconds + ServingExtraCpuSeconds + JoinCpuSeconds;
    public double TrainerCpuSeconds { get; init; }
    /// <summary>Delta: CPU-seconds to snapshot changed rows and dense parameters and to apply them on the server.</summary>
    public double ApplyCpuSeconds { get; init; }
    /// <summary>Live: bytes written into the local base tables by merges (eviction = merge).</summary>
    public long LocalBytesWritten { get; init; }
    public int Syncs { get; init; }
    public long RowsShipped { get; init; }
    /// <summary>CPU-seconds of scoring the replayed events on the replay thread (every mode; not an update cost by itself).</summary>
    public double ServeCpuSeconds { get; init; }
    /// <summary>Live: what serving through the adapters and keeping each request's activations cost beyond plain
    /// serving — its <see cref="ServeCpuSeconds"/> minus stale's on the same events in the same run (0 when stale
    /// did not run).</summary>
    public double ServingExtraCpuSeconds { get; init; }
    /// <summary>Live: CPU on the serving thread to join each label with its kept request and queue it for the
    /// trainer (<c>LiveModel.Feedback</c>) — work plain serving does not do.</summary>
    public double JoinCpuSeconds { get; init; }
}

/// <summary>Everything measured for one mode.</summary>
internal sealed record ModeResult(UpdateMode Mode, MetricSummary Overall, IReadOnlyList<WindowResult> Windows, UpdateCost Cost, double WallSeconds)
{
    public string Name => Mode.ToString().ToLowerInvariant();
    public LiveStats? Live { get; init; }
}

/// <summary>Live-mode extras: adapter memory, ranks, trainer counters.</summary>
internal sealed record LiveStats
{
    public double AdapterMemoryPctMax { get; init; }
    /// <summary>Name of the backend that pooled the base rows ("cpu", "pim-emulated", ...).</summary>
    public string BaseBackend { get; init; } = "";
    public double AdapterBudgetPct { get; init; }
    /// <summary>Bytes of the per-row optimizer state kept beside the adapted tables (4 a row; 0 with
    /// <c>--row-state fresh</c>): not adapter memory, since it is the base trainer's state, but memory live needs.</summary>
    public long RowStateBytes { get; init; }
    /// <summary><see cref="RowStateBytes"/> over the bytes of all tables, in %.</summary>
    public double RowStatePct { get; init; }
    public IReadOnlyList<RankRecord> RankHistory { get; init; } = [];
    public IReadOnlyList<AdapterTableStats> Tables { get; init; } = [];
    public long Samples { get; init; }
    public long Steps { get; init; }
    public long DiscardedSteps { get; init; }
    public long Drops { get; init; }
    public long UnknownFeedback { get; init; }
    public long ExpiredRequests { get; init; }
    public long MaxLagSeconds { get; init; }
    public double SamplesPerBusySecond { get; init; }
    public bool ReuseForward { get; init; }
}

internal sealed record AdapterTableStats(string Table, bool Adapted, long TableBytes, long BudgetBytes, long AdapterBytesMax, int FinalRank, long MergedRows, long RejectedSteps, long DroppedRowUpdates,
                                         long IndicesOnHotRows = 0, long IndicesOnSlots = 0, long InPlaceRowUpdates = 0, bool InPlaceOnly = false);

/// <summary>A whole replay: stream facts, base model, every mode.</summary>
internal sealed record ReplayReport
{
    public required string Data { get; init; }
    public long PrefixEvents { get; init; }
    public long ReplayEvents { get; init; }
    public long ReplayStart { get; init; }
    public long ReplayEnd { get; init; }
    /// <summary>The window length used (the option, or the automatic one).</summary>
    public long WindowSeconds { get; init; }
    public long BaseTrainEvents { get; init; }
    public double BaseTrainSeconds { get; init; }
    public double OptimumAuc { get; init; } = double.NaN;
    public required ReplayOptions Options { get; init; }
    public IReadOnlyList<ModeResult> Modes { get; init; } = [];
    /// <summary>Every point of a cost/accuracy sweep (<see cref="FreshnessReplay.RunSweep"/>); null for a plain replay.</summary>
    public IReadOnlyList<SweepResult>? Sweep { get; init; }

    public ModeResult? Mode(UpdateMode mode) => Modes.FirstOrDefault(m => m.Mode == mode);

    /// <summary>Writes report.json (the schema docs/replay.md describes) to a temporary file, then renames it into place.</summary>
    public void WriteJson(string path) => ReportJson.Write(ReplayReportJson.From(this), path, ReplayJsonContext.Default.Document);
}
