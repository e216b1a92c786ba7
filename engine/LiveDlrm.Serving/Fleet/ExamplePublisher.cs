using System.Globalization;
using System.Threading.Channels;

namespace LiveDlrm.Serving.Fleet;

/// <summary>How the publisher groups examples into messages.</summary>
internal sealed record PublisherBatching
{
    /// <summary>Examples per message at most (1 = one example per message, the single-example record).</summary>
    public int MaxExamples { get; init; } = 256;
    /// <summary>How long the first example of a message may wait for more: the bound this adds to the replication
    /// lag. A message leaves when it is full or this has passed, whichever comes first.</summary>
    public TimeSpan Linger { get; init; } = TimeSpan.FromMilliseconds(20);
    /// <summary>Brotli-compress a batch when that makes it smaller.</summary>
    public bool Compress { get; init; } = true;

    public static readonly PublisherBatching Default = new();
    public static readonly PublisherBatching None = new() { MaxExamples = 1, Linger = TimeSpan.Zero, Compress = false };

    public void Validate()
    {
        if (MaxExamples < 1 || MaxExamples > 1 << 16) throw new ArgumentOutOfRangeException(nameof(MaxExamples), MaxExamples, "examples per message must be in 1..65536");
        if (Linger < TimeSpan.Zero || Linger > TimeSpan.FromSeconds(10)) throw new ArgumentOutOfRangeException(nameof(Linger), Linger, "linger must be in 0..10 s");
    }
}

/// <summary>
/// Publishes a node's labelled examples to the fleet log without ever blocking the request path: <see cref="Enqueue"/>
/// writes to a bounded local spool (oldest dropped and counted when full), one background loop groups waiting
/// examples into messages (<see cref="PublisherBatching"/>: up to a count, waiting at most the linger), publishes
/// them in order and retries a failed publish with the same bytes and message id (so a publish that did land before
/// the failure is not appended twice) until the connection returns. The message id is <c>REPLICA-REQUESTID</c> for
/// a single example and <c>REPLICA-bFIRSTREQUESTID+COUNT</c> for a batch: request ids are unique within the replica
/// that served them. Replicas train by example position, so the grouping does not change what they learn.
/// </summary>
internal sealed class ExamplePublisher : IAsyncDisposable
{
    readonly IExampleLog _log;
    readonly Channel<(TrainingExample Example, long Index)> _spool;
    readonly Func<FleetMetrics?> _metrics;
    readonly Action<string> _logLine;
    readonly PublisherBatching _batching;
    readonly CancellationTokenSource _stop = new();
    readonly Task _loop;
    readonly DiskSpool? _disk;
    readonly DiskSpool.Recovered? _recovered;
    readonly object _enqueueLock = new();
    long _nextIndex;
    long _dropped, _published, _errors, _inFlight;

    public long Dropped => Interlocked.Read(ref _dropped);
    public long Published => Interlocked.Read(ref _published);
    public long Errors => Interlocked.Read(ref _errors);
    /// <summary>Examples found in the on-disk spool at start (the message in flight and those waiting).</summary>
    public long Recovered => _recovered is { } r ? r.InFlight.Count + r.Waiting.Count : 0;
    /// <summary>The on-disk spool, when there is one.</summary>
    public DiskSpool? Disk => _disk;
    /// <summary>Examples waiting (in the spool or being published).</summary>
    public long Waiting => _spool.Reader.Count + Interlocked.Read(ref _inFlight);
    /// <summary>How long one publish attempt may wait for the log's acknowledgement before it counts as failed and
    /// is retried (same id). While the connection is down, the NATS client holds a publish until it reconnects;
    /// without a bound the failure would never show in the counters.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Examples per message as published so far (messages, examples).</summary>
    public (long Messages, long Examples) MessageCounts => (Interlocked.Read(ref _messages), Interlocked.Read(ref _published));
    long _messages;

