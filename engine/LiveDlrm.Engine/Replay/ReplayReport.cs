using System.Text.Json;
using LiveDlrm.Metrics;

namespace LiveDlrm.Replay;

/// <summary>Metrics of one event-time window of one mode.</summary>
public sealed record WindowResult(long Start, long End, MetricSummary Metrics, double OptimumAuc)
{
    /// <summary>Cumulative network bytes shipped by the end of the window (delta).</summary>
    public long NetworkBytes { get; init; }
    /// <summary>Cumulative update CPU-seconds by the end of the window.</summary>
    public double CpuSeconds { get; init; }
    /// <summary>Live: adapter bytes / table bytes (all tables) at the window's end, in percent.</summary>
    public double? AdapterMemoryPct { get; init; }
    /// <summary>Live: rank per adapted table at the window's end.</summary>
    public IReadOnlyDictionary<string, int>? Ranks { get; init; }
    public long? TrainerLagSeconds { get; init; }
    public long? TrainerDrops { get; init; }
}

/// <summary>A rank decision of a live adapter, with the event time it was observed by.</summary>
public sealed record RankRecord(long Time, string Table, long Step, int OldRank, int NewRank, double KeptEnergy, long AdapterBytes, long BudgetBytes);

/// <summary>Costs of keeping one mode fresh.</summary>
public sealed record UpdateCost
{
    public long NetworkBytes { get; init; }
    /// <summary>Trainer + apply CPU-seconds (thread CPU clocks).</summary>
    public double CpuSeconds => TrainerCpuSeconds + ApplyCpuSeconds;
    public double TrainerCpuSeconds { get; init; }
    /// <summary>Delta: CPU-seconds to snapshot changed rows and dense parameters and to apply them on the server.</summary>
    public double ApplyCpuSeconds { get; init; }
    /// <summary>Live: bytes written into the local base tables by merges (eviction = merge).</summary>
    public long LocalBytesWritten { get; init; }
    public int Syncs { get; init; }
    public long RowsShipped { get; init; }
}

/// <summary>Everything measured for one mode.</summary>
public sealed record ModeResult(UpdateMode Mode, MetricSummary Overall, IReadOnlyList<WindowResult> Windows, UpdateCost Cost, double WallSeconds)
{
    public string Name => Mode.ToString().ToLowerInvariant();
    public LiveStats? Live { get; init; }
}

/// <summary>Live-mode extras: adapter memory, ranks, trainer counters.</summary>
public sealed record LiveStats
{
    public double AdapterMemoryPctMax { get; init; }
    /// <summary>Name of the backend that pooled the base rows ("cpu", "pim-emulated", ...).</summary>
    public string BaseBackend { get; init; } = "";
    public double AdapterBudgetPct { get; init; }
    public IReadOnlyList<RankRecord> RankHistory { get; init; } = [];
    public IReadOnlyList<AdapterTableStats> Tables { get; init; } = [];
    public long Samples { get; init; }
    public long Steps { get; init; }
    public long DiscardedSteps { get; init; }
    public long Drops { get; init; }
    public long UnknownFeedback { get; init; }
    public long ExpiredRequests { get; init; }
    public long MaxLagSeconds { get; init; }
    public double SamplesPerBusySecond { get; init; }
    public bool ReuseForward { get; init; }
}

public sealed record AdapterTableStats(string Table, bool Adapted, long TableBytes, long BudgetBytes, long AdapterBytesMax, int FinalRank, long MergedRows, long RejectedSteps, long DroppedRowUpdates);

/// <summary>A whole replay: stream facts, base model, every mode.</summary>
public sealed record ReplayReport
{
    public required string Data { get; init; }
    public long PrefixEvents { get; init; }
    public long ReplayEvents { get; init; }
    public long ReplayStart { get; init; }
    public long ReplayEnd { get; init; }
    /// <summary>The window length used (the option, or the automatic one).</summary>
    public long WindowSeconds { get; init; }
    public long BaseTrainEvents { get; init; }
    public double BaseTrainSeconds { get; init; }
    public double OptimumAuc { get; init; } = double.NaN;
    public required ReplayOptions Options { get; init; }
    public IReadOnlyList<ModeResult> Modes { get; init; } = [];

    public ModeResult? Mode(UpdateMode mode) => Modes.FirstOrDefault(m => m.Mode == mode);

