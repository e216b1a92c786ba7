namespace LiveDlrm.Serving.Fleet;

/// <summary>A message as the log delivers it: its position (strictly increasing, assigned by the log) and bytes.</summary>
internal readonly record struct LogEntry(ulong Sequence, DateTimeOffset Appended, ReadOnlyMemory<byte> Payload);

/// <summary>Where a publish landed: its sequence, and whether the log already had a message with that id (then
/// nothing was appended and <see cref="Sequence"/> is the earlier message's).</summary>
internal readonly record struct PublishAck(ulong Sequence, bool Duplicate);

/// <summary>What the log holds now: the first and last sequence still kept, messages and bytes, and when the last
/// message was appended.</summary>
internal readonly record struct LogState(ulong FirstSequence, ulong LastSequence, ulong Messages, ulong Bytes, DateTimeOffset LastAppended);

/// <summary>
/// The fleet's training-example log, the one thing replicas share: an ordered, durable, deduplicating append log.
/// Every replica reads all of it in sequence order. NATS JetStream is the implementation here
/// (<see cref="NatsExampleLog"/>); another log needs the same four guarantees — a total order with a sequence per
/// message, deduplication by message id over a window, reading from any kept sequence, and durability across a
/// broker restart — and a test against a real broker before it is offered.
/// </summary>
internal interface IExampleLog : IAsyncDisposable
{
    /// <summary>Appends <paramref name="payload"/> under <paramref name="messageId"/> (a retry with the same id
    /// within the log's duplicate window is not appended again). Throws when the log did not confirm it.</summary>
    Task<PublishAck> PublishAsync(string messageId, ReadOnlyMemory<byte> payload, CancellationToken ct);

    /// <summary>Messages from <paramref name="fromSequence"/> on, in sequence order, for <paramref name="reader"/>
    /// (one reader = one replica; it restarts from the given position, not from where it last stopped), until
    /// cancelled. A sequence may be missing (expired from the log or never delivered); the caller sees the gap.</summary>
    IAsyncEnumerable<LogEntry> ReadAsync(string reader, ulong fromSequence, CancellationToken ct);

    Task<LogState> StateAsync(CancellationToken ct);

    /// <summary>Records <paramref name="status"/> as the replica's latest (a last-value board beside the log).</summary>
    Task PublishStatusAsync(FleetStatus status, CancellationToken ct);

    /// <summary>The latest status of every replica that reported one.</summary>
    Task<IReadOnlyList<FleetStatus>> ReadStatusesAsync(CancellationToken ct);
}
