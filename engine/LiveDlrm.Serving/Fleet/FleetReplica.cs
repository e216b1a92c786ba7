using LiveDlrm.Online;
using LiveDlrm.Serving.Node;
using LiveDlrm.Online.Persistence;
using TorchSharp;

namespace LiveDlrm.Serving.Fleet;

/// <summary>How a replica applies the log.</summary>
internal sealed record FleetReplicaOptions
{
    /// <summary>This replica's name (its consumer on the log, the producer tag on its examples).</summary>
    public string ReplicaId { get; init; } = "r1";
    /// <summary>Examples per optimizer step. Batch boundaries are fixed by position in the log (every this many
    /// examples), never by time, so every replica forms the same batches; a smaller batch lowers the replication
    /// lag at low example rates.</summary>
    public int BatchSize { get; init; } = 64;

    public void Validate()
    {
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "fleet batch size must be ≥ 1");
        if (string.IsNullOrWhiteSpace(ReplicaId) || ReplicaId.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
            throw new ArgumentException($"replica id '{ReplicaId}' must be letters, digits, '-' or '_'");
    }

    /// <summary>The trainer options every replica of a fleet must use: the example as logged is all a replica has
    /// (no kept activations of a forward it did not run, so data reuse is off and the autograd reference path pools
    /// again through the replica's own adapters), batches are formed here (no wall-clock partial batches), and the
    /// rank stays fixed (growth draws directions from a generator a checkpoint does not carry). The last-layer
    /// update is off: it is not in the adapter checkpoint.</summary>
    public static OnlineTrainerOptions Deterministic(OnlineTrainerOptions o, int batchSize) => o with
    {
        BatchSize = batchSize,
        QueueCapacity = Math.Max(o.QueueCapacity, batchSize),
        MaxBatchWait = null,
        ReuseForward = false,
        AdaptLastLayer = false,
        Adapter = o.Adapter with { RankAdaptInterval = 0 },
    };
}

/// <summary>
/// One replica's deterministic application of the fleet log to its live model. Entries must be given in sequence
/// order (<see cref="Apply"/>); a sequence at or below the last one seen is a redelivery and is ignored. Examples
/// collect into a batch of <see cref="FleetReplicaOptions.BatchSize"/> and are trained as one step on the calling
/// thread, so two replicas that applied the same sequence range from the same checkpoint hold bit-identical adapters
/// (same ISA path: the SIMD kernels and libtorch pick their instructions by CPU). A message may carry several
/// examples (<see cref="ExampleBatch"/>); training batches are counted in examples across messages, so how the
/// producers grouped examples into messages does not change the result. A base marker trains the partial batch,
/// then switches the base, at the same position on every replica.
/// <para>(<see cref="AppliedSequence"/>, <see cref="AppliedOffset"/>) is the position a checkpoint records: every
/// example before it is in the adapter state and none after it, so a restart reads from <c>AppliedSequence + 1</c>
/// and skips the first <c>AppliedOffset</c> examples of that message; examples of a batch not yet trained are read
/// again then.</para>
/// <para>Not thread-safe: one applying thread (the adapters' single writer). Serving may read the adapters
/// concurrently.</para>
/// </summary>
internal sealed class FleetReplica : IDisposable
{
    readonly FleetReplicaOptions _options;
    readonly Func<string, LiveModelNode> _loadBase;
    readonly List<ServedEvent> _pending = new();
    LiveModelNode _node;
    AdapterStore.MergedRows _merged;
    string _basePath;
    ulong _applied, _lastSeen;
    int _appliedOffset, _resumeOffset;
    bool _torchThreadSet;

    public FleetReplicaOptions Options => _options;
    public LiveModelNode Node => _node;
    /// <summary>The base checkpoint directory the node was loaded from.</summary>
    public string BasePath => _basePath;
    /// <summary>Every message up to this sequence is reflected in the adapters, and the first
    /// <see cref="AppliedOffset"/> examples of the next one (a training batch can end inside a message); nothing
    /// after that.</summary>
    public ulong AppliedSequence => _applied;
    /// <summary>Examples of message <see cref="AppliedSequence"/> + 1 already in the adapters (0 unless a training
    /// batch ended inside that message).</summary>
    public int AppliedOffset => _appliedOffset;
    /// <summary>The last sequence given to <see cref="Apply"/> (≥ <see cref="AppliedSequence"/>; the gap is the partial batch).</summary>
    public ulong LastSeen => _lastSeen;
    public int PendingExamples => _pending.Count;

