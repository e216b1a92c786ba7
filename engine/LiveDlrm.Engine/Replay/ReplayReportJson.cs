using System.Text.Json.Serialization;
using LiveDlrm.Metrics;
using LiveDlrm.Reports;

namespace LiveDlrm.Replay;

/// <summary>The shape of report.json (docs/replay.md describes it), built from a <see cref="ReplayReport"/> and
/// written by a source-generated serializer. Figures are rounded to 6 decimals; an undefined one (AUC of a window
/// with one class) is null; live-only fields are left out of the other modes.</summary>
static class ReplayReportJson
{
    public static Document From(ReplayReport r)
    {
        var o = r.Options;
        var a = o.OnlineTrainer.Adapter;
        var stale = r.Mode(UpdateMode.Stale);
        var delta = r.Mode(UpdateMode.Delta);
        var live = r.Mode(UpdateMode.Live);
        return new Document(
            r.Data,
            new StreamFacts(r.PrefixEvents, r.ReplayEvents, r.ReplayStart, r.ReplayEnd, R(r.OptimumAuc)),
            new BaseFacts(o.ModelPath ?? "trained on the prefix", r.BaseTrainEvents, R(r.BaseTrainSeconds)),
            new OptionFacts(o.ServeBatch, o.LabelDelaySeconds, r.WindowSeconds, o.WindowSeconds == 0, o.MinWindowEvents, o.SyncIntervalSeconds, o.SyncDelaySeconds,
                string.Join(",", o.BottomMlp), o.OnlineTrainer.BatchSize, o.OnlineTrainer.ReuseForward, a.InitialRank, a.MaxRank,
                R(a.BudgetFraction), o.OnlineTrainer.JointBudget ? "joint" : "table", R(a.AdagradInitialAccumulator), a.RankAdaptInterval,
                R(a.EnergyToKeep), R(a.GrowThreshold), R(o.OnlineTrainer.SmallTableBudgetMultiple), o.OnlineTrainer.AdaptLastLayer,
                R(o.OnlineTrainer.LastLayerLearningRate), R(a.LearningRateA), R(a.LearningRateB), a.Optimizer.ToString().ToLowerInvariant(),
                R(o.FullTrainer.EmbeddingLearningRate), R(o.FullTrainer.DenseLearningRate),
                o.WarmRowState && o.ModelPath is null ? "base" : "fresh", R(a.BAdagradInitialAccumulator), R(o.OnlineTrainer.TrainFraction),
                !a.InPlaceRows ? "off" : a.InPlaceOnly ? "all" : "on", R(a.InPlaceLearningRate)),
            r.Modes.ToDictionary(m => m.Name, Mode),
            live is not null && (stale is not null || delta is not null)
                ? new Comparison(stale is null ? null : R(live.Overall.Auc - stale.Overall.Auc),
                                 delta is null ? null : R(live.Overall.Auc - delta.Overall.Auc),
                                 delta is null ? null : R(live.Cost.CpuSeconds / delta.Cost.CpuSeconds),
                                 delta is null ? null : live.Cost.NetworkBytes, delta?.Cost.NetworkBytes)
                : null,
            r.Sweep?.Select(p => new SweepFacts(
                p.Point.Mode.ToString().ToLowerInvariant(), p.Point.Label,
                p.Point.Mode == UpdateMode.Delta ? p.Point.SyncIntervalSeconds : null, p.Point.Mode == UpdateMode.Delta ? p.Point.SyncDelaySeconds : null,
                p.Point.Mode == UpdateMode.Live ? R(p.Point.BudgetFraction * 100) : null,
                R(p.Result.Overall.Auc), R(p.Result.Overall.LogLoss), R(p.Result.Overall.Calibration),
                R(p.Result.Cost.CpuSeconds), p.Result.Cost.NetworkBytes, R(p.Result.Cost.TrainerCpuSeconds), R(p.Result.Cost.ApplyCpuSeconds),
                R(p.Result.Cost.ServingExtraCpuSeconds), p.Result.Cost.Syncs, p.Result.Live is { } l ? R(l.AdapterMemoryPctMax) : null,
                R(p.Result.WallSeconds))).ToList());
    }

    static ModeFacts Mode(ModeResult m)
    {
        var c = m.Cost;
        var l = m.Live;
        return new ModeFacts(
            Metrics(m.Overall), R(m.WallSeconds),
            new CostFacts(c.NetworkBytes, R(c.CpuSeconds), R(c.TrainerCpuSeconds), R(c.ApplyCpuSeconds), c.LocalBytesWritten, c.Syncs, c.RowsShipped,
                          R(c.ServeCpuSeconds), R(c.ServingExtraCpuSeconds), R(c.JoinCpuSeconds)),
            m.Windows.Select(w => new WindowFacts(w.Start, w.End, w.Metrics.Events, R(w.Metrics.Auc), R(w.Metrics.LogLoss), R(w.Metrics.Calibration),
                                                  R(w.Metrics.MeanPrediction), R(w.Metrics.ObservedCtr), R(w.OptimumAuc), w.NetworkBytes, R(w.CpuSeconds),
                                                  w.AdapterMemoryPct is { } pct ? R(pct) : null, w.Ranks, w.TrainerLagSeconds, w.TrainerDrops)).ToList(),
            l is null ? null : R(l.AdapterMemoryPctMax), l?.BaseBackend, l is null ? null : R(l.AdapterBudgetPct),
            l?.RankHistory.Select(x => new RankFacts(x.Time, x.Table, x.Step, x.OldRank, x.NewRank, R(x.KeptEnergy), x.AdapterBytes, x.BudgetBytes)).ToList(),
            l?.Tables,
            l is null ? null : new TrainerFacts(l.Samples, l.Steps, l.DiscardedSteps, l.Drops, l.UnknownFeedback, l.ExpiredRequests, l.MaxLagSeconds,
                                                R(l.SamplesPerBusySecond), l.ReuseForward),
            l?.RowStateBytes, l is null ? null : R(l.RowStatePct));
    }

