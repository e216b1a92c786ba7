using LiveDlrm.Runtime;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Training;

namespace LiveDlrm.Replay;

/// <summary>One update mode inside the replay loop: scores batches, learns from labels once they arrive,
/// applies whatever is due at an event time, and accounts its update cost.</summary>
abstract class ModeRunner : IDisposable
{
    public abstract void Score(EventBatch batch, Span<float> scores);
    /// <summary>The labels of <paramref name="batch"/> (scored earlier) arrived at event time <paramref name="now"/>.</summary>
    public virtual void Learn(EventBatch batch, long now) { }
    public virtual void AdvanceTo(long now) { }
    public abstract UpdateCost Cost { get; }
    /// <summary>Adds the mode's state at the end of a window (cumulative cost, adapter memory, ranks).</summary>
    public virtual WindowResult Describe(WindowResult window) =>
        window with { NetworkBytes = Cost.NetworkBytes, CpuSeconds = Cost.CpuSeconds };
    public virtual ModeResult Finish(ModeResult result) => result;
    public abstract void Dispose();
}

/// <summary>The base model, never updated.</summary>
sealed class StaleRunner(DlrmModel baseModel) : ModeRunner
{
    readonly DlrmModel _model = ModelCopy.Clone(baseModel, ModelCopy.InlineCpuBackend());

    public override void Score(EventBatch batch, Span<float> scores) => _model.Predict(batch, scores);
    public override UpdateCost Cost => new();
    public override void Dispose() => _model.Dispose();
}

/// <summary>
/// Delta updates: a full-parameter <see cref="DlrmTrainer"/> (the "training cluster") learns on the labelled
/// stream; at each sync point (every sync interval of event time) what changed since the previous one — the
/// changed rows as stored bytes with their int64 ids, the dense parameters only if a step ran — is snapshotted and
/// shipped, landing on the serving copy a sync delay later. A sync point with no change ships nothing; sync points
/// passed without an event in between are one snapshot (nothing can have changed between them), so the cost grows
/// with events, not with elapsed event time. Cost: shipped bytes = Σ rows × (row bytes + 8) + dense bytes × syncs
/// with a step; CPU of the trainer's steps, of taking the snapshot and of applying it (thread CPU clocks).
/// </summary>
sealed class DeltaRunner : ModeRunner
{
    readonly DlrmModel _serving;
    readonly DlrmModel? _ownTrainerModel;
    readonly DlrmTrainer _trainer;
    readonly bool _ownsTrainer;
    readonly ReplayOptions _options;
    readonly Queue<Shipment> _inFlight = new();
    long _nextSync = long.MinValue;
    long _stepsShipped;
    long _bytes, _rows;
    int _syncs;
    double _trainerCpu, _applyCpu;

    sealed record Shipment(long Arrival, long[][] Rows, byte[][] Bytes, DlrmDenseNet? Dense);

    /// <param name="baseTrainer">The trainer that made the base model, continued (null: a new trainer on a copy).</param>
    public DeltaRunner(DlrmModel baseModel, DlrmTrainer? baseTrainer, ReplayOptions options)
    {
        _options = options;
        _serving = ModelCopy.Clone(baseModel, ModelCopy.InlineCpuBackend());
        if (baseTrainer is not null && ReferenceEquals(baseTrainer.Model, baseModel))
        {
            _trainer = baseTrainer;
        }
        else
        {
            _ownTrainerModel = ModelCopy.Clone(baseModel, ModelCopy.InlineCpuBackend());
            _trainer = new DlrmTrainer(_ownTrainerModel, options.FullTrainer);
            _ownsTrainer = true;
        }
        _trainer.Changes.TakeChanges();   // rows the base training changed are already on the server
        _stepsShipped = _trainer.Steps;
    }

    public override void Score(EventBatch batch, Span<float> scores) => _serving.Predict(batch, scores);

    public override void Learn(EventBatch batch, long now)
    {
        double c0 = ThreadCpuClock.Now();
        _trainer.Step(batch);
        _trainerCpu += ThreadCpuClock.Now() - c0;
    }

    public override void AdvanceTo(long now)
    {
        if (_nextSync == long.MinValue) _nextSync = SaturatingMath.Add(now, _options.SyncIntervalSeconds);
        if (now >= _nextSync && _nextSync != long.MaxValue)
        {
            // The first sync point passed takes everything learned so far; later ones passed in the same gap would
            // find nothing new, so they are skipped arithmetically.
            Snapshot(SaturatingMath.Add(_nextSync, _options.SyncDelaySeconds));
            _nextSync = SaturatingMath.Add(_nextSync, SaturatingMath.Multiply((now - _nextSync) / _options.SyncIntervalSeconds + 1, _options.SyncIntervalSeconds));
        }
        while (_inFlight.Count > 0 && _inFlight.Peek().Arrival <= now) Apply(_inFlight.Dequeue());
    }

