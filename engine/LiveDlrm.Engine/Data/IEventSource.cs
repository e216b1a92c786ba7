namespace LiveDlrm.Data;

/// <summary>
/// A stream of events, read batch by batch in stream order (event-time order for the synthetic stream and for
/// files written in time order). Usage: <c>var b = new EventBatch(source.Schema.Layout, 512);
/// while (source.Read(b) &gt; 0) { ... }</c>. Single consumer; <see cref="Reset"/> starts another pass.
/// </summary>
internal interface IEventSource : IDisposable
{
    /// <summary>The schema of the events; batches passed to <see cref="Read"/> must use its <see cref="StreamSchema.Layout"/>
    /// (or an identically shaped one).</summary>
    StreamSchema Schema { get; }

    /// <summary>Clears <paramref name="batch"/> and fills it with up to <see cref="EventBatch.Capacity"/> events.
    /// Returns the number of events read; 0 = end of stream.</summary>
    int Read(EventBatch batch);

    /// <summary>Rewinds to the first event (deterministically the same events again).</summary>
    void Reset();
}

/// <summary>Bad input data (a TSV line that cannot be parsed under the schema, a corrupt cache, ...). The message
/// names the file and, where there is one, the line.</summary>
internal sealed class DataFormatException(string message, Exception? inner = null) : Exception(message, inner);
