using LiveDlrm.Online;
using LiveDlrm.Training;

namespace LiveDlrm.Replay;

/// <summary>How the serving model is kept fresh during a replay.</summary>
internal enum UpdateMode
{
    /// <summary>No updates: the base model serves the whole replay.</summary>
    Stale,
    /// <summary>A separate full-parameter trainer learns on the stream; its changed rows and dense parameters are
    /// shipped to the serving model every sync interval and arrive after the sync delay.</summary>
    Delta,
    /// <summary>LoRA adapters trained in-process on the served events and served at once.</summary>
    Live,
}

/// <summary>Everything a <see cref="FreshnessReplay"/> run needs besides the stream.</summary>
internal sealed record ReplayOptions
{
    public IReadOnlyList<UpdateMode> Modes { get; init; } = [UpdateMode.Stale, UpdateMode.Delta, UpdateMode.Live];

    /// <summary>Checkpoint directory of the base model; null = train one on the stream's prefix.</summary>
    public string? ModelPath { get; init; }
    /// <summary>The base prefix as a fraction of the stream's events (used when <see cref="BasePrefixTime"/> is null).
    /// With <see cref="ModelPath"/> set, null means replay the whole stream.</summary>
    public double? BasePrefixFraction { get; init; } = 0.5;
    /// <summary>The base prefix as the events before this unix time (overrides the fraction).</summary>
    public long? BasePrefixTime { get; init; }
    /// <summary>Passes over the prefix when training the base model.</summary>
    public int BaseEpochs { get; init; } = 1;
    /// <summary>Bottom MLP of a trained base model; its last width is the embedding dim. Dim 32 (was 16) so an adapter
    /// row at rank ≤ 8 is a fraction of a table row, as in production tables (docs/replay.md has both).</summary>
    public IReadOnlyList<int> BottomMlp { get; init; } = [32, 32];
    public IReadOnlyList<int> TopMlp { get; init; } = [64, 32, 1];
    public int ModelSeed { get; init; } = 7;

    /// <summary>Events served (scored) together; also the minibatch of the delta trainer.</summary>
    public int ServeBatch { get; init; } = 256;
    /// <summary>Event-time seconds after an event until its label can be used for training.</summary>
    public long LabelDelaySeconds { get; init; } = 60;
    /// <summary>Report window in event seconds; 0 = automatic (<see cref="ReplayWindows.AutoWindowSeconds"/>: 20–48
    /// windows over the replayed span).</summary>
    public long WindowSeconds { get; init; } = 0;
    /// <summary>Fewest events (with both labels present) a window must hold to be reported on its own; thinner
    /// windows are merged into the next one.</summary>
    public int MinWindowEvents { get; init; } = ReplayWindows.DefaultMinEvents;
    public long SyncIntervalSeconds { get; init; } = 600;
    public long SyncDelaySeconds { get; init; } = 300;

