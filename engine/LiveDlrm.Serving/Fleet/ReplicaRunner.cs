using System.Collections.Concurrent;
using System.Diagnostics;

namespace LiveDlrm.Serving.Fleet;

/// <summary>
/// Runs a <see cref="FleetReplica"/> against the log: a fetch loop reads from the replica's position into a bounded
/// queue, and one dedicated thread — the adapters' single writer, with libtorch's intra-op threads at 1 — applies
/// the entries in order, checkpoints every <see cref="CheckpointInterval"/> and records the replication lag.
/// <para>A gap in the sequence (a message lost in flight on a reconnect, or expired from the log) makes the reader
/// start again right after the last entry seen; if the same gap is still there, the log no longer has those
/// messages: they are counted in <see cref="FleetReplica.Missing"/> and reported (the replica fell behind the
/// stream's retention, and its adapters now differ from its peers': the documented cure is to restart it from a
/// peer's checkpoint). A failed read (connection lost) is retried from the same position after a second.</para>
/// </summary>
internal sealed class ReplicaRunner : IAsyncDisposable
{
    readonly IExampleLog _log;
    readonly FleetReplica _replica;
    readonly string _stream;
    readonly string? _checkpointDir;
    readonly FleetMetrics? _metrics;
    readonly Action<string> _logLine;
    readonly BlockingCollection<(int Read, LogEntry Entry)> _queue = new(8192);
    readonly CancellationTokenSource _stop = new();
    readonly ConcurrentQueue<TaskCompletionSource<(ulong Sequence, ulong Fingerprint)>> _fingerprintRequests = new();
    readonly ConcurrentQueue<Action> _onThread = new();   // run on the applying thread between entries (its scheduling treatment)
    readonly LiveDlrm.Scheduling.DutyCycleGate _throttle = new();
    int _threadId;
    readonly Queue<DateTimeOffset> _pendingAppended = new();   // append time of each example not yet in a training step
    readonly object _sync = new();
    readonly Thread _thread;
    Task? _fetch;
    int _read;
    CancellationTokenSource? _readCts;
    ulong? _seekFrom;
    ulong _reseekedAt = ulong.MaxValue;
    long _lastSeen, _applied;
    long _fingerprintTicks;
    (ulong Sequence, int Offset) _lastCheckpointed;
    Exception? _failure;
    DateTimeOffset? _appliedAppended;
    readonly List<double> _lags = new();   // replication lag samples for the status (the first MaxLagSamples)
    const int MaxLagSamples = 1 << 20;
    Task _checkpointWrite = Task.CompletedTask;
    ulong _lastFingerprint, _lastReportedSeen;

    /// <summary>How often the state is checkpointed (with a directory) and the status reported (with <see cref="ReportStatus"/>).</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Report the replica's <see cref="FleetStatus"/> to the log's status board at each interval and at the end.</summary>
    public bool ReportStatus { get; init; }
    public FleetReplica Replica => _replica;
    public ulong LastSeen => (ulong)Interlocked.Read(ref _lastSeen);
    public ulong AppliedSequence => (ulong)Interlocked.Read(ref _applied);
    /// <summary>Seconds since the fingerprint was last computed (∞ before the first).</summary>
    public double FingerprintAge { get { long t = Interlocked.Read(ref _fingerprintTicks); return t == 0 ? double.PositiveInfinity : Stopwatch.GetElapsedTime(t).TotalSeconds; } }
    public Exception? Failure => Volatile.Read(ref _failure);
    /// <summary>The applying thread's duty cycle: a serving node's QoS controller turns it like the colocated
    /// trainer's (docs/fleet.md). It only delays entries between one and the next, so what is trained, and in which
    /// order, does not change; the replication lag does. Full (1) unless something sets it.</summary>
    public LiveDlrm.Scheduling.ITrainerThrottle Throttle => _throttle;
    /// <summary>The Linux TID of the applying thread once it runs (0 before, or without libc).</summary>
    public int ThreadId => Volatile.Read(ref _threadId);

