using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using LiveDlrm.Reports;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Perf;

/// <summary>
/// The default synthetic model (TrainingLoop.DefaultConfig over the synthetic stream's schema): inference throughput
/// and per-batch latency (P50/P99) of <c>DlrmModel.Predict</c> at batch 1, 64 and 512, and full-parameter training
/// throughput. Batches are generated from the synthetic stream before any timing; the pooled embeddings of the timed
/// model are checked against the scalar reference bag first. Writes artifacts/bench/model.json.
/// </summary>
internal sealed class ModelRun : BenchRun
{
    readonly Option<double> _seconds = Opt.Double("--seconds", "seconds per measurement", 3, 0.01, 3600);
    readonly Option<double> _warmup = Opt.Double("--warmup", "warm-up seconds before each measurement", 0.5, 0, 600);
    readonly Option<int> _trainEvents = Opt.Int("--train-events", "events of the training-throughput measurement", 200_000, 1, int.MaxValue);

    public ModelRun() : base("model", "DLRM inference (samples/s, P50/P99 latency at batch 1/64/512) and training throughput")
    {
        Add(_seconds); Add(_warmup); Add(_trainEvents);
    }

    protected override int Run(ParseResult result)
    {
        double seconds = result.GetValue(_seconds), warmup = result.GetValue(_warmup);
        int trainEvents = result.GetValue(_trainEvents);
        TorchRuntime.EnsureInitialised();
        var world = new SyntheticStreamConfig { Seed = 1, Drift = 1 };
        var layout = world.Schema().Layout;
        var config = TrainingLoop.DefaultConfig(layout);
        using var model = DlrmModel.Create(config, 1);
        Console.WriteLine($"model: {config.Tables.Count} tables ({config.TableBytes / 1e6:F1} MB fp32), d = {config.Dim}, bottom [{string.Join(", ", config.BottomMlp)}], top [{string.Join(", ", config.TopMlp)}]; backend {model.Backend.Name}; torch threads {TorchSharp.torch.get_num_threads()}");

        var inference = new List<ModelInferenceCase>();
        foreach (int batchSize in new[] { 1, 64, 512 })
        {
            var batches = Generate(world, batchSize, Math.Max(64, 100_000 / batchSize));
            CheckPooledAgainstReference(model, batches[0]);
            var scores = new float[batchSize];
            var clock = Stopwatch.StartNew();
            int k = 0;
            while (clock.Elapsed.TotalSeconds < warmup) model.Predict(batches[k++ % batches.Count], scores);
            var latencies = new List<double>();
            long samples = 0;
            long start = Stopwatch.GetTimestamp(), end = start + (long)(seconds * Stopwatch.Frequency);
            long now = start;
            while (now < end)
            {
                var batch = batches[k++ % batches.Count];
                long t0 = Stopwatch.GetTimestamp();
                model.Predict(batch, scores);
                now = Stopwatch.GetTimestamp();
                latencies.Add((now - t0) * 1e6 / Stopwatch.Frequency);
                samples += batch.Count;
            }
            double elapsed = (now - start) / (double)Stopwatch.Frequency;
            latencies.Sort();
            double p50 = latencies[latencies.Count / 2], p99 = latencies[Math.Min(latencies.Count - 1, (int)(latencies.Count * 0.99))];
            Console.WriteLine($"predict batch {batchSize,4}: {samples / elapsed,12:N0} samples/s   P50 {p50,9:F1} µs   P99 {p99,9:F1} µs   ({latencies.Count:N0} calls)");
            inference.Add(new ModelInferenceCase(batchSize, samples / elapsed, p50, p99, latencies.Count));
        }

        var training = new List<ModelTrainingCase>();
        foreach (int batchSize in new[] { 256, 512 })
        {
            var batches = Generate(world, batchSize, Math.Max(1, trainEvents / batchSize));
            using var fresh = DlrmModel.Create(config, 2);
            using var trainer = new DlrmTrainer(fresh);
            trainer.Step(batches[0]);   // warm-up: JIT, optimizer state
            var clock = Stopwatch.StartNew();
            long events = 0;
            foreach (var b in batches.Skip(1)) { trainer.Step(b); events += b.Count; }
            double s = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"train batch {batchSize,4}: {events / s,12:N0} samples/s   ({events:N0} events in {s:F1} s, {trainer.Options.Threads} update threads)");
            training.Add(new ModelTrainingCase(batchSize, events / s, events, s));
        }

        string outPath = ReportJson.Write(new ModelBenchReport($"{Environment.ProcessorCount} cores", model.Backend.Name, config.Tables.Count, config.TableBytes,
                                                               config.Dim, config.BottomMlp, config.TopMlp, inference, training),
                                          Path.Combine("artifacts", "bench", "model.json"), BenchJsonContext.Default.ModelBenchReport);
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    static List<EventBatch> Generate(SyntheticStreamConfig world, int batchSize, int count)
    {
        using var source = new SyntheticEventSource(world, (long)batchSize * count);
        var list = new List<EventBatch>(count);
        for (int i = 0; i < count; i++)
        {
            var b = new EventBatch(source.Schema.Layout, batchSize, 2);
            if (source.Read(b) == 0) break;
            list.Add(b);
        }
        return list;
    }

    static void CheckPooledAgainstReference(DlrmModel model, EventBatch batch)
    {
        int d = model.Config.Dim, n = batch.Count;
        var pooled = new float[model.Tables.Count * n * d];
        model.Pool(batch, pooled);
        var expected = new float[n * d];
        for (int t = 0; t < model.Tables.Count; t++)
        {
            EmbeddingBagReference.Forward(model.Tables[t], batch.Indices(t), batch.Offsets(t), expected, model.Config.Tables[t].Pooling);
            for (int i = 0; i < expected.Length; i++)
                if (Math.Abs(pooled[t * n * d + i] - expected[i]) > 1e-5f * (1 + Math.Abs(expected[i])))
                    throw new InvalidOperationException($"pooled table {t} element {i}: {pooled[t * n * d + i]} vs reference {expected[i]}");
        }
    }
}
