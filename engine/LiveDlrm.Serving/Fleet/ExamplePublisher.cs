using System.Globalization;
using System.Threading.Channels;

namespace LiveDlrm.Serving.Fleet;

/// <summary>
/// Publishes a node's labelled examples to the fleet log without ever blocking the request path: <see cref="Enqueue"/>
/// writes to a bounded local spool (oldest dropped and counted when full), one background loop publishes in order
/// and retries a failed publish (same message id, so a publish that did land before the failure is not appended
/// twice) until the connection returns. The message id is <c>REPLICA-REQUESTID</c>: a request id is unique within
/// the replica that served it.
/// </summary>
internal sealed class ExamplePublisher : IAsyncDisposable
{
    readonly IExampleLog _log;
    readonly Channel<TrainingExample> _spool;
    readonly Func<FleetMetrics?> _metrics;
    readonly Action<string> _logLine;
    readonly CancellationTokenSource _stop = new();
    readonly Task _loop;
    long _dropped, _published, _errors, _inFlight;

    public long Dropped => Interlocked.Read(ref _dropped);
    public long Published => Interlocked.Read(ref _published);
    public long Errors => Interlocked.Read(ref _errors);
    /// <summary>Examples waiting (in the spool or being published).</summary>
    public long Waiting => _spool.Reader.Count + Interlocked.Read(ref _inFlight);

    public ExamplePublisher(IExampleLog log, int spoolCapacity, Func<FleetMetrics?> metrics, Action<string> logLine)
    {
        if (spoolCapacity < 1) throw new ArgumentOutOfRangeException(nameof(spoolCapacity), spoolCapacity, "fleet spool capacity must be ≥ 1");
        _log = log;
        _metrics = metrics;
        _logLine = logLine;
        _spool = Channel.CreateBounded<TrainingExample>(
            new BoundedChannelOptions(spoolCapacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true },
            _ => { Interlocked.Increment(ref _dropped); _metrics()?.SpoolDropped.Add(1); });
        _loop = Task.Run(RunAsync);
    }

    /// <summary>Queues an example for the log; never blocks, never throws for a full spool.</summary>
    public void Enqueue(TrainingExample example) => _spool.Writer.TryWrite(example);

    async Task RunAsync()
    {
        var ct = _stop.Token;
        try
        {
            while (await _spool.Reader.WaitToReadAsync(ct))
            {
                Interlocked.Exchange(ref _inFlight, 1);   // before the read: Waiting never misses the example in hand
                if (!_spool.Reader.TryRead(out var example)) { Interlocked.Exchange(ref _inFlight, 0); continue; }
                var payload = LogRecord.Encode(example);
                string id = example.Replica + "-" + example.RequestId.ToString(CultureInfo.InvariantCulture);
                var backoff = TimeSpan.FromMilliseconds(50);
                while (true)
                {
                    try
                    {
                        var ack = await _log.PublishAsync(id, payload, ct);
                        Interlocked.Increment(ref _published);
                        if (ack.Duplicate) _metrics()?.PublishDuplicates.Add(1);
                        else _metrics()?.Published.Add(1);
                        break;
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
                Interlocked.Exchange(ref _inFlight, 0);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
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
    }
}