    /// <summary>Runs <paramref name="action"/> on the applying thread before its next entry (a scheduling treatment:
    /// nice value, SCHED_IDLE), or before the first when it has not started yet.</summary>
    public void OnApplyingThread(Action action) => _onThread.Enqueue(action);
    /// <summary>When the message at <see cref="AppliedSequence"/> was appended to the log (null before the first).</summary>
    public DateTimeOffset? AppliedAppendedAt { get { lock (_sync) return _appliedAppended; } }

    public ReplicaRunner(IExampleLog log, FleetReplica replica, string stream, string? checkpointDir, FleetMetrics? metrics, Action<string> logLine)
    {
        _log = log; _replica = replica; _stream = stream; _checkpointDir = checkpointDir; _metrics = metrics; _logLine = logLine;
        _lastSeen = (long)replica.LastSeen;
        _applied = (long)replica.AppliedSequence;
        _lastCheckpointed = (replica.AppliedSequence, replica.AppliedOffset);
        _thread = new Thread(ApplyLoop) { Name = $"livedlrm-fleet-{replica.Options.ReplicaId}", IsBackground = true };
    }

    public void Start()
    {
        _thread.Start();
        _fetch = Task.Run(FetchLoop);
    }

    async Task FetchLoop()
    {
        var stop = _stop.Token;
        while (!stop.IsCancellationRequested)
        {
            int read; ulong from; CancellationTokenSource cts;
            lock (_sync)
            {
                read = _read;
                from = _seekFrom ?? LastSeen + 1;
                _seekFrom = null;
                cts = _readCts = CancellationTokenSource.CreateLinkedTokenSource(stop);
            }
            try
            {
                await foreach (var e in _log.ReadAsync(_replica.Options.ReplicaId, from, cts.Token))
                    _queue.Add((read, e), cts.Token);
            }
            catch (OperationCanceledException) when (cts.IsCancellationRequested) { }
            catch (Exception e) when (!stop.IsCancellationRequested)
            {
                _metrics?.ReadErrors.Add(1);
                _logLine($"fleet: reading the log failed ({e.GetType().Name}: {e.Message}); reading again from sequence {LastSeen + 1}");
                lock (_sync) _read++;   // anything still queued from this read is dropped and read again
                try { await Task.Delay(1000, stop); } catch (OperationCanceledException) { }
            }
            finally { cts.Dispose(); }
        }
    }

    void Reseek(ulong from)
    {
        lock (_sync)
        {
            _read++;
            _seekFrom = from;
            try { _readCts?.Cancel(); } catch (ObjectDisposedException) { }
        }
    }

