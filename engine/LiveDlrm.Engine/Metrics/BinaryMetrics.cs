namespace LiveDlrm.Metrics;

/// <summary>Metrics of predicted click probabilities against 0/1 labels, over a whole span.</summary>
internal static class BinaryMetrics
{
    /// <summary>Predictions are clipped to [eps, 1 - eps] for logloss so one confident mistake is large, not infinite.</summary>
    public const double LogLossEpsilon = 1e-7;

    /// <summary>Exact ROC AUC: the probability that a random positive scores above a random negative, ties counting
    /// one half — computed by sorting and average ranks (Mann–Whitney U). NaN when one class is absent.</summary>
    public static double Auc(ReadOnlySpan<float> scores, ReadOnlySpan<float> labels)
    {
        CheckLengths(scores, labels);
        var s = scores.ToArray();
        var l = labels.ToArray();
        return AucInPlace(s, l);
    }

    /// <summary>AUC that sorts the given arrays in place (no copy); used by <see cref="MetricAccumulator"/>.</summary>
    internal static double AucInPlace(Span<float> scores, Span<float> labels)
    {
        long positives = 0;
        foreach (float y in labels) positives += y > 0.5f ? 1 : 0;
        long negatives = labels.Length - positives;
        if (positives == 0 || negatives == 0) return double.NaN;
        foreach (float x in scores) if (float.IsNaN(x)) throw new ArgumentException("a score is NaN");
        scores.Sort(labels);
        // Sum of the (1-based, tie-averaged) ranks of the positives.
        double rankSum = 0;
        int i = 0;
        while (i < scores.Length)
        {
            int j = i;
            long tiedPositives = 0;
            while (j < scores.Length && scores[j] == scores[i]) { tiedPositives += labels[j] > 0.5f ? 1 : 0; j++; }
            double averageRank = (i + 1 + j) / 2.0; // ranks i+1 .. j
            rankSum += tiedPositives * averageRank;
            i = j;
        }
        double u = rankSum - positives * (positives + 1) / 2.0;
        return u / ((double)positives * negatives);
    }

    /// <summary>The AUC expected when labels are drawn as Bernoulli(<paramref name="probabilities"/>) and the same
    /// probabilities are the scores: the Bayes-optimal AUC of a stream that emits its true click probabilities,
    /// without the noise of one label draw. Over ordered pairs i≠j: Σ p_i (1 − p_j) [p_i &gt; p_j] (+ ½ for ties)
    /// divided by Σ p_i (1 − p_j). NaN for fewer than two events or a degenerate (all 0 / all 1) set.</summary>
    public static double ExpectedAuc(ReadOnlySpan<float> probabilities)
    {
        var p = probabilities.ToArray();
        if (p.Length < 2) return double.NaN;
        Array.Sort(p);
        double sumP = 0, sumQ = 0, sumPQ = 0;
        foreach (double x in p) { sumP += x; sumQ += 1 - x; sumPQ += x * (1 - x); }
        double denominator = sumP * sumQ - sumPQ;
        if (!(denominator > 0)) return double.NaN;
        double numerator = 0, negativesBelow = 0; // Σ (1 − p_j) over strictly smaller p_j
        int i = 0;
        while (i < p.Length)
        {
            int j = i;
            double tieP = 0, tieQ = 0, tiePQ = 0;
            while (j < p.Length && p[j] == p[i]) { double x = p[j]; tieP += x; tieQ += 1 - x; tiePQ += x * (1 - x); j++; }
            numerator += tieP * negativesBelow + 0.5 * (tieP * tieQ - tiePQ);
            negativesBelow += tieQ;
            i = j;
        }
        return numerator / denominator;
    }

    /// <summary>Mean binary cross-entropy with predictions clipped to [<see cref="LogLossEpsilon"/>, 1 - eps]. NaN for no events.</summary>
    public static double LogLoss(ReadOnlySpan<float> predictions, ReadOnlySpan<float> labels)
    {
        CheckLengths(predictions, labels);
        if (predictions.Length == 0) return double.NaN;
        double sum = 0;
        for (int i = 0; i < predictions.Length; i++) sum += EventLogLoss(predictions[i], labels[i]);
        return sum / predictions.Length;
    }

