using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Hosting;

/// <summary>How a <see cref="HostedModel"/> serves and trains: the served-request memory, the trainer's batches and
/// the adapters' memory budget and rank. Immutable; one instance may configure any number of models.</summary>
public sealed record HostedModelOptions
{
    /// <summary>Served requests remembered for their label at most; beyond it the oldest expire (their late labels
    /// are then refused by <see cref="HostedModel.Feedback"/>).</summary>
    public int RequestMemory { get; init; } = 1 << 18;
    /// <summary>Labelled events per trainer step.</summary>
    public int TrainerBatchSize { get; init; } = 256;
    /// <summary>A partial batch is trained once its oldest label has waited this long.</summary>
    public TimeSpan MaxBatchWait { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>Adapter memory per table as a fraction of the table's bytes (0.01 = 1 %).</summary>
    public double AdapterBudgetFraction { get; init; } = 0.01;
    /// <summary>The adapters' rank at start; rank adaptation moves it within [1, <see cref="MaxAdapterRank"/>].</summary>
    public int InitialAdapterRank { get; init; } = 4;
    /// <summary>The highest rank an adapter may grow to.</summary>
    public int MaxAdapterRank { get; init; } = 16;
    /// <summary>Adagrad learning rate of the adapters' row factors (A).</summary>
    public float AdapterLearningRate { get; init; } = 0.02f;
    /// <summary>Threads scoring a batch use this many libtorch threads each (hosts score on many threads of their
    /// own, so the default keeps libtorch from fanning every request out over all cores).</summary>
    public int TorchThreadsPerScoringThread { get; init; } = 1;
    /// <summary>Hears the engine's notices (QoS decisions, discarded trainer steps, a failed trainer thread).</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    internal void Validate()
    {
        if (RequestMemory < 1) throw new ArgumentOutOfRangeException(nameof(RequestMemory), RequestMemory, "RequestMemory must be ≥ 1");
        if (TrainerBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(TrainerBatchSize), TrainerBatchSize, "TrainerBatchSize must be ≥ 1");
        if (MaxBatchWait <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(MaxBatchWait), MaxBatchWait, "MaxBatchWait must be positive");
        if (!(AdapterBudgetFraction > 0 && AdapterBudgetFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(AdapterBudgetFraction), AdapterBudgetFraction, "AdapterBudgetFraction must be in (0, 1]");
        if (InitialAdapterRank < 1 || InitialAdapterRank > MaxAdapterRank) throw new ArgumentOutOfRangeException(nameof(InitialAdapterRank), InitialAdapterRank, $"InitialAdapterRank must be in [1, MaxAdapterRank = {MaxAdapterRank}]");
        if (!(AdapterLearningRate > 0) || !float.IsFinite(AdapterLearningRate)) throw new ArgumentOutOfRangeException(nameof(AdapterLearningRate), AdapterLearningRate, "AdapterLearningRate must be positive and finite");
        if (TorchThreadsPerScoringThread < 1) throw new ArgumentOutOfRangeException(nameof(TorchThreadsPerScoringThread), TorchThreadsPerScoringThread, "TorchThreadsPerScoringThread must be ≥ 1");
        ArgumentNullException.ThrowIfNull(Logger, nameof(Logger));
    }
}

/// <summary>How the colocated trainer shares the machine with scoring.</summary>
public enum TrainerQosMode
{
    /// <summary>The trainer runs unthrottled and unpinned.</summary>
    Off,
    /// <summary>A controller sets the trainer's duty cycle from the windowed P99 of <see cref="HostedModel.Score(Data.EventBatch, Span{float})"/>
    /// latency (plus what the host reports through <see cref="HostedModel.RecordRequestLatency"/>).</summary>
    Throttle,
    /// <summary><see cref="Throttle"/>, plus the trainer thread pinned to the cores the resource plan gives it and,
    /// where resctrl is mounted and writable, cache and memory-bandwidth groups for trainer and scoring threads.</summary>
    Full,
}

/// <summary>The trainer's QoS when <see cref="HostedModel.StartTrainer"/> starts it. Immutable.</summary>
public sealed record TrainerQosOptions
{
    /// <summary>What is applied (default <see cref="TrainerQosMode.Throttle"/>: works everywhere, needs no privileges).</summary>
    public TrainerQosMode Mode { get; init; } = TrainerQosMode.Throttle;
    /// <summary>The scoring P99 latency the controller defends by slowing the trainer.</summary>
    public TimeSpan TargetP99 { get; init; } = TimeSpan.FromMilliseconds(10);

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode)) throw new ArgumentOutOfRangeException(nameof(Mode), Mode, "unknown TrainerQosMode");
        if (TargetP99 <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(TargetP99), TargetP99, "TargetP99 must be positive");
    }
}