    /// <summary>Called on the publishing loop after the log acknowledged a message, with its examples (benchmarks
    /// and tests measure publish latency with it; keep it short).</summary>
    public Action<IReadOnlyList<TrainingExample>, PublishAck>? OnPublished { get; init; }

    /// <param name="spoolDir">Keep the spool on disk there too (<see cref="DiskSpool"/>): what a crash left in it is
    /// published first. Null: memory only.</param>
    public ExamplePublisher(IExampleLog log, int spoolCapacity, Func<FleetMetrics?> metrics, Action<string> logLine, PublisherBatching? batching = null,
                            string? spoolDir = null)
    {
        if (spoolCapacity < 1) throw new ArgumentOutOfRangeException(nameof(spoolCapacity), spoolCapacity, "fleet spool capacity must be ≥ 1");
        _batching = batching ?? PublisherBatching.Default;
        _batching.Validate();
        _log = log;
        _metrics = metrics;
        _logLine = logLine;
        _spool = Channel.CreateBounded<(TrainingExample Example, long Index)>(
            new BoundedChannelOptions(spoolCapacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true },
            item =>
            {
                Interlocked.Increment(ref _dropped);
                _metrics()?.SpoolDropped.Add(1);
                if (item.Index >= 0) _disk?.Drop(item.Index);
            });
        if (spoolDir is not null)
        {
            (_disk, _recovered) = DiskSpool.Open(spoolDir);
            _nextIndex = _recovered.NextIndex;
            if (_recovered.Damaged) _logLine($"fleet: the spool {_disk.FilePath} ended in a damaged record (a write cut by a crash); kept what came before it");
            if (Recovered > 0)
            {
                _logLine(string.Create(CultureInfo.InvariantCulture, $"fleet: {Recovered} example(s) spooled before the last stop found in {_disk.FilePath}; publishing them first"));
                lock (_enqueueLock) foreach (var w in _recovered.Waiting) _spool.Writer.TryWrite(w);
            }
        }
        _loop = Task.Run(RunAsync);
    }

    /// <summary>Queues an example for the log; never blocks on the log, never throws for a full spool. With a disk
    /// spool the example is appended to its file first (one write to the operating system).</summary>
    public void Enqueue(TrainingExample example)
    {
        if (_disk is null) { _spool.Writer.TryWrite((example, -1)); return; }
        lock (_enqueueLock)
        {
            long index = _nextIndex++;
            try { _disk.Append(index, example); }
            catch (IOException e)
            {
                _logLine($"fleet: appending to the disk spool failed ({e.Message}); the example is spooled in memory only");
                index = -1;
            }
            _spool.Writer.TryWrite((example, index));
        }
    }

