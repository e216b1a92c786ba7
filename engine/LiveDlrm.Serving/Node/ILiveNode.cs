using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Scheduling;

namespace LiveDlrm.Serving.Node;

/// <summary>The one seam between the server and the engine's live model: one base model with its adapters, the
/// served-request ring and the colocated trainer. Everything the server does to the model goes through here, so the
/// engine's composition root can change behind it.</summary>
internal interface ILiveNode : IDisposable
{
    DlrmModel Model { get; }
    /// <summary>The layout requests must have (the model's dense count and tables).</summary>
    EventBatchLayout Layout { get; }
    /// <summary>Identifies the base model (its checkpoint's manifest checksum).</summary>
    string Fingerprint { get; }
    IReadOnlyList<TableAdapter?> Adapters { get; }

    /// <summary>Scores <paramref name="batch"/> and remembers each event by its request id for a later label.
    /// Thread-safe.</summary>
    void Serve(EventBatch batch, Span<float> scores);
    /// <summary>Joins a label to its served request and queues it for training; false when the request is unknown.</summary>
    bool Feedback(long requestId, float label);
    /// <summary>Drops a served request without training on it; false when it is unknown (already labelled or evicted).</summary>
    bool Forget(long requestId);

    bool TrainerRunning { get; }
    /// <summary>Starts the trainer thread; <paramref name="onThreadStart"/> runs on it first (pinning).</summary>
    void StartTrainer(Action<int>? onThreadStart);
    void StopTrainer();
    ITrainerThrottle? Throttle { get; }
    IReadOnlyList<int> TrainerThreadIds { get; }
    /// <summary>Until disposed: no training step runs and joined labels are held back (feedback never waits), so the adapters
    /// can be read consistently. Throws <see cref="TimeoutException"/> when the queued labels are not trained within
    /// <paramref name="timeout"/>.</summary>
    IDisposable QuiesceTrainer(TimeSpan timeout);

    TrainerStatus Status { get; }
}

/// <summary>Counters of a node's trainer and ring, read for /metrics.</summary>
internal readonly record struct TrainerStatus(long Samples, long Steps, long Discarded, long Drops, long QueueLength, long LagSeconds,
                                              long RingExpired, long RingStored);
