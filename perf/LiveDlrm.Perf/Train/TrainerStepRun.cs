using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using LiveDlrm.Data;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Perf.Lora;
using LiveDlrm.Replay;
using LiveDlrm.Runtime;

namespace LiveDlrm.Perf.Train;

/// <summary><c>./build.sh bench step</c>: the colocated trainer's whole step (<see cref="OnlineTrainer"/>'s
/// <c>TrainOn</c>: the backward through the frozen dense part, the adapters' sparse updates, B, the last layer, rank
/// checks and merges as they fall due) on one thread, for the replay's model and live-learner settings on the default
/// synthetic stream. The same served events are trained on with data reuse on (the serving forward kept with each
/// event) and off (the trainer re-pools and re-runs the dense forward), interleaved round by round. This is the
/// replay's live update cost without the replay around it; <c>bench train</c> times the adapter update alone.</summary>
internal sealed class TrainerStepRun : BenchRun
{
    readonly Option<int> _events = Opt.Int("--events", "served events prepared from the default synthetic stream (--quick: 2048)", 16384, 256, 1 << 26);
    readonly Option<int> _runs = Opt.Int("--runs", "timed rounds, median reported (--quick: 2)", 5, 1, 10_000);
    readonly Option<double> _runSeconds = Opt.Double("--run-seconds", "per case per round (--quick: 0.2)", 1, 0.01, 3600);
    readonly Option<bool> _quick = Opt.Flag("--quick", "small sizes for a smoke run (numbers not meaningful)");
    readonly Option<string?> _out = Opt.Text("--out", "JSON output (default artifacts/bench/step.json)", helpName: "PATH");

    public TrainerStepRun() : base("step", "online trainer step on the replay's model, one thread, reuse on/off (k events/s, artifacts/bench/step.json)")
    {
        foreach (var o in new Option[] { _events, _runs, _runSeconds, _quick, _out }) Add(o);
    }

    /// <summary>One trainer over its own copy of the model, and its served events cut into steps.</summary>
    sealed class Case(string name, LiveModel live, List<List<ServedEvent>> steps) : IDisposable
    {
        public string Name => name;
        public OnlineTrainer Trainer => live.Trainer;
        public List<List<ServedEvent>> Steps => steps;
        public long Calls, Rejected;

        public void Dispose() => live.Dispose();
    }