    /// <summary>Mean prediction / observed click rate (1 = calibrated, &gt; 1 = over-predicts). NaN when there are
    /// no events or no clicks.</summary>
    public static double Calibration(ReadOnlySpan<float> predictions, ReadOnlySpan<float> labels)
    {
        CheckLengths(predictions, labels);
        double p = 0, y = 0;
        for (int i = 0; i < predictions.Length; i++) { p += predictions[i]; y += labels[i]; }
        return y == 0 ? double.NaN : p / y;
    }

    internal static double EventLogLoss(float prediction, float label)
    {
        double p = Math.Clamp((double)prediction, LogLossEpsilon, 1 - LogLossEpsilon);
        return -(label * Math.Log(p) + (1 - label) * Math.Log(1 - p));
    }

    static void CheckLengths(ReadOnlySpan<float> a, ReadOnlySpan<float> labels)
    {
        if (a.Length != labels.Length) throw new ArgumentException($"{a.Length} predictions but {labels.Length} labels");
    }
}

/// <summary>The metrics of one window (or a whole run).</summary>
internal readonly record struct MetricSummary(long Events, double Auc, double LogLoss, double Calibration, double MeanPrediction, double ObservedCtr)
{
    public override string ToString() =>
        $"events {Events}  auc {Auc:F4}  logloss {LogLoss:F4}  calibration {Calibration:F3}  (mean p {MeanPrediction:F4}, ctr {ObservedCtr:F4})";
}

/// <summary>
/// Streaming-safe accumulator: keeps every (score, label) pair of the window so the AUC is exact (computed on
/// demand by sorting a copy); logloss and calibration are running sums. <see cref="Reset"/> starts a new window
/// reusing the storage. Not thread-safe.
/// </summary>
internal sealed class MetricAccumulator
{
    float[] _scores, _labels, _sortScores = [], _sortLabels = [];
    int _count;
    double _logLossSum, _predictionSum, _labelSum;

    public MetricAccumulator(int initialCapacity = 4096)
    {
        _scores = new float[Math.Max(16, initialCapacity)];
        _labels = new float[_scores.Length];
    }

    public long Count => _count;

    public void Add(float score, float label)
    {
        if (_count == _scores.Length) Grow();
        _scores[_count] = score;
        _labels[_count] = label;
        _count++;
        _logLossSum += BinaryMetrics.EventLogLoss(score, label);
        _predictionSum += score;
        _labelSum += label;
    }

    public void Add(ReadOnlySpan<float> scores, ReadOnlySpan<float> labels)
    {
        if (scores.Length != labels.Length) throw new ArgumentException($"{scores.Length} scores but {labels.Length} labels");
        for (int i = 0; i < scores.Length; i++) Add(scores[i], labels[i]);
    }

    void Grow()
    {
        Array.Resize(ref _scores, _scores.Length * 2);
        Array.Resize(ref _labels, _labels.Length * 2);
    }

    public double Auc()
    {
        if (_sortScores.Length < _count) { _sortScores = new float[_scores.Length]; _sortLabels = new float[_scores.Length]; }
        _scores.AsSpan(0, _count).CopyTo(_sortScores);
        _labels.AsSpan(0, _count).CopyTo(_sortLabels);
        return BinaryMetrics.AucInPlace(_sortScores.AsSpan(0, _count), _sortLabels.AsSpan(0, _count));
    }

    public double LogLoss => _count == 0 ? double.NaN : _logLossSum / _count;
    public double Calibration => _labelSum == 0 ? double.NaN : _predictionSum / _labelSum;
    public double MeanPrediction => _count == 0 ? double.NaN : _predictionSum / _count;
    public double ObservedCtr => _count == 0 ? double.NaN : _labelSum / _count;

    public MetricSummary Summary() => new(_count, Auc(), LogLoss, Calibration, MeanPrediction, ObservedCtr);

    public void Reset()
    {
        _count = 0;
        _logLossSum = _predictionSum = _labelSum = 0;
    }
}