    /// <summary>Writes report.json (the schema docs/replay.md describes).</summary>
    public void WriteJson(string path)
    {
        string tmp = path + ".tmp";
        using (var stream = File.Create(tmp))
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("data", Data);
            w.WriteStartObject("stream");
            w.WriteNumber("prefix_events", PrefixEvents);
            w.WriteNumber("replay_events", ReplayEvents);
            w.WriteNumber("replay_start", ReplayStart);
            w.WriteNumber("replay_end", ReplayEnd);
            Num(w, "optimum_auc", OptimumAuc);
            w.WriteEndObject();
            w.WriteStartObject("base");
            w.WriteString("source", Options.ModelPath ?? "trained on the prefix");
            w.WriteNumber("train_events", BaseTrainEvents);
            Num(w, "train_seconds", BaseTrainSeconds);
            w.WriteEndObject();
            w.WriteStartObject("options");
            w.WriteNumber("serve_batch", Options.ServeBatch);
            w.WriteNumber("label_delay_seconds", Options.LabelDelaySeconds);
            w.WriteNumber("window_seconds", WindowSeconds);
            w.WriteBoolean("window_auto", Options.WindowSeconds == 0);
            w.WriteNumber("min_window_events", Options.MinWindowEvents);
            w.WriteNumber("sync_interval_seconds", Options.SyncIntervalSeconds);
            w.WriteNumber("sync_delay_seconds", Options.SyncDelaySeconds);
            w.WriteString("base_bottom_mlp", string.Join(",", Options.BottomMlp));
            w.WriteNumber("online_batch", Options.OnlineTrainer.BatchSize);
            w.WriteBoolean("reuse_forward", Options.OnlineTrainer.ReuseForward);
            var a = Options.OnlineTrainer.Adapter;
            w.WriteNumber("adapter_initial_rank", a.InitialRank);
            w.WriteNumber("adapter_max_rank", a.MaxRank);
            Num(w, "adapter_budget_fraction", a.BudgetFraction);
            w.WriteString("adapter_budget_scope", Options.OnlineTrainer.JointBudget ? "joint" : "table");
            Num(w, "adapter_adagrad_initial_accumulator", a.AdagradInitialAccumulator);
            w.WriteNumber("rank_adapt_interval", a.RankAdaptInterval);
            Num(w, "rank_energy_to_keep", a.EnergyToKeep);
            Num(w, "rank_grow_threshold", a.GrowThreshold);
            Num(w, "small_table_budget_multiple", Options.OnlineTrainer.SmallTableBudgetMultiple);
            w.WriteBoolean("adapt_last_layer", Options.OnlineTrainer.AdaptLastLayer);
            Num(w, "last_layer_lr", Options.OnlineTrainer.LastLayerLearningRate);
            Num(w, "adapter_lr_a", a.LearningRateA);
            Num(w, "adapter_lr_b", a.LearningRateB);
            w.WriteString("adapter_optimizer", a.Optimizer.ToString().ToLowerInvariant());
            Num(w, "full_trainer_embedding_lr", Options.FullTrainer.EmbeddingLearningRate);
            Num(w, "full_trainer_dense_lr", Options.FullTrainer.DenseLearningRate);
            w.WriteEndObject();

            w.WriteStartObject("modes");
            foreach (var m in Modes) WriteMode(w, m);
            w.WriteEndObject();

            var stale = Mode(UpdateMode.Stale);
            var delta = Mode(UpdateMode.Delta);
            var live = Mode(UpdateMode.Live);
            if (live is not null && (stale is not null || delta is not null))
            {
                w.WriteStartObject("comparison");
                if (stale is not null) Num(w, "live_minus_stale_auc", live.Overall.Auc - stale.Overall.Auc);
                if (delta is not null)
                {
                    Num(w, "live_minus_delta_auc", live.Overall.Auc - delta.Overall.Auc);
                    Num(w, "live_over_delta_cpu", live.Cost.CpuSeconds / delta.Cost.CpuSeconds);
                    w.WriteNumber("live_network_bytes", live.Cost.NetworkBytes);
                    w.WriteNumber("delta_network_bytes", delta.Cost.NetworkBytes);
                }
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        File.Move(tmp, path, overwrite: true);
    }

    static void WriteMode(Utf8JsonWriter w, ModeResult m)
    {
        w.WriteStartObject(m.Name);
        w.WriteStartObject("overall");
        WriteMetrics(w, m.Overall);
        w.WriteEndObject();
        Num(w, "wall_seconds", m.WallSeconds);
        w.WriteStartObject("cost");
        w.WriteNumber("network_bytes", m.Cost.NetworkBytes);
        Num(w, "cpu_seconds", m.Cost.CpuSeconds);
        Num(w, "trainer_cpu_seconds", m.Cost.TrainerCpuSeconds);
        Num(w, "apply_cpu_seconds", m.Cost.ApplyCpuSeconds);
        w.WriteNumber("local_bytes_written", m.Cost.LocalBytesWritten);
        w.WriteNumber("syncs", m.Cost.Syncs);
        w.WriteNumber("rows_shipped", m.Cost.RowsShipped);
        w.WriteEndObject();
        w.WriteStartArray("windows");
        foreach (var win in m.Windows)
        {
            w.WriteStartObject();
            w.WriteNumber("start", win.Start);
            w.WriteNumber("end", win.End);
            WriteMetrics(w, win.Metrics);
            Num(w, "optimum_auc", win.OptimumAuc);
            w.WriteNumber("network_bytes_cumulative", win.NetworkBytes);
            Num(w, "cpu_seconds_cumulative", win.CpuSeconds);
            if (win.AdapterMemoryPct is { } pct) Num(w, "adapter_memory_pct", pct);
            if (win.Ranks is { } ranks)
            {
                w.WriteStartObject("ranks");
                foreach (var (table, rank) in ranks) w.WriteNumber(table, rank);
                w.WriteEndObject();
            }
            if (win.TrainerLagSeconds is { } lag) w.WriteNumber("trainer_lag_seconds", lag);
            if (win.TrainerDrops is { } drops) w.WriteNumber("trainer_drops", drops);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (m.Live is { } live)
        {
            Num(w, "adapter_memory_pct_max", live.AdapterMemoryPctMax);
            w.WriteString("base_backend", live.BaseBackend);
            Num(w, "adapter_budget_pct", live.AdapterBudgetPct);
            w.WriteStartArray("rank_history");
            foreach (var r in live.RankHistory)
            {
                w.WriteStartObject();
                w.WriteNumber("time", r.Time);
                w.WriteString("table", r.Table);
                w.WriteNumber("step", r.Step);
                w.WriteNumber("old_rank", r.OldRank);
                w.WriteNumber("new_rank", r.NewRank);
                Num(w, "kept_energy", r.KeptEnergy);
                w.WriteNumber("adapter_bytes", r.AdapterBytes);
                w.WriteNumber("budget_bytes", r.BudgetBytes);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("tables");
            foreach (var t in live.Tables)
            {
                w.WriteStartObject();
                w.WriteString("table", t.Table);
                w.WriteBoolean("adapted", t.Adapted);
                w.WriteNumber("table_bytes", t.TableBytes);
                w.WriteNumber("budget_bytes", t.BudgetBytes);
                w.WriteNumber("adapter_bytes_max", t.AdapterBytesMax);
                w.WriteNumber("final_rank", t.FinalRank);
                w.WriteNumber("merged_rows", t.MergedRows);
                w.WriteNumber("rejected_steps", t.RejectedSteps);
                w.WriteNumber("dropped_row_updates", t.DroppedRowUpdates);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("trainer");
            w.WriteNumber("samples", live.Samples);
            w.WriteNumber("steps", live.Steps);
            w.WriteNumber("discarded_steps", live.DiscardedSteps);
            w.WriteNumber("drops", live.Drops);
            w.WriteNumber("unknown_feedback", live.UnknownFeedback);
            w.WriteNumber("expired_requests", live.ExpiredRequests);
            w.WriteNumber("max_lag_seconds", live.MaxLagSeconds);
            Num(w, "samples_per_busy_second", live.SamplesPerBusySecond);
            w.WriteBoolean("reuse_forward", live.ReuseForward);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    static void WriteMetrics(Utf8JsonWriter w, MetricSummary s)
    {
        w.WriteNumber("events", s.Events);
        Num(w, "auc", s.Auc);
        Num(w, "logloss", s.LogLoss);
        Num(w, "calibration", s.Calibration);
        Num(w, "mean_prediction", s.MeanPrediction);
        Num(w, "ctr", s.ObservedCtr);
    }

    /// <summary>JSON has no NaN: undefined metrics (one class absent in a window) are written as null.</summary>
    static void Num(Utf8JsonWriter w, string name, double value)
    {
        if (double.IsFinite(value)) w.WriteNumber(name, Math.Round(value, 6));
        else w.WriteNull(name);
    }
}
