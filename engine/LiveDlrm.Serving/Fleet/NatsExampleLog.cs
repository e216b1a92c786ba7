using System.Runtime.CompilerServices;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using NATS.Client.KeyValueStore;

namespace LiveDlrm.Serving.Fleet;

/// <summary>How the fleet's stream is set up on the NATS server.</summary>
internal sealed record FleetStreamOptions
{
    /// <summary>The JetStream stream (one per fleet).</summary>
    public string Stream { get; init; } = "LIVEDLRM_EXAMPLES";
    /// <summary>The subject examples are published on (one per model: <c>livedlrm.examples.MODEL</c>).</summary>
    public string Subject { get; init; } = "livedlrm.examples.default";
    /// <summary>Examples older than this are dropped by the server; a replica that falls further behind cannot
    /// catch up from the log alone.</summary>
    public TimeSpan MaxAge { get; init; } = TimeSpan.FromDays(1);
    /// <summary>The stream's size cap (oldest messages dropped beyond it).</summary>
    public long MaxBytes { get; init; } = 8L << 30;
    /// <summary>A publish repeated with the same id within this window is dropped by the server; must cover the
    /// publisher's retry horizon (spool included).</summary>
    public TimeSpan DuplicateWindow { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>How long to wait for the server at connect and for each request.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Messages asked for per pull request.</summary>
    public int FetchBatch { get; init; } = 512;
}

/// <summary>
/// The fleet log on NATS JetStream: one stream with file storage and age/size limits, deduplication by message id
/// (the <c>Nats-Msg-Id</c> header; the request id), and one durable pull consumer per replica
/// (<c>livedlrm-REPLICA</c>). A replica's position is its adapter checkpoint, not the consumer's acks: reading from
/// sequence k deletes and re-creates the replica's consumer at k, so a replica restarted from an older checkpoint
/// replays exactly what it has not applied. Written for the NATS 2.9 server API (Debian 12's).
/// </summary>
internal sealed class NatsExampleLog : IExampleLog
{
    readonly NatsConnection _connection;
    readonly NatsJSContext _js;
    readonly FleetStreamOptions _options;

    public FleetStreamOptions Options => _options;
    public NatsConnectionState ConnectionState => _connection.ConnectionState;

    NatsExampleLog(NatsConnection connection, FleetStreamOptions options)
    {
        _connection = connection;
        _options = options;
        _js = new NatsJSContext(connection);   // requests time out after the connection's RequestTimeout
    }

