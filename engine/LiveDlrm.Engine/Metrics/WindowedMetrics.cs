namespace LiveDlrm.Metrics;

/// <summary>Metrics of one event-time window [Start, End) (unix seconds). <see cref="OptimumAuc"/> is the AUC of the
/// stream's true probabilities over the same events (NaN when the stream has none).</summary>
internal sealed record WindowMetrics(long Start, long End, MetricSummary Metrics, double OptimumAuc)
{
    public long Events => Metrics.Events;
}

/// <summary>
/// Splits a time-ordered stream of scored events into fixed event-time windows (aligned to multiples of the window
/// length) and keeps each finished window's metrics, plus the overall metrics. Feed it in event-time order:
/// <c>Add(batch.Timestamps, scores, batch.Labels, batch.TrueProbabilities)</c>; call <see cref="Finish"/> at the
/// end to close the last window. Windows without events are not reported. An event older than the open window is
/// counted in it (streams may be slightly out of order) and counted in <see cref="LateEvents"/>.
/// </summary>
internal sealed class WindowedMetrics
{
    readonly long _length;
    readonly MetricAccumulator _window = new(), _windowOptimum = new(), _overall = new(), _overallOptimum = new();
    readonly List<WindowMetrics> _windows = new();
    long _start = long.MinValue;
    bool _hasOptimum;

    public WindowedMetrics(long windowSeconds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(windowSeconds, 1);
        _length = windowSeconds;
    }

    public long WindowSeconds => _length;
    public IReadOnlyList<WindowMetrics> Windows => _windows;
    public long LateEvents { get; private set; }

    /// <param name="trueProbabilities">Empty, or one per event (then optimum AUCs are reported).</param>
    public void Add(ReadOnlySpan<long> timestamps, ReadOnlySpan<float> scores, ReadOnlySpan<float> labels, ReadOnlySpan<float> trueProbabilities = default)
    {
        if (scores.Length != timestamps.Length || labels.Length != timestamps.Length)
            throw new ArgumentException($"{timestamps.Length} timestamps, {scores.Length} scores, {labels.Length} labels: lengths differ");
        bool optimum = trueProbabilities.Length > 0;
        if (optimum && trueProbabilities.Length != timestamps.Length)
            throw new ArgumentException($"{trueProbabilities.Length} true probabilities for {timestamps.Length} events");
        _hasOptimum |= optimum;
        for (int i = 0; i < timestamps.Length; i++)
        {
            long t = timestamps[i];
            long start = (t >= 0 ? t / _length : (t - _length + 1) / _length) * _length; // floor, also before 1970
            if (_start == long.MinValue) _start = start;
            else if (start > _start) { Close(); _start = start; }
            else if (start < _start) LateEvents++;
            _window.Add(scores[i], labels[i]);
            _overall.Add(scores[i], labels[i]);
            if (optimum)
            {
                _windowOptimum.Add(trueProbabilities[i], labels[i]);
                _overallOptimum.Add(trueProbabilities[i], labels[i]);
            }
        }
    }

    void Close()
    {
        if (_window.Count == 0) return;
        double optimum = _hasOptimum && _windowOptimum.Count == _window.Count ? _windowOptimum.Auc() : double.NaN;
        _windows.Add(new WindowMetrics(_start, _start + _length, _window.Summary(), optimum));
        _window.Reset();
        _windowOptimum.Reset();
    }

    /// <summary>Closes the open window (idempotent).</summary>
    public void Finish() => Close();

    public MetricSummary Overall => _overall.Summary();
    public double OverallOptimumAuc => _hasOptimum && _overallOptimum.Count == _overall.Count ? _overallOptimum.Auc() : double.NaN;
}