    void ApplyLoop()
    {
        try
        {
            if (LiveDlrm.Numa.ThreadAffinity.IsAvailable) Volatile.Write(ref _threadId, LiveDlrm.Numa.ThreadAffinity.CurrentThreadId());
            var checkpointClock = Stopwatch.StartNew();
            while (!_stop.IsCancellationRequested)
            {
                while (_onThread.TryDequeue(out var action)) action();
                if (_queue.TryTake(out var item, 50))
                {
                    int current;
                    lock (_sync) current = _read;
                    if (item.Read == current)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        ApplyOne(item.Entry);
                        Slow("applying sequence " + item.Entry.Sequence, t0);
                        // The duty cycle idles the thread after the work it did (and holds it while paused).
                        if (!_throttle.AfterStep(Stopwatch.GetTimestamp() - t0)) break;
                    }
                }
                while (_fingerprintRequests.TryDequeue(out var request)) request.TrySetResult((_replica.AppliedSequence, ComputeFingerprint()));
                if (checkpointClock.Elapsed >= CheckpointInterval)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    Checkpoint();
                    Slow("checkpoint", t0);
                    checkpointClock.Restart();
                }
            }
            Checkpoint(final: true);
        }
        catch (Exception e)
        {
            Volatile.Write(ref _failure, e);
            _logLine($"fleet: replica {_replica.Options.ReplicaId} stopped applying the log: {e.Message}");
        }
        finally
        {
            while (_fingerprintRequests.TryDequeue(out var request)) request.TrySetCanceled();
        }
    }

    /// <summary>A pause on the applying thread longer than this is logged with its cause: every example waiting
    /// behind it carries the pause in its replication lag.</summary>
    public TimeSpan SlowThreshold { get; init; } = TimeSpan.FromMilliseconds(200);

    void Slow(string what, long started)
    {
        var took = Stopwatch.GetElapsedTime(started);
        if (took >= SlowThreshold)
            _logLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"fleet: {what} took {took.TotalMilliseconds:F0} ms on the applying thread ({_queue.Count} entries queued, GC pause total {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms)"));
    }

    void ApplyOne(in LogEntry entry)
    {
        _metrics?.Consumed.Add(1);
        ulong seen = _replica.LastSeen;
        if (entry.Sequence > seen + 1 && seen != 0 || seen == 0 && entry.Sequence > 1 && _reseekedAt != 0)
        {
            // A gap: read again right after the last entry seen, once; a gap still there afterwards is real.
            if (_reseekedAt != seen)
            {
                _reseekedAt = seen;
                Reseek(seen + 1);
                return;
            }
            _logLine($"fleet: sequences {seen + 1}..{entry.Sequence - 1} are no longer in the log; replica {_replica.Options.ReplicaId} fell behind the stream's retention and now differs from its peers (restart it from a peer's checkpoint)");
        }
        long steppedBefore = _replica.ExamplesStepped;
        int pendingBefore = _replica.PendingExamples;
        _replica.Apply(entry);
        // Examples this entry added (a batch message adds many), then those that training steps consumed, oldest first.
        long stepped = _replica.ExamplesStepped - steppedBefore;
        long added = stepped + _replica.PendingExamples - pendingBefore;
        for (long i = 0; i < added; i++) _pendingAppended.Enqueue(entry.Appended);
        if (stepped > 0)
        {
            var now = DateTimeOffset.UtcNow;
            for (long i = 0; i < stepped && _pendingAppended.Count > 0; i++)
            {
                double lag = (now - _pendingAppended.Dequeue()).TotalSeconds;
                _metrics?.ReplicationLag.Record(lag);
                if (_lags.Count < MaxLagSamples) _lags.Add(lag);
            }
            _metrics?.AppliedExamples.Add(stepped);
        }
        if (_replica.PendingExamples == 0) _pendingAppended.Clear();   // a base switch or skipped examples left nothing waiting
        if (_replica.AppliedSequence == entry.Sequence) lock (_sync) _appliedAppended = entry.Appended;
        Interlocked.Exchange(ref _lastSeen, (long)_replica.LastSeen);
        Interlocked.Exchange(ref _applied, (long)_replica.AppliedSequence);
    }

    ulong ComputeFingerprint()
    {
        ulong f = _replica.Fingerprint();
        Interlocked.Exchange(ref _fingerprintTicks, Stopwatch.GetTimestamp());
        return f;
    }

    /// <summary>Exports the state on the applying thread (the single writer: the export is consistent), then writes
    /// the checkpoint, hashes it and reports the status on a background task, so the file write (and its fsync) does
    /// not stall the log; one write at a time, the next interval skips while one is still running. The final one
    /// is synchronous.</summary>
    void Checkpoint(bool final = false)
    {
        var position = (_replica.AppliedSequence, _replica.AppliedOffset);
        if (!_checkpointWrite.IsCompleted)
        {
            if (!final) return;
            _checkpointWrite.Wait(TimeSpan.FromSeconds(30));
        }
        if (position == _lastCheckpointed && _fingerprintTicks != 0)
        {
            // Nothing new in the adapters; the status still moves when entries arrived (a partial batch).
            if (ReportStatus && (final || _replica.LastSeen != _lastReportedSeen))
            {
                _lastReportedSeen = _replica.LastSeen;
                var unchanged = Status(Interlocked.Read(ref _lastFingerprint));
                _checkpointWrite = PublishStatus(unchanged);
                if (final) _checkpointWrite.Wait(TimeSpan.FromSeconds(5));
            }
            return;
        }
        var checkpoint = FleetCheckpoint.Of(_replica, _stream);
        bool save = _checkpointDir is not null && position != _lastCheckpointed;
        _lastCheckpointed = position;
        _lastReportedSeen = _replica.LastSeen;
        var status = ReportStatus ? Status(0) : null;
        if (final)
        {
            // On the way out a failed write is the caller's to see.
            if (save) checkpoint.Save(_checkpointDir!);
            Finish(checkpoint, status).Wait(TimeSpan.FromSeconds(5));
            return;
        }
        _checkpointWrite = Task.Run(async () =>
        {
            try { if (save) checkpoint.Save(_checkpointDir!); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _logLine($"fleet: writing the checkpoint failed ({e.GetType().Name}: {e.Message}); trying again at the next interval");
                _lastCheckpointed = default;   // read by the applying thread only after this task completed
            }
            await Finish(checkpoint, status);
        });
    }

    Task Finish(FleetCheckpoint checkpoint, FleetStatus? status)
    {
        ulong fingerprint = LiveDlrm.Online.Persistence.AdapterStore.Fingerprint(checkpoint.AdapterState);
        Interlocked.Exchange(ref _lastFingerprint, fingerprint);
        Interlocked.Exchange(ref _fingerprintTicks, Stopwatch.GetTimestamp());
        return status is null ? Task.CompletedTask : PublishStatus(status with { Fingerprint = fingerprint.ToString("x16") });
    }

    FleetStatus Status(ulong fingerprint)
    {
        double p50 = double.NaN, p99 = double.NaN;
        if (_lags.Count > 0)
        {
            var sorted = _lags.ToArray();
            Array.Sort(sorted);
            p50 = sorted[(int)Math.Min(sorted.Length - 1, Math.Floor(0.50 * sorted.Length))];
            p99 = sorted[(int)Math.Min(sorted.Length - 1, Math.Floor(0.99 * sorted.Length))];
        }
        return new FleetStatus
        {
            Replica = _replica.Options.ReplicaId, Stream = _stream, BaseFingerprint = _replica.Node.Fingerprint,
            AppliedSequence = _replica.AppliedSequence, AppliedOffset = _replica.AppliedOffset, LastSeen = _replica.LastSeen, Fingerprint = fingerprint.ToString("x16"),
            ExamplesApplied = _replica.ExamplesApplied, Skipped = _replica.Skipped, Missing = _replica.Missing,
            AppliedAppendedAt = _appliedAppended, ReportedAt = DateTimeOffset.UtcNow,
            LagP50Seconds = p50, LagP99Seconds = p99, LagSamples = _lags.Count,
        };
    }

    async Task PublishStatus(FleetStatus status)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _log.PublishStatusAsync(status, cts.Token);
        }
        catch (Exception e) { _logLine($"fleet: reporting the status failed ({e.GetType().Name}: {e.Message})"); }
    }

    /// <summary>The adapter fingerprint and the sequence it belongs to, computed on the applying thread between entries.</summary>
    public Task<(ulong Sequence, ulong Fingerprint)> FingerprintAsync()
    {
        var tcs = new TaskCompletionSource<(ulong, ulong)>(TaskCreationOptions.RunContinuationsAsynchronously);
        _fingerprintRequests.Enqueue(tcs);
        if (!_thread.IsAlive && _thread.ThreadState != System.Threading.ThreadState.Unstarted)
            while (_fingerprintRequests.TryDequeue(out var r)) r.TrySetCanceled();
        return tcs.Task;
    }

    /// <summary>Waits until the replica has seen <paramref name="sequence"/> (tests and the benchmark); false on timeout.</summary>
    public async Task<bool> WaitForAsync(ulong sequence, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (LastSeen < sequence)
        {
            if (sw.Elapsed > timeout || Failure is not null) return false;
            await Task.Delay(5);
        }
        return true;
    }

    /// <summary>Stops reading and applying; writes a final checkpoint when a directory is set.</summary>
    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _throttle.Release();   // a paused or idling applying thread wakes and stops
        if (_fetch is not null) { try { await _fetch; } catch (OperationCanceledException) { } }
        if (_thread.ThreadState != System.Threading.ThreadState.Unstarted) _thread.Join();
        _queue.Dispose();
        _stop.Dispose();
        _throttle.Dispose();
    }
}
