using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Scheduling;

namespace LiveDlrm.Serving.Node;

/// <summary>The one seam between the server and the engine's live model: one base model with its adapters, the
/// served-request ring and the colocated trainer. Everything the server does to the model goes through here, so the
/// engine's composition root can change behind it.</summary>
internal interface ILiveNode : IDisposable
{
    /// <summary>The engine's live model behind this node (its adapters are what <c>AdapterStore</c> saves).</summary>
    LiveModel Live { get; }
    DlrmModel Model { get; }
    /// <summary>The layout requests must have (the model's dense count and tables).</summary>
    EventBatchLayout Layout { get; }
    /// <summary>Identifies the base model (its checkpoint's manifest checksum).</summary>
    string Fingerprint { get; }
    IReadOnlyList<TableAdapter?> Adapters { get; }
    /// <summary>The engine's meters (trainer, ring, adapters) the server exports beside its own.</summary>
    IEnumerable<string> MeterNames { get; }
    /// <summary>Joined labels dropped because the trainer was stopped (see <see cref="StopTrainer"/>).</summary>
    long DroppedWhileStopped { get; }

    /// <summary>Scores <paramref name="batch"/> and remembers each event by its request id for a later label.
    /// Thread-safe.</summary>
    void Serve(EventBatch batch, Span<float> scores);
    /// <summary>Joins a label to its served request and queues it for training; false when the request is unknown.</summary>
    bool Feedback(long requestId, float label);
    /// <summary>Drops a served request without training on it; false when it is unknown (already labelled or evicted).</summary>
    bool Forget(long requestId);

    bool TrainerRunning { get; }
    /// <summary>Starts the trainer thread; <paramref name="onThreadStart"/> runs on it first (pinning). Labels held
    /// while it was stopped are queued.</summary>
    void StartTrainer(Action<int>? onThreadStart);
    /// <summary>Stops the trainer thread after its current step (queued labels stay queued). Until the next start,
    /// joined labels are held for it (<paramref name="hold"/>: a pause, e.g. to read the adapters) or dropped and
    /// counted (a stop: a later start must not train a stale backlog).</summary>
    void StopTrainer(bool hold);
    /// <summary>The running trainer's throttle (a new one per start), or null.</summary>
    ITrainerThrottle? Throttle { get; }
    IReadOnlyList<int> TrainerThreadIds { get; }

    TrainerStatus Status { get; }
}

/// <summary>Counters of a node's trainer and ring (the engine's own meters export them; the server reads them for
/// its logic and tests).</summary>
internal readonly record struct TrainerStatus(long Samples, long Steps, long Discarded, long Drops, long QueueLength, long LagSeconds,
                                              long RingExpired, long RingStored);
