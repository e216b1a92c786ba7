using System.Runtime.InteropServices;
using System.Text.Json.Serialization;
using LiveDlrm.Perf.Lookup;
using LiveDlrm.Reports;

namespace LiveDlrm.Perf;

/// <summary>The machine a bench ran on, as every bench report states it.</summary>
internal sealed record BenchMachine(int Processors, string Os)
{
    public static BenchMachine Current => new(Environment.ProcessorCount, RuntimeInformation.OSDescription);
}

/// <summary>lora.json: LoRA-augmented lookup against the plain lookup.</summary>
internal sealed record LoraBenchReport(
    long Rows, int Dim, int Pooling, int Batch, int Rank, int Threads, string Storage, double BudgetFraction,
    long ActiveRows, long AdapterBytes, double AdapterMemoryPct, double AdaptedHitFraction, int Runs, double RunSeconds, bool Quick,
    double LivedlrmMlookups, double LivedlrmLoraMlookups, double LoraEmptyAdapterMlookups,
    double LoraTimeRatio, double LoraTimeRatioPerRound, double EmptyAdapterTimeRatioPerRound, double? KnownSlotsTimeRatioPerRound,
    Dictionary<string, double[]> RunsMlookups, BenchMachine Machine);

/// <summary>One case of train.json.</summary>
internal sealed record TrainBenchCase(double MrowUpdatesPerS, double MdistinctRowsPerS, double DistinctRowsPerStep, long MergedRows, long ActiveRows, double[] Runs);

/// <summary>train.json: the adapters' sparse optimizer step on one thread.</summary>
internal sealed record TrainBenchReport(
    long Rows, int Dim, int Rank, int Bags, int Pooling, double BudgetFraction, int Threads, int Runs, double RunSeconds, bool Quick,
    double LivedlrmMrowUpdatesPerSPerCore, Dictionary<string, TrainBenchCase> Cases, BenchMachine Machine);

/// <summary>One case of step.json.</summary>
internal sealed record StepBenchCase(double KeventsPerS, double UsPerEvent, long Steps, long RejectedSteps, long ActiveRows, long MergedRows, double[] Runs);

/// <summary>step.json: the online trainer's whole step, reuse on and off.</summary>
internal sealed record StepBenchReport(
    int Events, int Batch, int Threads, int Runs, double RunSeconds, bool Quick,
    double ReuseKeventsPerS, double ReuseTimeRatio, Dictionary<string, StepBenchCase> Cases, BenchMachine Machine);

/// <summary>data.json: generator rate, TSV parse against cache read (per input: the figures by name).</summary>
internal sealed record DataBenchReport(
    double GeneratorEventsPerS, double GeneratorEventsPerCpuS, Dictionary<string, double> Synthetic, Dictionary<string, double> Criteo,
    long Events, int Reps, string Machine);

internal sealed record ModelInferenceCase(int Batch, double SamplesPerSecond, double P50Us, double P99Us, int Calls);

internal sealed record ModelTrainingCase(int Batch, double SamplesPerSecond, long Events, double Seconds);

/// <summary>model.json: DLRM inference latency and throughput per batch size, and training throughput.</summary>
internal sealed record ModelBenchReport(
    string Machine, string Backend, int Tables, long TableBytes, int Dim, IReadOnlyList<int> BottomMlp, IReadOnlyList<int> TopMlp,
    List<ModelInferenceCase> Inference, List<ModelTrainingCase> Training);

/// <summary>serve.json: one max-QPS search step (trainer off).</summary>
internal sealed record ServeSearchStep(double Qps, double AchievedQps, double P50Ms, double P99Ms, long Errors, long Dropped, bool Sustainable);

/// <summary>serve.json: one mode at one load, medians over the interleaved rounds.</summary>
internal sealed record ServeModeResult(
    string Mode, double Qps, double P50Ms, double P99Ms, double P999Ms, double MaxMs, double? TrainerSamplesPerS, double? TrainerRateVsUnthrottled,
    double? TrainerDutyCycleMedian, List<double> P99VsNoTrainerPerRound, double P99VsNoTrainer, double P99AddedMsMedian, long Errors, long Dropped,
    ServeStallAttribution Stalls);

/// <summary>serve.json: what else than the trainer stopped requests during one mode's runs (medians over rounds;
/// max over rounds for the longest pause): the server's stop-the-world GC pauses, and the load generator's own
/// lateness in sending and its GC pauses, which reach the client-side P99 as if they were the node's.</summary>
internal sealed record ServeStallAttribution(
    double ServerGcPausesPerSMedian, double ServerGcPauseMsPerSMedian, double ServerGcPauseMaxMs,
    double GeneratorSendLateP99MsMedian, double GeneratorSendLateMaxMs, double GeneratorGcPauseMsMedian);

/// <summary>serve.json: one load (a fraction of the max sustainable QPS) and its modes.</summary>
internal sealed record ServeLoadCase(double LoadFraction, double Qps, double QosTargetMs, int Rounds, double SecondsPerRun, List<ServeModeResult> Modes);

/// <summary>serve.json: the served node under the online trainer, without it and under QoS.</summary>
internal sealed record ServeBenchReport(
    string Machine, string LoadAverageStart, string LoadAverageEnd, int EventsPerRequest, double LightLoadP50Ms, double MaxSustainableQps, List<ServeSearchStep> Search, List<ServeLoadCase> Loads, string Goals,
    string Placement, string ServerGc);

/// <summary>Source-generated serializers of the bench reports (snake_case; a non-finite figure is null).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
                             DefaultIgnoreCondition = JsonIgnoreCondition.Never, Converters = [typeof(NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(List<LookupRecord>))]
[JsonSerializable(typeof(LoraBenchReport))]
[JsonSerializable(typeof(TrainBenchReport))]
[JsonSerializable(typeof(StepBenchReport))]
[JsonSerializable(typeof(DataBenchReport))]
[JsonSerializable(typeof(ModelBenchReport))]
[JsonSerializable(typeof(PimRun.PimBenchRecord))]
[JsonSerializable(typeof(ServeBenchReport))]
internal sealed partial class BenchJsonContext : JsonSerializerContext;