    /// <summary>Connects to <paramref name="url"/> and creates (or updates) the stream. A server that cannot be
    /// reached, or has no JetStream, is a <see cref="FleetUnavailableException"/> with one line saying so.
    /// With <paramref name="existingStream"/> the stream is only looked up, never created or changed (a reader such
    /// as <c>fleet status</c> does not know the stream's subject and limits and must not reset them); a stream that
    /// does not exist is then the same one-line error.</summary>
    public static async Task<NatsExampleLog> ConnectAsync(string url, FleetStreamOptions options, CancellationToken ct = default, bool existingStream = false)
    {
        var connection = new NatsConnection(new NatsOpts
        {
            Url = url,
            Name = "livedlrm",
            ConnectTimeout = options.Timeout,
            RequestTimeout = options.Timeout,
            MaxReconnectRetry = -1,   // keep trying after a lost connection: the spool holds examples meanwhile
        });
        try
        {
            await connection.ConnectAsync().AsTask().WaitAsync(options.Timeout + options.Timeout, ct);
            var log = new NatsExampleLog(connection, options);
            if (!existingStream) await log.EnsureStreamAsync(ct);
            else
            {
                try { await log._js.GetStreamAsync(options.Stream, cancellationToken: ct); }
                catch (NatsJSApiException e) when (e.Error.Code == 404) { throw new NatsJSException($"stream {options.Stream} does not exist"); }
            }
            return log;
        }
        catch (Exception e) when (e is NatsException or TimeoutException or NatsJSException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            await connection.DisposeAsync();
            throw new FleetUnavailableException($"fleet log {url}: {e.Message}");
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    async Task EnsureStreamAsync(CancellationToken ct)
    {
        var config = new StreamConfig(_options.Stream, [_options.Subject])
        {
            Storage = StreamConfigStorage.File,
            Retention = StreamConfigRetention.Limits,
            MaxAge = _options.MaxAge,
            MaxBytes = _options.MaxBytes,
            DuplicateWindow = _options.DuplicateWindow,
        };
        await _js.CreateOrUpdateStreamAsync(config, ct);
    }

    public async Task<PublishAck> PublishAsync(string messageId, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        var ack = await _js.PublishAsync(_options.Subject, payload, opts: new NatsJSPubOpts { MsgId = messageId }, cancellationToken: ct);
        if (ack.Error is { } error) throw new NatsJSApiException(error);
        return new PublishAck(ack.Seq, ack.Duplicate);   // a duplicate is a success here: the first copy is in the log
    }

    public async IAsyncEnumerable<LogEntry> ReadAsync(string reader, ulong fromSequence, [EnumeratorCancellation] CancellationToken ct)
    {
        string durable = "livedlrm-" + reader;
        // The position is the caller's (its checkpoint): start the consumer afresh there.
        try { await _js.DeleteConsumerAsync(_options.Stream, durable, ct); }
        catch (NatsJSApiException e) when (e.Error.Code == 404) { }
        var consumer = await _js.CreateOrUpdateConsumerAsync(_options.Stream, new ConsumerConfig(durable)
        {
            DeliverPolicy = ConsumerConfigDeliverPolicy.ByStartSequence,
            OptStartSeq = Math.Max(1, fromSequence),
            AckPolicy = ConsumerConfigAckPolicy.All,
            MaxAckPending = Math.Max(_options.FetchBatch * 4, 1024),
            AckWait = TimeSpan.FromMinutes(1),
        }, ct);
        var fetch = new NatsJSFetchOpts { MaxMsgs = _options.FetchBatch, Expires = TimeSpan.FromSeconds(1) };
        while (!ct.IsCancellationRequested)
        {
            INatsJSMsg<ReadOnlyMemory<byte>>? last = null;
            await foreach (var msg in consumer.FetchAsync<ReadOnlyMemory<byte>>(fetch, cancellationToken: ct))
            {
                var meta = msg.Metadata ?? throw new InvalidOperationException("a JetStream message without metadata");
                last = msg;
                yield return new LogEntry(meta.Sequence.Stream, meta.Timestamp, msg.Data);
            }
            // Ack-all of the last message acknowledges the batch: the consumer's state then shows the replica's
            // progress to `nats consumer info` and the fleet status; correctness does not depend on it.
            if (last is { } l) await l.AckAsync(cancellationToken: ct);
        }
    }

    public async Task<LogState> StateAsync(CancellationToken ct)
    {
        var stream = await _js.GetStreamAsync(_options.Stream, cancellationToken: ct);
        var s = stream.Info.State;
        return new LogState(s.FirstSeq, s.LastSeq, (ulong)s.Messages, (ulong)s.Bytes,
                            DateTimeOffset.TryParse(s.LastTs, System.Globalization.CultureInfo.InvariantCulture, out var last) ? last : default);
    }

    // Replica statuses: a key-value bucket (a stream keeping the last message per key), one key per replica.
    async Task<INatsKVStore> StatusBucketAsync(CancellationToken ct)
    {
        var kv = new NatsKVContext(_js);
        return await kv.CreateOrUpdateStoreAsync(new NatsKVConfig(_options.Stream + "_STATUS") { History = 1, Storage = NatsKVStorageType.File }, ct);
    }

    public async Task PublishStatusAsync(FleetStatus status, CancellationToken ct)
    {
        var bucket = await StatusBucketAsync(ct);
        await bucket.PutAsync(status.Replica, System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(status, FleetStatus.Json), cancellationToken: ct);
    }

    public async Task<IReadOnlyList<FleetStatus>> ReadStatusesAsync(CancellationToken ct)
    {
        var bucket = await StatusBucketAsync(ct);
        var keys = new List<string>();
        try { await foreach (var k in bucket.GetKeysAsync(cancellationToken: ct)) keys.Add(k); }
        catch (NatsKVException) { }   // an empty bucket
        var result = new List<FleetStatus>();
        foreach (var k in keys.Order(StringComparer.Ordinal))
        {
            var entry = await bucket.GetEntryAsync<byte[]>(k, cancellationToken: ct);
            if (entry.Value is { } v && System.Text.Json.JsonSerializer.Deserialize<FleetStatus>(v, FleetStatus.Json) is { } s) result.Add(s);
        }
        return result;
    }

    public ValueTask DisposeAsync() => _connection.DisposeAsync();
}

/// <summary>The fleet log cannot be reached (bad input at start: the message names the URL and the reason).</summary>
internal sealed class FleetUnavailableException(string message) : LiveDlrm.Runtime.UserInputException(message);