    async Task RunAsync()
    {
        var ct = _stop.Token;
        var batch = new List<TrainingExample>(_batching.MaxExamples);
        var indices = new List<long>(_batching.MaxExamples);
        (TrainingExample Example, long Index)? carried = null;   // read but not of the batch in hand (another base or producer): opens the next
        try
        {
            if (_recovered is { InFlight.Count: > 0 } r)
            {
                // The message formed before the crash goes out again as it was: same examples, same id.
                Interlocked.Exchange(ref _inFlight, r.InFlight.Count);
                await PublishAsync([.. r.InFlight], ct);
                Interlocked.Exchange(ref _inFlight, 0);
            }
            if (Recovered > 0) _metrics()?.SpoolRecovered.Add(Recovered);
            while (carried is not null || await _spool.Reader.WaitToReadAsync(ct))
            {
                batch.Clear();
                indices.Clear();
                if (carried is { } c) { batch.Add(c.Example); indices.Add(c.Index); carried = null; }
                Interlocked.Exchange(ref _inFlight, batch.Count + 1);   // before the read: Waiting never misses the example in hand
                long deadline = Environment.TickCount64 + (long)_batching.Linger.TotalMilliseconds;
                while (batch.Count < _batching.MaxExamples)
                {
                    if (_spool.Reader.TryRead(out var item))
                    {
                        var example = item.Example;
                        if (batch.Count > 0 && (example.Replica != batch[0].Replica || example.BaseFingerprint != batch[0].BaseFingerprint
                                                || example.Dense.Length != batch[0].Dense.Length || example.Bags.Length != batch[0].Bags.Length))
                        { carried = item; break; }
                        batch.Add(example);
                        indices.Add(item.Index);
                        Interlocked.Exchange(ref _inFlight, batch.Count + 1);
                        continue;
                    }
                    long wait = deadline - Environment.TickCount64;
                    if (batch.Count == 0 || wait <= 0) break;
                    // Linger: wait for more examples, at most until the first one's deadline.
                    var more = _spool.Reader.WaitToReadAsync(ct).AsTask();
                    if (await Task.WhenAny(more, Task.Delay((int)wait, ct)) != more) break;
                    if (!await more) break;
                }
                if (batch.Count == 0) { Interlocked.Exchange(ref _inFlight, carried is null ? 0 : 1); continue; }
                Interlocked.Exchange(ref _inFlight, batch.Count + (carried is null ? 0 : 1));
                if (_disk is not null && !indices.Contains(-1)) _disk.Formed(indices);
                await PublishAsync(batch, ct);
                Interlocked.Exchange(ref _inFlight, carried is null ? 0 : 1);
            }
        }
        catch (Exception) when (ct.IsCancellationRequested) { }   // stopping: a publish cut short stays spooled
    }

    /// <summary>Publishes one message of <paramref name="batch"/>, retrying with the same bytes and id until the log
    /// takes it (or the publisher stops).</summary>
    async Task PublishAsync(List<TrainingExample> batch, CancellationToken ct)
    {
        byte[] payload;
        string id;
        if (batch.Count == 1 && _batching.MaxExamples == 1)
        {
            payload = LogRecord.Encode(batch[0]);
            id = batch[0].Replica + "-" + batch[0].RequestId.ToString(CultureInfo.InvariantCulture);
        }
        else
        {
            var record = new ExampleBatch(batch.ToArray());
            payload = LogRecord.Encode(record, _batching.Compress);
            id = record.MessageId;
        }
        var backoff = TimeSpan.FromMilliseconds(50);
        for (int attempt = 0; ; attempt++)
        {
            if (attempt > 0) _metrics()?.PublishRetries.Add(1);
            try
            {
                using var attemptCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                attemptCts.CancelAfter(AttemptTimeout);
                var ack = await _log.PublishAsync(id, payload, attemptCts.Token);
                _disk?.Acknowledged();
                Interlocked.Add(ref _published, batch.Count);
                Interlocked.Increment(ref _messages);
                if (ack.Duplicate) _metrics()?.PublishDuplicates.Add(batch.Count);
                else _metrics()?.Published.Add(batch.Count);
                OnPublished?.Invoke(batch, ack);
                return;
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                long n = Interlocked.Increment(ref _errors);
                _metrics()?.PublishErrors.Add(1);
                if (n <= 3 || n % 100 == 0) _logLine($"fleet: publish failed ({e.GetType().Name}: {e.Message}); retrying, {Waiting} example(s) spooled");
                await Task.Delay(backoff, ct);
                backoff = TimeSpan.FromMilliseconds(Math.Min(backoff.TotalMilliseconds * 2, 2000));
            }
        }
    }

    /// <summary>Waits until the spool is empty or <paramref name="timeout"/> passes; true when empty.</summary>
    public async Task<bool> FlushAsync(TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (Waiting > 0 && DateTime.UtcNow < until) await Task.Delay(10);
        return Waiting == 0;
    }

    public async ValueTask DisposeAsync()
    {
        _spool.Writer.TryComplete();
        _stop.Cancel();
        try { await _loop; } catch (OperationCanceledException) { }
        _stop.Dispose();
        _disk?.Dispose();
    }
}
