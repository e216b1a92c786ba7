using LiveDlrm.Lora;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Online;

/// <summary>Configuration of the colocated <see cref="OnlineTrainer"/>.</summary>
internal sealed record OnlineTrainerOptions
{
    /// <summary>Labelled events per optimizer step.</summary>
    public int BatchSize { get; init; } = 256;
    /// <summary>Labelled events waiting for the trainer at most; beyond it the oldest are dropped (and counted).</summary>
    public int QueueCapacity { get; init; } = 1 << 16;
    /// <summary>A partial batch is trained once its oldest event has waited this long (wall time); null = only full
    /// batches (and whatever <see cref="OnlineTrainer.Drain"/> flushes), which makes replays deterministic.</summary>
    public TimeSpan? MaxBatchWait { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>Data reuse: train from the pooled embeddings computed when the request was served instead of
    /// pooling again, and backpropagate through the frozen dense part from the dense activations kept with them
    /// (<see cref="FrozenDenseBackward"/>) instead of re-running the forward under autograd. They are as stale as
    /// the label delay (adapter updates in between are not reflected); off = the autograd reference path.</summary>
    public bool ReuseForward { get; init; } = true;
    /// <summary>Fraction of served requests the trainer learns from, chosen by a hash of the request id (so serving
    /// and the label join agree without state): only those are kept in the ring with their activations and trained
    /// on. Below 1 it cuts the trainer's CPU and the serving-side cost of keeping requests in proportion; every
    /// request is still served through the adapters. 1 = every request.</summary>
    public double TrainFraction { get; init; } = 1;
    /// <summary>Also adapt the top MLP's last layer: an additive ΔW, Δb trained by Adagrad and published to serving
    /// by a versioned copy + atomic swap (<see cref="LastLayerAdapter"/>). Off by default.</summary>
    public bool AdaptLastLayer { get; init; }
    /// <summary>Adagrad learning rate of the last-layer update (<see cref="AdaptLastLayer"/>).</summary>
    public float LastLayerLearningRate { get; init; } = 0.005f;
    /// <summary>Options of each table's adapter (rank, budget, learning rates, optimizer, rank-adaptation interval).</summary>
    public AdapterOptions Adapter { get; init; } = new() { InitialRank = 4, MaxRank = 16, RankAdaptInterval = 200, LearningRateA = 0.02f };
    /// <summary>Tables whose budget holds fewer adapter rows than this get no adapter (a 24-row table's 1 % is a
    /// few bytes); they are served and kept as the base model has them.</summary>
    public int MinAdapterRows { get; init; } = 16;
    /// <summary>Enforce the budget over all tables jointly: Σ adapter budgets ≤ BudgetFraction × Σ table bytes.
    /// Tables too small for an adapter under their own 1 % are funded first (enough for all their rows, at most
    /// their own size), smallest first, while the total allows; the rest is shared by the other tables in proportion
    /// to their bytes. Each adapter still never exceeds its own (granted) budget, so the sum never exceeds the total.</summary>
    public bool JointBudget { get; init; }
    /// <summary>With <see cref="JointBudget"/>: the most a tiny table funded from the total may get, as a multiple of
    /// its own bytes. An adapter needs B (rank × dim) besides its rows, so a 16-row table cannot hold one within its
    /// own size; its bytes are still a rounding error of the total (docs/replay.md).</summary>
    public double SmallTableBudgetMultiple { get; init; } = 1;
    /// <summary>Hears discarded steps, tables without an adapter and a failed trainer thread.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    public void Validate()
    {
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "online trainer BatchSize must be ≥ 1");
        if (QueueCapacity < BatchSize) throw new ArgumentOutOfRangeException(nameof(QueueCapacity), QueueCapacity, $"online trainer QueueCapacity must be ≥ BatchSize ({BatchSize})");
        if (MaxBatchWait is { } w && w <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(MaxBatchWait), w, "online trainer MaxBatchWait must be positive (or null)");
        if (!(TrainFraction > 0 && TrainFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(TrainFraction), TrainFraction, "online trainer TrainFraction must be in (0, 1]");
        if (MinAdapterRows < 1) throw new ArgumentOutOfRangeException(nameof(MinAdapterRows), MinAdapterRows, "online trainer MinAdapterRows must be ≥ 1");
        if (!(LastLayerLearningRate > 0) || !float.IsFinite(LastLayerLearningRate)) throw new ArgumentOutOfRangeException(nameof(LastLayerLearningRate), LastLayerLearningRate, "online trainer LastLayerLearningRate must be positive and finite");
        if (!(SmallTableBudgetMultiple > 0 && SmallTableBudgetMultiple <= AdapterOptions.MaxBudgetFraction))
            throw new ArgumentOutOfRangeException(nameof(SmallTableBudgetMultiple), SmallTableBudgetMultiple, $"online trainer SmallTableBudgetMultiple must be in (0, {AdapterOptions.MaxBudgetFraction}]");
        ArgumentNullException.ThrowIfNull(Adapter, nameof(Adapter));
    }

    /// <summary>Whether the trainer learns from request <paramref name="requestId"/> under <see cref="TrainFraction"/>:
    /// a SplitMix64 hash of the id against the fraction, so consecutive ids are sampled independently.</summary>
    public bool Trains(long requestId)
    {
        if (TrainFraction >= 1) return true;
        ulong z = unchecked((ulong)requestId + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53)) < TrainFraction;
    }
}