    public long ExamplesApplied { get; private set; }
    /// <summary>Examples that went into training steps, applied or discarded (<see cref="ExamplesApplied"/> counts
    /// only applied steps).</summary>
    public long ExamplesStepped { get; private set; }
    public long Batches { get; private set; }
    /// <summary>Steps the trainer refused (non-finite); deterministic, so every replica refuses the same ones.</summary>
    public long DiscardedBatches { get; private set; }
    /// <summary>Entries ignored because their sequence was already seen (redeliveries).</summary>
    public long Redelivered { get; private set; }
    /// <summary>Messages skipped: undecodable, for another base model, or not of this model's shape.</summary>
    public long Skipped { get; private set; }
    /// <summary>Sequences missing between two applied entries (expired from the log before this replica read them).</summary>
    public long Missing { get; private set; }
    public long BaseSwitches { get; private set; }
    /// <summary>Called on the applying thread when a base marker replaced the node (old, new). Set, the callee owns
    /// the old node (a serving host frees it when its last request ends); unset, the replica disposes it at once.</summary>
    public Action<LiveModelNode, LiveModelNode>? BaseSwitched { get; init; }
    /// <summary>Why the last message was skipped (for the log), or null.</summary>
    public string? LastSkipReason { get; private set; }

    /// <param name="loadBase">Loads a base checkpoint directory as a node with <see cref="FleetReplicaOptions.Deterministic"/>
    /// trainer options (used at a base marker).</param>
    public FleetReplica(LiveModelNode node, string basePath, FleetReplicaOptions options, Func<string, LiveModelNode> loadBase)
    {
        options.Validate();
        _options = options;
        _loadBase = loadBase;
        _node = node;
        _basePath = basePath;
        _merged = Track(node);
    }

    static AdapterStore.MergedRows Track(LiveModelNode node) => AdapterStore.MergedRows.Track(node.Live);

    /// <summary>Applies one log entry (a single example, a batch of examples, or a base marker). Returns true when
    /// it completed (and trained) at least one batch or switched the base.</summary>
    public bool Apply(in LogEntry entry)
    {
        if (entry.Sequence <= _lastSeen) { Redelivered++; return false; }
        if (_lastSeen != 0 && entry.Sequence > _lastSeen + 1) Missing += (long)(entry.Sequence - _lastSeen - 1);
        int resumeAt = entry.Sequence == _lastSeen + 1 ? _resumeOffset : 0;
        _resumeOffset = 0;
        _lastSeen = entry.Sequence;
        LogRecord record;
        try { record = LogRecord.Decode(entry.Payload.Span); }
        catch (InvalidDataException e) { return Skip(entry.Sequence, 0, 1, $"sequence {entry.Sequence}: {e.Message}"); }
        switch (record)
        {
            case TrainingExample example:
                return Take(entry.Sequence, example, 0, 1);
            case ExampleBatch batch:
            {
                bool stepped = false;
                var examples = batch.Examples;
                for (int i = resumeAt; i < examples.Count; i++) stepped |= Take(entry.Sequence, examples[i], i, examples.Count);
                return stepped;
            }
            case BaseMarker marker:
                TrainPending();
                SwitchBase(marker);
                MoveTo(entry.Sequence, 1, 1);
                return true;
            default:
                return Skip(entry.Sequence, 0, 1, $"sequence {entry.Sequence}: unknown record");
        }
    }

    /// <summary>Example <paramref name="index"/> of the <paramref name="count"/> in message <paramref name="sequence"/>.</summary>
    bool Take(ulong sequence, TrainingExample example, int index, int count)
    {
        if (Unfit(example) is { } why) return Skip(sequence, index, count, $"sequence {sequence}, request {example.RequestId}: {why}");
        _pending.Add(new ServedEvent(example.RequestId, example.EventTime, example.Dense, example.Bags, pooled: null) { Label = example.Label });
        if (_pending.Count < _options.BatchSize) return false;
        TrainPending();
        MoveTo(sequence, index + 1, count);
        return true;
    }