    void Snapshot(long arrival)
    {
        double c0 = ThreadCpuClock.Now();
        var changes = _trainer.Changes.TakeChanges();
        bool denseChanged = _trainer.Steps != _stepsShipped;
        if (changes.RowCount == 0 && !denseChanged) { _applyCpu += ThreadCpuClock.Now() - c0; return; }
        var tables = _trainer.Model.Tables;
        var bytes = new byte[tables.Count][];
        for (int t = 0; t < tables.Count; t++)
        {
            var rows = changes.Rows[t];
            int stride = tables[t].RowStride;
            var buffer = bytes[t] = new byte[rows.Length * stride];
            for (int i = 0; i < rows.Length; i++) tables[t].StoredRow(rows[i]).CopyTo(buffer.AsSpan(i * stride, stride));
        }
        DlrmDenseNet? dense = null;
        if (denseChanged)
        {
            dense = new DlrmDenseNet(_trainer.Model.Config);
            dense.CopyFrom(_trainer.Model.Dense);
            _stepsShipped = _trainer.Steps;
        }
        _inFlight.Enqueue(new Shipment(arrival, changes.Rows.ToArray(), bytes, dense));
        _bytes += changes.Bytes + changes.RowCount * sizeof(long) + (denseChanged ? _trainer.DenseBytes : 0);
        _rows += changes.RowCount;
        _syncs++;
        _applyCpu += ThreadCpuClock.Now() - c0;
    }

    void Apply(Shipment s)
    {
        double c0 = ThreadCpuClock.Now();
        var tables = _serving.Tables;
        for (int t = 0; t < tables.Count; t++)
        {
            int stride = tables[t].RowStride;
            var rows = s.Rows[t];
            for (int i = 0; i < rows.Length; i++) s.Bytes[t].AsSpan(i * stride, stride).CopyTo(tables[t].StoredRow(rows[i]));
        }
        if (s.Dense is not null)
        {
            _serving.Dense.CopyFrom(s.Dense);
            s.Dense.Dispose();
        }
        _applyCpu += ThreadCpuClock.Now() - c0;
    }

    public override UpdateCost Cost => new()
    {
        NetworkBytes = _bytes, TrainerCpuSeconds = _trainerCpu, ApplyCpuSeconds = _applyCpu, Syncs = _syncs, RowsShipped = _rows,
    };

    public override void Dispose()
    {
        while (_inFlight.Count > 0) _inFlight.Dequeue().Dense?.Dispose();
        if (_ownsTrainer) _trainer.Dispose();
        _ownTrainerModel?.Dispose();
        _serving.Dispose();
    }
}

/// <summary>
/// Live updates: the serving copy is a <see cref="LiveModel"/> answering through LoRA adapters; served requests
/// wait in its ring and their labels are joined by request id when they arrive; its <see cref="OnlineTrainer"/>
/// thread trains the adapters and the very next batch is served through them. Cost: the trainer thread's CPU;
/// merges write rows into the local tables (counted, never shipped).
/// </summary>
sealed class LiveRunner : ModeRunner
{
    readonly LiveModel _live;
    readonly IReadOnlyList<TableAdapter?> _adapters;
    readonly OnlineTrainer _trainer;
    readonly long _tableBytes;
    readonly long _totalBudget;
    readonly long[] _maxBytes;
    readonly int[] _seenHistory;
    readonly List<RankRecord> _ranks = new();
    double _memoryPctMax, _joinCpu;
    long _maxLag;

    /// <summary>Bytes of the per-row optimizer state kept beside the adapted tables (0 without warm row state).</summary>
    public long RowStateBytes { get; }

    /// <param name="baseTrainer">The trainer that made the base model (null for a loaded checkpoint): with
    /// <see cref="ReplayOptions.WarmRowState"/> each adapter row starts from its base row's Adagrad state.</param>
    public LiveRunner(DlrmModel baseModel, DlrmTrainer? baseTrainer, ReplayOptions options)
    {
        _live = LiveModel.FromBase(baseModel, new LiveModelOptions
        {
            Trainer = options.OnlineTrainer,
            RingCapacity = 1 << 18,
            BaseBackend = options.LiveBaseBackend ?? ModelCopy.InlineCpuBackend,
        });
        _adapters = _live.Adapters;
        _trainer = _live.Trainer;
        _tableBytes = _live.Model.TableBytes;
        _totalBudget = (long)Math.Floor(options.OnlineTrainer.Adapter.BudgetFraction * _tableBytes);
        _maxBytes = new long[_adapters.Count];
        _seenHistory = new int[_adapters.Count];
        if (options.WarmRowState && baseTrainer is not null)
            for (int t = 0; t < _adapters.Count; t++)
                if (_adapters[t] is { } a)
                {
                    a.RowState = new RowAccumulators(baseTrainer.CopyAccumulators(t));
                    RowStateBytes += a.RowState.Bytes;
                }
        _live.Start();
        ObserveMemory();
    }