    static MetricFacts Metrics(MetricSummary s) =>
        new(s.Events, R(s.Auc), R(s.LogLoss), R(s.Calibration), R(s.MeanPrediction), R(s.ObservedCtr));

    /// <summary>Six decimals are below every figure's noise; a non-finite value stays as it is (written as null).</summary>
    static double R(double value) => double.IsFinite(value) ? Math.Round(value, 6) : value;

    public sealed record Document(string Data, StreamFacts Stream, BaseFacts Base, OptionFacts Options, Dictionary<string, ModeFacts> Modes,
                                  [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Comparison? Comparison,
                                  [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<SweepFacts>? Sweep);

    /// <summary>One point of a cost/accuracy sweep; cpu_seconds is the update cost the frontier plots.</summary>
    public sealed record SweepFacts(
        string Mode, string Label,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? SyncIntervalSeconds,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? SyncDelaySeconds,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdapterBudgetPct,
        double Auc, double Logloss, double Calibration, double CpuSeconds, long NetworkBytes, double TrainerCpuSeconds, double ApplyCpuSeconds,
        double ServingExtraCpuSeconds, int Syncs,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdapterMemoryPctMax,
        double WallSeconds);

    public sealed record StreamFacts(long PrefixEvents, long ReplayEvents, long ReplayStart, long ReplayEnd, double OptimumAuc);

    public sealed record BaseFacts(string Source, long TrainEvents, double TrainSeconds);

    public sealed record OptionFacts(
        int ServeBatch, long LabelDelaySeconds, long WindowSeconds, bool WindowAuto, int MinWindowEvents, long SyncIntervalSeconds, long SyncDelaySeconds, string BaseBottomMlp,
        int OnlineBatch, bool ReuseForward, int AdapterInitialRank, int AdapterMaxRank, double AdapterBudgetFraction, string AdapterBudgetScope,
        double AdapterAdagradInitialAccumulator, int RankAdaptInterval, double RankEnergyToKeep, double RankGrowThreshold,
        double SmallTableBudgetMultiple, bool AdaptLastLayer, double LastLayerLr, double AdapterLrA, double AdapterLrB, string AdapterOptimizer,
        double FullTrainerEmbeddingLr, double FullTrainerDenseLr, string AdapterRowState, double AdapterBAdagradInitialAccumulator,
        double LiveTrainFraction, string LiveInPlace, double LiveInPlaceLr);

    public sealed record MetricFacts(long Events, double Auc, double Logloss, double Calibration, double MeanPrediction, double Ctr);

    public sealed record CostFacts(long NetworkBytes, double CpuSeconds, double TrainerCpuSeconds, double ApplyCpuSeconds, long LocalBytesWritten,
                                   int Syncs, long RowsShipped, double ServeCpuSeconds, double ServingExtraCpuSeconds,
                                   double JoinCpuSeconds);

    public sealed record WindowFacts(
        long Start, long End, long Events, double Auc, double Logloss, double Calibration, double MeanPrediction, double Ctr, double OptimumAuc,
        long NetworkBytesCumulative, double CpuSecondsCumulative,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdapterMemoryPct,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyDictionary<string, int>? Ranks,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? TrainerLagSeconds,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? TrainerDrops);

    public sealed record RankFacts(long Time, string Table, long Step, int OldRank, int NewRank, double KeptEnergy, long AdapterBytes, long BudgetBytes);

    public sealed record TrainerFacts(long Samples, long Steps, long DiscardedSteps, long Drops, long UnknownFeedback, long ExpiredRequests,
                                      long MaxLagSeconds, double SamplesPerBusySecond, bool ReuseForward);

    public sealed record ModeFacts(
        MetricFacts Overall, double WallSeconds, CostFacts Cost, List<WindowFacts> Windows,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdapterMemoryPctMax,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? BaseBackend,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? AdapterBudgetPct,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] List<RankFacts>? RankHistory,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<AdapterTableStats>? Tables,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] TrainerFacts? Trainer,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? RowStateBytes,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? RowStatePct);

    public sealed record Comparison(
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? LiveMinusStaleAuc,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? LiveMinusDeltaAuc,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? LiveOverDeltaCpu,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? LiveNetworkBytes,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? DeltaNetworkBytes);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
                             Converters = [typeof(NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(ReplayReportJson.Document))]
internal sealed partial class ReplayJsonContext : JsonSerializerContext;