    bool Skip(ulong sequence, int index, int count, string why)
    {
        Skipped++;
        LastSkipReason = why;
        if (_pending.Count == 0) MoveTo(sequence, index + 1, count);   // nothing waits before it: the position moves on
        return false;
    }

    /// <summary>The first <paramref name="done"/> of the <paramref name="count"/> examples of message
    /// <paramref name="sequence"/> are in the adapters (and everything before the message).</summary>
    void MoveTo(ulong sequence, int done, int count)
    {
        if (done >= count) { _applied = sequence; _appliedOffset = 0; }
        else { _applied = sequence - 1; _appliedOffset = done; }
    }

    string? Unfit(TrainingExample e)
    {
        if (e.BaseFingerprint != _node.Fingerprint) return $"served by base {e.BaseFingerprint}, this replica has {_node.Fingerprint}";
        var config = _node.Model.Config;
        if (e.Dense.Length != config.DenseFeatures || e.Bags.Length != config.Tables.Count)
            return $"{e.Dense.Length} dense / {e.Bags.Length} sparse features, the model has {config.DenseFeatures} / {config.Tables.Count}";
        for (int t = 0; t < e.Bags.Length; t++)
            foreach (long id in e.Bags[t])
                if ((ulong)id >= (ulong)config.Tables[t].Rows) return $"id {id} out of range for table '{config.Tables[t].Name}'";
        return null;
    }

    void TrainPending()
    {
        if (_pending.Count == 0) return;
        if (!_torchThreadSet) { torch.set_num_threads(1); _torchThreadSet = true; }   // one FP order: no intra-op split
        bool applied = _node.Live.Trainer.TrainOn(_pending);
        Batches++;
        ExamplesStepped += _pending.Count;
        if (applied) ExamplesApplied += _pending.Count;
        else DiscardedBatches++;
        _pending.Clear();
    }

    void SwitchBase(BaseMarker marker)
    {
        var next = _loadBase(marker.Checkpoint);
        if (next.Fingerprint != marker.BaseFingerprint)
        {
            string found = next.Fingerprint;
            next.Dispose();
            throw new FleetException($"base marker names {marker.BaseFingerprint} at {marker.Checkpoint}, but that checkpoint is {found}");
        }
        var old = _node;
        _node = next;
        _merged = Track(next);
        _basePath = marker.Checkpoint;
        BaseSwitches++;
        if (BaseSwitched is { } switched) switched(old, next);
        else old.Dispose();
    }

    /// <summary>The adapter state as the adapter file would hold it (base fingerprint, every adapter, merged rows).</summary>
    public byte[] ExportState() => AdapterStore.Export(_node.Live, _node.Fingerprint, _merged);

    /// <summary>XxHash3 of <see cref="ExportState"/>: equal on two replicas exactly when their adapter states are
    /// equal bit for bit (the serving <c>/adapters</c> endpoint reports the same hash).</summary>
    public ulong Fingerprint() => AdapterStore.Fingerprint(ExportState());

    /// <summary>Replaces the state with a checkpoint's (its base must be this node's; see <see cref="FleetCheckpoint"/>).</summary>
    internal void Restore(FleetCheckpoint checkpoint)
    {
        if (_pending.Count != 0 || _lastSeen != 0) throw new InvalidOperationException("restore a replica before it applies anything");
        AdapterStore.Restore(_node.Live, _node.Fingerprint, _merged, checkpoint.AdapterState, checkpoint.Source,
                             "move the fleet checkpoint away to start this replica from the base and the whole log");
        _applied = _lastSeen = checkpoint.AppliedSequence;
        _appliedOffset = _resumeOffset = checkpoint.AppliedOffset;   // the next message's first examples are in the state
    }

    public void Dispose() => _node.Dispose();
}

/// <summary>The fleet log says something this replica cannot follow (a base marker naming a checkpoint it cannot use).</summary>
internal sealed class FleetException(string message) : Exception(message);