    /// <summary>Trainer of the base model and of the delta baseline (one thread, so its CPU clock is its whole cost).</summary>
    public DlrmTrainerOptions FullTrainer { get; init; } = new() { Threads = 1 };
    /// <summary>The live learner's settings for the replay, each chosen by measurement (docs/replay.md, tuned on seed 2,
    /// reported on seed 1): a joint budget whose tiny tables (segments, devices: they carry the interest drift) may
    /// take up to 4× their own bytes; rank 8 → at most 16 re-chosen every 200 steps keeping 99.9 % of the energy (the
    /// engine's τ = 0.9 discards a tenth of the update at every check and cost 0.01 AUC; 0.999 beat 0.99 and a fixed
    /// rank 8 on seeds 1–3 once re-parameterisation kept B's scale); Adagrad rows starting from a
    /// small accumulator (0 made every re-admitted row take a full first step, biasing predictions down; 0.1 learned
    /// new rows too slowly); learning rates 0.1; minibatch 128. The top MLP's last layer is adapted too: the
    /// trainer's option is off by default, but the replay's bursts shift the global click rate, a bias the embedding
    /// adapters reach only row by row. Every adapted table's rows are trained in W itself (in place, row-wise Adagrad
    /// at the base trainer's rate on the base's row state): measured above the LoRA rows on every world variant
    /// (docs/replay.md, "Why the live defaults are what they are").</summary>
    public OnlineTrainerOptions OnlineTrainer { get; init; } = new()
    {
        MaxBatchWait = null, JointBudget = true, SmallTableBudgetMultiple = 4, BatchSize = 128, AdaptLastLayer = true,
        Adapter = new OnlineTrainerOptions().Adapter with
        {
            InitialRank = 8, MaxRank = 16, RankAdaptInterval = 200, EnergyToKeep = 0.999,
            LearningRateA = 0.1f, LearningRateB = 0.1f, AdagradInitialAccumulator = 0.001f, BAdagradInitialAccumulator = 1e-5f,
            InPlaceRows = true, InPlaceOnly = true, InPlaceLearningRate = new DlrmTrainerOptions().EmbeddingLearningRate,
        },
    };

    /// <summary>Backend that pools the live mode's base rows (null = the CPU kernels inline). With a base-copy backend
    /// such as <c>PimEmbeddingBackend</c> the base sums come from it and the host adds the adapter term; merges are
    /// pushed to it (docs/pim.md). The other modes always serve on the CPU.</summary>
    public Func<LiveDlrm.Embeddings.IEmbeddingBackend>? LiveBaseBackend { get; init; }
    /// <summary>Live: each adapter row starts from the base trainer's row-wise Adagrad accumulator of its row and
    /// merged rows keep theirs (<see cref="LiveDlrm.Lora.RowAccumulators"/>); off = every row from
    /// <see cref="LiveDlrm.Lora.AdapterOptions.AdagradInitialAccumulator"/>. Needs a base trained in the replay.</summary>
    public bool WarmRowState { get; init; } = true;

    public void Validate()
    {
        if (Modes.Count == 0) throw new ArgumentException("no update mode selected", nameof(Modes));
        if (Modes.Distinct().Count() != Modes.Count) throw new ArgumentException("an update mode is listed twice", nameof(Modes));
        if (BasePrefixFraction is { } f && !(f >= 0 && f < 1)) throw new ArgumentOutOfRangeException(nameof(BasePrefixFraction), f, "base prefix fraction must be in [0, 1)");
        if (ModelPath is null && BasePrefixFraction is null && BasePrefixTime is null)
            throw new ArgumentException("without a base model checkpoint a base prefix (fraction or time) is needed to train one");
        if (ModelPath is null && BasePrefixFraction == 0 && BasePrefixTime is null)
            throw new ArgumentOutOfRangeException(nameof(BasePrefixFraction), 0, "a base prefix of 0 leaves nothing to train the base model on (give --model instead)");
        ArgumentOutOfRangeException.ThrowIfLessThan(BaseEpochs, 1, nameof(BaseEpochs));
        ArgumentOutOfRangeException.ThrowIfLessThan(ServeBatch, 1, nameof(ServeBatch));
        ArgumentOutOfRangeException.ThrowIfNegative(LabelDelaySeconds, nameof(LabelDelaySeconds));
        ArgumentOutOfRangeException.ThrowIfNegative(WindowSeconds, nameof(WindowSeconds));
        ArgumentOutOfRangeException.ThrowIfLessThan(MinWindowEvents, 1, nameof(MinWindowEvents));
        ArgumentOutOfRangeException.ThrowIfLessThan(SyncIntervalSeconds, 1, nameof(SyncIntervalSeconds));
        ArgumentOutOfRangeException.ThrowIfNegative(SyncDelaySeconds, nameof(SyncDelaySeconds));
        FullTrainer.Validate();
        OnlineTrainer.Validate();
    }
}
