using System.Diagnostics;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Metrics;
using LiveDlrm.Model;

namespace LiveDlrm.Training;

/// <summary>Progress of a training run, reported about once a second.</summary>
public readonly record struct TrainingProgress(int Epoch, long Events, double Seconds, double EventsPerSecond, double RunningAuc, double RunningLogLoss);

/// <summary>Outcome of a training run. The progressive metrics score every event with the model as it was before
/// learning from it ("predict, then learn"), over the last epoch.</summary>
public sealed record TrainingSummary(long Events, int Epochs, double Seconds, double EventsPerSecond, MetricSummary Progressive, long SkippedSteps);

/// <summary>Reading a stream in minibatches into a <see cref="DlrmTrainer"/>, and evaluating a model on a stream.</summary>
public static class TrainingLoop
{
    /// <summary>The default model for a stream: bottom MLP [64, 16] (d = 16), top MLP [64, 32, 1], sum pooling, fp32
    /// tables sized by the stream's schema. For the synthetic stream (4 dense, 6 tables, 70 k rows) a few hundred
    /// thousand events train in seconds on 2 cores.</summary>
    public static DlrmConfig DefaultConfig(EventBatchLayout layout, EmbeddingStorage storage = EmbeddingStorage.Fp32) =>
        DlrmConfig.ForLayout(layout, [64, 16], [64, 32, 1], PoolingMode.Sum, storage);

    public static TrainingSummary Train(DlrmTrainer trainer, IEventSource source, int batchSize, int epochs = 1,
                                        Action<TrainingProgress>? progress = null, int runningWindow = 100_000)
    {
        ArgumentNullException.ThrowIfNull(trainer);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(epochs, 1);
        trainer.Model.Config.CheckLayout(source.Schema.Layout);
        var batch = new EventBatch(source.Schema.Layout, batchSize, 2);
        var predictions = new float[batchSize];
        var epochMetrics = new MetricAccumulator();
        var running = new MetricAccumulator();
        var clock = Stopwatch.StartNew();
        double nextReport = 1.0;
        long events = 0;
        for (int epoch = 1; epoch <= epochs; epoch++)
        {
            if (epoch > 1) source.Reset();
            epochMetrics.Reset();
            while (source.Read(batch) > 0)
            {
                var step = trainer.Step(batch, predictions);
                events += batch.Count;
                if (step.Applied)
                {
                    epochMetrics.Add(predictions.AsSpan(0, batch.Count), batch.Labels);
                    if (running.Count >= runningWindow) running.Reset();
                    running.Add(predictions.AsSpan(0, batch.Count), batch.Labels);
                }
                if (progress is not null && clock.Elapsed.TotalSeconds >= nextReport)
                {
                    double s = clock.Elapsed.TotalSeconds;
                    progress(new TrainingProgress(epoch, events, s, events / s, running.Auc(), running.LogLoss));
                    nextReport = s + 1.0;
                }
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        progress?.Invoke(new TrainingProgress(epochs, events, seconds, events / Math.Max(seconds, 1e-9), running.Auc(), running.LogLoss));
        return new TrainingSummary(events, epochs, seconds, events / Math.Max(seconds, 1e-9), epochMetrics.Summary(), trainer.SkippedSteps);
    }

    /// <summary>Reads and discards exactly <paramref name="events"/> events (e.g. a training prefix before held-out
    /// evaluation). Returns how many were skipped (fewer only if the stream ended).</summary>
    public static long Skip(IEventSource source, long events)
    {
        ArgumentNullException.ThrowIfNull(source);
        var discard = new EventBatch(source.Schema.Layout, 4096, 2);
        long remaining = events;
        while (remaining > 0)
        {
            // Reads never exceed a batch's capacity, so capping the last one at what remains skips exactly.
            var batch = remaining >= discard.Capacity ? discard : new EventBatch(source.Schema.Layout, (int)remaining, 2);
            int got = source.Read(batch);
            if (got == 0) break;
            remaining -= got;
        }
        return events - remaining;
    }

    /// <summary>AUC, logloss and calibration of <paramref name="model"/> over the rest of <paramref name="source"/>.
    /// When the stream carries true probabilities, <paramref name="optimum"/> receives their AUC on the same events
    /// (the best any model can reach on these labels); NaN otherwise. <paramref name="progress"/> gets the events
    /// scored so far after each batch.</summary>
    public static MetricSummary Evaluate(DlrmModel model, IEventSource source, int batchSize, out double optimum, Action<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(source);
        model.Config.CheckLayout(source.Schema.Layout);
        var batch = new EventBatch(source.Schema.Layout, batchSize, 2);
        var scores = new float[batchSize];
        var metrics = new MetricAccumulator();
        var best = source.Schema.Layout.HasTrueProbabilities ? new MetricAccumulator() : null;
        long events = 0;
        while (source.Read(batch) > 0)
        {
            model.Predict(batch, scores);
            metrics.Add(scores.AsSpan(0, batch.Count), batch.Labels);
            best?.Add(batch.TrueProbabilities, batch.Labels);
            progress?.Invoke(events += batch.Count);
        }
        optimum = best?.Auc() ?? double.NaN;
        return metrics.Summary();
    }
}
