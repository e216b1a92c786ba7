using System.Diagnostics;

namespace LiveDlrm.Serving.Node;

internal enum FeedbackResult { Joined, Unknown, Late }

/// <summary>
/// The label window over a node's served requests. Every served event is remembered with its serving time; once
/// <see cref="ServeOptions.LabelWindow"/> has passed without a label, it becomes an implicit negative (trained as
/// label 0: in click logs a non-click never sends a label) or, with implicit negatives off, is dropped. Its id then
/// joins a bounded set of expired ids, so a label arriving afterwards is recognised as late and counted, never
/// trained a second time. Memory is bounded: at most the ring's capacity of ids is tracked (the ring has evicted
/// anything older anyway), and the expired set keeps the same number of most recent ids.
/// </summary>
internal sealed class LabelJoin : IDisposable
{
    readonly Func<ILiveNode> _node;
    readonly LabelPolicy _policy;
    readonly long _windowTicks;
    readonly int _capacity;
    readonly Queue<(long Id, long ServedAt)> _pending = new();
    readonly Queue<long> _expiredOrder = new();
    readonly HashSet<long> _expired = new();
    readonly object _lock = new();
    readonly ServingMetrics _metrics;
    readonly Timer _timer;
    readonly Func<long> _clock;

    /// <param name="node">The node serving now (it changes on reload).</param>
    /// <param name="clock">Stopwatch-tick clock; tests pass their own.</param>
    public LabelJoin(Func<ILiveNode> node, LabelPolicy policy, TimeSpan window, int capacity, ServingMetrics metrics, Func<long>? clock = null, bool sweepTimer = true)
    {
        _node = node; _policy = policy; _capacity = capacity; _metrics = metrics;
        _windowTicks = (long)(window.TotalSeconds * Stopwatch.Frequency);
        _clock = clock ?? Stopwatch.GetTimestamp;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(window.TotalMilliseconds / 10, 10, 1000));
        _timer = new Timer(_ => Sweep(), null, sweepTimer ? period : Timeout.InfiniteTimeSpan, sweepTimer ? period : Timeout.InfiniteTimeSpan);
    }

    /// <summary>Remembers served request ids (after the node stored them).</summary>
    public void Served(ReadOnlySpan<long> ids)
    {
        long now = _clock();
        List<long>? overflow = null;
        lock (_lock)
        {
            foreach (long id in ids)
            {
                _pending.Enqueue((id, now));
                if (_pending.Count > _capacity) (overflow ??= new()).Add(_pending.Dequeue().Id);
            }
        }
        if (overflow is not null) foreach (long id in overflow) Expire(id);
    }

    public FeedbackResult Feedback(long requestId, float label)
    {
        bool late;
        lock (_lock) late = _expired.Contains(requestId);
        var result = late ? FeedbackResult.Late : _node().Feedback(requestId, label) ? FeedbackResult.Joined : FeedbackResult.Unknown;
        _metrics.Feedback.Add(1, new KeyValuePair<string, object?>("result", result.ToString().ToLowerInvariant()));
        return result;
    }

    /// <summary>Expires every request served more than a window ago. Runs on a timer; tests call it directly.</summary>
    public void Sweep()
    {
        long cutoff = _clock() - _windowTicks;
        while (true)
        {
            long id;
            lock (_lock)
            {
                if (_pending.Count == 0 || _pending.Peek().ServedAt > cutoff) return;
                id = _pending.Dequeue().Id;
            }
            Expire(id);
        }
    }

    void Expire(long id)
    {
        // Marked expired first: a label racing with this expiry is then counted late instead of joining.
        lock (_lock)
        {
            if (_expired.Add(id)) _expiredOrder.Enqueue(id);
            while (_expiredOrder.Count > _capacity) _expired.Remove(_expiredOrder.Dequeue());
        }
        var node = _node();
        if (_policy == LabelPolicy.ImplicitNegative)
        {
            if (node.Feedback(id, 0f)) _metrics.ImplicitNegatives.Add(1);
        }
        else if (node.Forget(id)) _metrics.ExpiredUnlabelled.Add(1);
    }

    public void Dispose() => _timer.Dispose();
}