    protected override int Run(ParseResult a)
    {
        bool quick = a.GetValue(_quick);
        int events = Pick(a, _events, quick, 2048);
        int runs = Pick(a, _runs, quick, 2);
        double runSeconds = Pick(a, _runSeconds, quick, 0.2);
        string? outPath = a.GetValue(_out);

        var sw = Stopwatch.StartNew();
        TorchRuntime.EnsureInitialised();
        // One thread, as the replay's trainer runs: libtorch must not spread a step over its own pool.
        TorchSharp.torch.set_num_threads(1);
        var replay = new ReplayOptions();
        var cases = new List<Case>();
        try
        {
            foreach (bool reuse in new[] { true, false })
                cases.Add(Prepare(reuse ? "reuse" : "no_reuse", reuse, events, replay));
            int batch = replay.OnlineTrainer.BatchSize;
            var model = cases[0].Trainer.Model;
            Console.WriteLine($"step: replay model ({model.Tables.Count} tables, dim {model.Config.Dim}, " +
                              $"{model.Tables.Sum(t => t.ByteSize) / (1 << 20)} MiB of tables), {events} served events of the default synthetic stream, " +
                              $"steps of {batch} events, one thread, {runs} runs × {runSeconds} s (median); setup {sw.Elapsed.TotalSeconds:F1} s{(quick ? "; QUICK (not meaningful)" : "")}");

            var contenders = cases.Select(c => (Action<int>)(i =>
            {
                c.Calls++;
                if (!c.Trainer.TrainOn(c.Steps[i])) c.Rejected++;
            })).ToList();
            // Both cases hold the same events cut the same way: units = thousands of events per call.
            var rates = LoraBenchSupport.Interleaved(contenders, cases[0].Steps.Count, batch / 1e3, runs, runSeconds, quick ? 0.1 : 1);
            var results = new Dictionary<string, StepBenchCase>();
            for (int c = 0; c < cases.Count; c++)
            {
                double median = LoraBenchSupport.Median(rates[c]);
                var t = cases[c].Trainer;
                Console.WriteLine($"  {cases[c].Name,-9} {median,7:F1} k events/s ({1e3 / median,6:F1} µs/event)  steps {cases[c].Calls}, rejected {cases[c].Rejected}, " +
                                  $"active rows {t.Adapters.Sum(x => x?.ActiveRows ?? 0)}, merged {t.Adapters.Sum(x => x?.MergedRows ?? 0)}   runs: {string.Join(" ", rates[c].Select(x => x.ToString("F1")))}");
                results[cases[c].Name] = new StepBenchCase(median, 1e3 / median, cases[c].Calls, cases[c].Rejected,
                    t.Adapters.Sum(x => x?.ActiveRows ?? 0), t.Adapters.Sum(x => x?.MergedRows ?? 0), rates[c]);
            }
            // Per round, so the host's drift between rounds cancels.
            double saving = LoraBenchSupport.Median(rates[1].Zip(rates[0], (off, on) => off / on).ToArray());
            Console.WriteLine($"  reuse on / off time per event: {saving:F2} (per-round median)");
            if (cases.Any(c => c.Rejected > 0)) Console.WriteLine("  WARNING: some steps were rejected (non-finite values); their time is still counted");
            var record = new StepBenchReport(events, batch, 1, runs, runSeconds, quick, LoraBenchSupport.Median(rates[0]), saving, results, BenchMachine.Current);
            Console.WriteLine($"wrote {LoraBenchSupport.WriteJson(record, outPath, "step", BenchJsonContext.Default.StepBenchReport)}");
            return 0;
        }
        finally
        {
            foreach (var c in cases) c.Dispose();
        }
    }

    /// <summary>A fresh model of the replay's shape with the replay's live-learner settings, and <paramref name="events"/>
    /// events served through it (so the served features, and with reuse the serving forward, are in the ring), labelled
    /// and cut into the trainer's steps.</summary>
    static Case Prepare(string name, bool reuse, int events, ReplayOptions replay)
    {
        using var source = new SyntheticEventSource(new SyntheticStreamConfig(), events);
        var layout = source.Schema.Layout;
        // The LoRA rows' step (the replay's --in-place off): what this benchmark has always timed, adapters that learn.
        var options = replay.OnlineTrainer with
        {
            ReuseForward = reuse, QueueCapacity = Math.Max(replay.OnlineTrainer.QueueCapacity, events),
            Adapter = replay.OnlineTrainer.Adapter with { InPlaceRows = false, InPlaceOnly = false },
        };
        var live = LiveModel.Create(DlrmConfig.ForLayout(layout, replay.BottomMlp, replay.TopMlp), replay.ModelSeed,
            new LiveModelOptions { Trainer = options, RingCapacity = events, BaseBackend = ModelCopy.InlineCpuBackend });
        try
        {
            var batch = new EventBatch(layout, replay.ServeBatch);
            var scores = new float[replay.ServeBatch];
            var steps = new List<List<ServedEvent>>();
            var step = new List<ServedEvent>();
            while (source.Read(batch) > 0)
            {
                live.Serve(batch, scores.AsSpan(0, batch.Count));
                for (int i = 0; i < batch.Count; i++)
                {
                    if (!live.Ring.TryTake(batch.RequestIds[i], out var served))
                        throw new InvalidOperationException($"bench step: request {batch.RequestIds[i]} is not in the ring");
                    served.Label = batch.Labels[i];
                    step.Add(served);
                    if (step.Count == options.BatchSize) { steps.Add(step); step = new List<ServedEvent>(); }
                }
            }
            if (steps.Count == 0) throw new UsageException($"--events {events} gives no whole step of {options.BatchSize} events");
            return new Case(name, live, steps);
        }
        catch
        {
            live.Dispose();
            throw;
        }
    }
}