    public override void Score(EventBatch batch, Span<float> scores) => _live.Serve(batch, scores);

    public override void Learn(EventBatch batch, long now)
    {
        var ids = batch.RequestIds;
        var labels = batch.Labels;
        double c0 = ThreadCpuClock.Now();
        for (int i = 0; i < batch.Count; i++) _live.Feedback(ids[i], labels[i]);
        _joinCpu += ThreadCpuClock.Now() - c0;
        _trainer.Drain();   // waits for the trainer thread (its CPU is counted there)
        _maxLag = Math.Max(_maxLag, _trainer.LagSeconds);
        ObserveMemory();
        for (int t = 0; t < _adapters.Count; t++)
        {
            var a = _adapters[t];
            if (a is null) continue;
            var history = a.History;
            for (int k = _seenHistory[t]; k < history.Count; k++)
            {
                var e = history[k];
                _ranks.Add(new RankRecord(now, a.Table.Name, e.Step, e.OldRank, e.NewRank, e.KeptEnergy, e.AdapterBytes, e.BudgetBytes));
            }
            _seenHistory[t] = history.Count;
        }
    }

    void ObserveMemory()
    {
        long total = 0;
        for (int t = 0; t < _adapters.Count; t++)
        {
            var a = _adapters[t];
            if (a is null) continue;
            long bytes = a.AllocatedBytes;
            if (bytes > a.BudgetBytes) throw new InvalidOperationException($"table '{a.Table.Name}': adapter holds {bytes} bytes, over its budget of {a.BudgetBytes}");
            _maxBytes[t] = Math.Max(_maxBytes[t], bytes);
            total += bytes;
        }
        // The bound is over the model's table bytes; with a joint budget it is the only per-model bound.
        if (total > _totalBudget) throw new InvalidOperationException($"adapters hold {total} bytes in all, over the total budget of {_totalBudget}");
        _memoryPctMax = Math.Max(_memoryPctMax, 100.0 * total / _tableBytes);
    }

    long MergedBytes => _adapters.Where(a => a is not null).Sum(a => (a!.MergedRows + a.InPlaceRowUpdates) * a.Table.RowStride);   // merges and in-place steps write W rows

    public override UpdateCost Cost => new() { TrainerCpuSeconds = _trainer.CpuSeconds, JoinCpuSeconds = _joinCpu, LocalBytesWritten = MergedBytes };

    public override WindowResult Describe(WindowResult window)
    {
        long adapterBytes = _adapters.Where(a => a is not null).Sum(a => a!.AllocatedBytes);
        return base.Describe(window) with
        {
            AdapterMemoryPct = 100.0 * adapterBytes / _tableBytes,
            Ranks = _adapters.Where(a => a is not null).ToDictionary(a => a!.Table.Name, a => a!.Rank),
            TrainerLagSeconds = _trainer.LagSeconds,
            TrainerDrops = _trainer.Drops,
        };
    }

    public override ModeResult Finish(ModeResult result)
    {
        _trainer.Drain();
        var tables = new List<AdapterTableStats>();
        for (int t = 0; t < _live.Model.Tables.Count; t++)
        {
            var table = _live.Model.Tables[t];
            var a = _adapters[t];
            tables.Add(a is null
                ? new AdapterTableStats(table.Name, false, table.ByteSize, 0, 0, 0, 0, 0, 0)
                : new AdapterTableStats(table.Name, true, table.ByteSize, a.BudgetBytes, _maxBytes[t], a.Rank, a.MergedRows, a.RejectedSteps, a.DroppedRowUpdates,
                                         a.IndicesOnHotRows, a.IndicesOnSlots, a.InPlaceRowUpdates, a.Options.InPlaceOnly));
        }
        long budget = _adapters.Where(a => a is not null).Sum(a => a!.BudgetBytes);
        return result with
        {
            Cost = Cost,
            Live = new LiveStats
            {
                AdapterMemoryPctMax = _memoryPctMax,
                AdapterBudgetPct = 100.0 * budget / _tableBytes,
                RowStateBytes = RowStateBytes,
                RowStatePct = 100.0 * RowStateBytes / _tableBytes,
                RankHistory = _ranks,
                Tables = tables,
                Samples = _trainer.SamplesProcessed,
                Steps = _trainer.Steps,
                DiscardedSteps = _trainer.DiscardedSteps,
                Drops = _trainer.Drops,
                UnknownFeedback = _live.Ring.UnknownFeedback,
                ExpiredRequests = _live.Ring.Expired,
                MaxLagSeconds = _maxLag,
                SamplesPerBusySecond = _trainer.SamplesPerBusySecond,
                ReuseForward = _trainer.Options.ReuseForward,
                BaseBackend = _live.BaseBackend.Name,
            },
        };
    }

    public override void Dispose() => _live.Dispose();
}
