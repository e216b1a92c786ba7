using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LiveDlrm.Checkpoints;
using LiveDlrm.CommandLine;
using LiveDlrm.Data;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;

namespace LiveDlrm.Perf;

/// <summary>
/// <c>./build.sh bench fleet</c>: on the default synthetic stream, a nats-server, three <c>livedlrm fleet replica</c>
/// processes (r3 one instruction-set level down) and the real <see cref="ExamplePublisher"/> (batching, linger) on
/// loopback, at stepped example rates until one is not sustained; in each run r2 is killed with SIGKILL half-way and
/// restarted from its checkpoint. Reports per run the rate achieved, replication lag P50/P99 per replica and the
/// publish latency (linger + queueing), fingerprints, examples lost or doubled, wire and store bytes per example
/// (the server's own byte counters: every delivery, headers and acks included) against a delta-update sync on the
/// same events. On the Criteo-shaped stream it measures the wire bytes with three log readers against the delta
/// sync's bill over a whole 10-min window, and it times the encodings (payload bytes, encode/decode µs per example).
/// </summary>
internal sealed class FleetRun : BenchRun
{
    readonly Option<double> _rate = Opt.Double("--rate", "examples published per second (one run; --rates runs several)", 2000, 1, 1e6);
    readonly Option<string?> _rates = Opt.Text("--rates", "comma-separated example rates, one run each, ascending; stops after the first rate the fleet does not sustain (default stream)", "250,500,1000,2000,4000", helpName: "LIST");
    readonly Option<double> _seconds = Opt.Double("--seconds", "seconds of publishing per run", 12, 2, 3600);
    readonly Option<int> _batch = Opt.Int("--batch", "examples per training step on every replica", 64, 1, 1 << 16);
    readonly Option<int> _messageExamples = Opt.Int("--message-examples", "examples per log message at most (1 = single-example messages)", 256, 1, 1 << 16);
    readonly Option<double> _linger = Opt.Double("--linger-ms", "how long the publisher lets a message wait for more examples", 20, 0, 10_000);
    readonly Option<string> _compress = Opt.Choice("--compress", "Brotli-compress batches when smaller", "on", "on", "off");
    readonly Option<string> _stream = Opt.Choice("--stream", "default: the synthetic stream with 3 training replicas (rate steps); criteo: the Criteo-shaped stream's wire bytes against a delta sync; both", "both", "default", "criteo", "both");
    readonly Option<double> _criteoEventRate = Opt.Double("--criteo-event-rate", "event-time rate of the Criteo-shaped stream (examples per second of event time; sets the delta sync's window)", 2100, 1, 1e7);
    readonly Option<string> _r3Isa = Opt.Choice("--r3-isa", "instruction set of replica r3, to compare fingerprints across ISA levels: native; avx2 (.NET without AVX-512, libtorch's kernels at AVX2); avx2-mkl (also MKL and oneDNN at AVX2); sse42 (.NET without AVX, libtorch's default kernels, MKL/oneDNN at SSE4.2)", "avx2", "native", "avx2", "avx2-mkl", "sse42");
    readonly Option<string?> _out = Opt.Text("--out", "JSON path (default artifacts/bench/fleet.json)", helpName: "PATH");

    public FleetRun() : base("fleet", "nats-server + 3 replica processes + a batching publisher on loopback, one replica SIGKILLed and restarted, at stepped rates; Criteo-shaped wire bytes vs a delta sync")
    {
        foreach (var o in new Option[] { _rate, _rates, _seconds, _batch, _messageExamples, _linger, _compress, _stream, _criteoEventRate, _r3Isa, _out }) Add(o);
    }

    sealed record Settings(string Cli, string Root, double Seconds, int Batch, PublisherBatching Batching, string R3Isa);

    protected override int Run(ParseResult result)
    {
        string root = Lookup.LookupRun.RepoRoot();
        string output = result.GetValue(_out) ?? Path.Combine(root, "artifacts", "bench", "fleet.json");
        string cli = Path.Combine(root, "engine", "LiveDlrm.Cli", "bin", "Release", "net10.0", "livedlrm.dll");
        if (!File.Exists(cli)) throw new FileNotFoundException($"{cli} is missing (./build.sh build)", cli);
        var rates = Given(result, _rate) && !Given(result, _rates)
            ? [result.GetValue(_rate)]
            : List("--rates", result.GetValue(_rates)!, t => double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 1 ? v : (double?)null, "a rate ≥ 1").Order().ToArray();
        var batching = new PublisherBatching
        {
            MaxExamples = result.GetValue(_messageExamples), Linger = TimeSpan.FromMilliseconds(result.GetValue(_linger)),
            Compress = result.GetValue(_compress) == "on",
        };
        var settings = new Settings(cli, root, result.GetValue(_seconds), result.GetValue(_batch), batching, result.GetValue(_r3Isa));
        string stream = result.GetValue(_stream);
        TorchRuntime.EnsureInitialised();

        var report = new Dictionary<string, object?>
        {
            ["machine"] = new { processors = Environment.ProcessorCount, loadAverageAtStart = LoadAverage() },
            ["batching"] = new { messageExamples = batching.MaxExamples, lingerMs = batching.Linger.TotalMilliseconds, compress = batching.Compress, trainingBatch = settings.Batch },
        };
        bool ok = true;
        if (stream is "default" or "both")
        {
            var runs = new List<object>();
            double? sustained = null;
            foreach (double rate in rates)
            {
                var run = DefaultStreamRunAsync(settings, rate).GetAwaiter().GetResult();
                runs.Add(run.Report);
                ok &= run.Agree;
                if (!run.Sustained) break;
                sustained = rate;
            }
            report["defaultStream"] = new { runs, highestSustainedRate = sustained, sustainedMeans = "publisher reached ≥ 95 % of the asked rate, 0 lost, fingerprints equal, lag P99 < 1 s on the replicas that were not killed" };
            report["codecDefaultStream"] = CodecCosts(DefaultStreamExamples(4096), settings.Batching.MaxExamples);
        }
        if (stream is "criteo" or "both")
        {
            double criteoRate = rates.Length == 1 ? rates[0] : 2000;
            var run = CriteoRunAsync(settings, criteoRate, result.GetValue(_criteoEventRate)).GetAwaiter().GetResult();
            report["criteoStream"] = run.Report;
            report["codecCriteoStream"] = CodecCosts(CriteoExamples(4096, result.GetValue(_criteoEventRate)), settings.Batching.MaxExamples);
            ok &= run.Agree;
        }
        report["loadAverageAtEnd"] = LoadAverage();
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        File.WriteAllText(output, JsonSerializer.Serialize(report, JsonOut));
        Console.WriteLine($"report: {output}");
        return ok ? 0 : 1;
    }

    static readonly JsonSerializerOptions JsonOut = new() { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };
    static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "";

    const string Stream = "LIVEDLRM_EXAMPLES", Subject = "livedlrm.examples.bench";
    static readonly string[] Replicas = ["r1", "r2", "r3"];
    const long DeltaInterval = 600;

    sealed record RunResult(object Report, bool Agree, bool Sustained);

    /// <summary>Latency from an example's intended publish time (its place on the paced schedule) to the log's
    /// acknowledgement of the message holding it: the publisher's linger and queueing, which the replicas' lag
    /// (from append) does not see.</summary>
    sealed class PublishLatency
    {
        readonly List<double> _samples = new();
        public void Add(double seconds) { lock (_samples) _samples.Add(seconds); }
        public (double P50, double P99) Percentiles()
        {
            lock (_samples)
            {
                if (_samples.Count == 0) return (double.NaN, double.NaN);
                var a = _samples.ToArray(); Array.Sort(a);
                return (a[(int)(0.50 * (a.Length - 1))], a[(int)(0.99 * (a.Length - 1))]);
            }
        }
    }

    /// <summary>Publishes <paramref name="total"/> examples at <paramref name="rate"/> through the real
    /// <see cref="ExamplePublisher"/> (batching and linger inside it); <paramref name="atTime"/> runs between examples.</summary>
    static async Task<(long Published, double Seconds, PublishLatency Latency, long Messages, long Errors, SortedDictionary<ulong, int> Sizes)> PublishPacedAsync(
        IExampleLog log, PublisherBatching batching, double rate, long total, Func<long, TrainingExample> example, Func<TimeSpan, Task>? atTime = null)
    {
        var latency = new PublishLatency();
        var sizes = new SortedDictionary<ulong, int>();
        var sw = Stopwatch.StartNew();
        var publisher = new ExamplePublisher(log, 1 << 20, () => null, Console.WriteLine, batching)
        {
            OnPublished = (examples, ack) =>
            {
                double now = sw.Elapsed.TotalSeconds;
                lock (sizes) sizes[ack.Sequence] = examples.Count;
                foreach (var e in examples) latency.Add(now - (e.RequestId - 1) / rate);
            },
        };
        await using (publisher)
        {
            for (long n = 0; n < total; n++)
            {
                var due = TimeSpan.FromSeconds(n / rate);
                if (sw.Elapsed < due) await Task.Delay(due - sw.Elapsed);
                if (atTime is not null) await atTime(sw.Elapsed);
                publisher.Enqueue(example(n));
            }
            if (!await publisher.FlushAsync(TimeSpan.FromSeconds(120))) Console.WriteLine("the publisher did not drain within 120 s");
            var (messages, published) = publisher.MessageCounts;
            return (published, sw.Elapsed.TotalSeconds, latency, messages, publisher.Errors, sizes);
        }
    }

    // ---------------------------------------------------------------- default synthetic stream: 3 training replicas

    static List<TrainingExample> DefaultStreamExamples(int count, string fingerprint = "f")
    {
        using var source = new SyntheticEventSource(new SyntheticStreamConfig { Seed = 1 });
        var events = new EventBatch(source.Schema.Layout, 256);
        var list = new List<TrainingExample>(count);
        while (list.Count < count && source.Read(events) > 0)
            for (int i = 0; i < events.Count && list.Count < count; i++)
                list.Add(new TrainingExample(list.Count + 1, events.Timestamps[i], events.Labels[i], fingerprint, "p1", events.DenseRow(i).ToArray(),
                                             Enumerable.Range(0, events.SparseCount).Select(t => events.Bag(t, i).ToArray()).ToArray()));
        return list;
    }

    static async Task<RunResult> DefaultStreamRunAsync(Settings s, double rate)
    {
        Console.WriteLine(F($"---- default stream at {rate} examples/s ({LoadAverage()})"));
        string work = Path.Combine(s.Root, "artifacts", "bench", "fleet-work");
        if (Directory.Exists(work)) Directory.Delete(work, true);
        Directory.CreateDirectory(work);
        var streamConfig = new SyntheticStreamConfig { Seed = 1 };
        string model = Path.Combine(work, "model");
        long denseParameters;
        DlrmConfig config;
        using (var source0 = new SyntheticEventSource(streamConfig))
        {
            config = DlrmConfig.ForLayout(source0.Schema.Layout, [32, 16], [64, 32, 1]);
            using var m = DlrmModel.Create(config, 7);
            denseParameters = m.Dense.NamedParameters().Sum(p => p.Parameter.numel());
            Checkpoint.Save(m, model);
        }
        string fingerprint = LiveModelNode.BaseFingerprint(model);
        string loadStart = LoadAverage();

        await using var nats = await NatsServerProcess.StartAsync();
        var processes = new Dictionary<string, Process>();
        try
        {
            await using var log = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream, Subject = Subject });
            foreach (var r in Replicas) processes[r] = StartReplica(s, nats.Url, model, r, work);
            await WaitForReplicas(log, work);
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{nats.MonitorPort}") };
            var (inBefore, outBefore) = await Varz(http);

            // The delta sync's bill on the same events: distinct changed rows per 10-min window of event time, plus the dense weights.
            var rows = new HashSet<(int Table, long Row)>();
            long deltaBytes = 0, deltaWindows = 0, windowEnd = long.MinValue;
            int rowBytes = config.Dim * sizeof(float) + sizeof(long);
            long total = (long)(rate * s.Seconds);
            var examples = DefaultStreamExamples((int)total, fingerprint);
            foreach (var e in examples)
            {
                long ts = e.EventTime;
                if (windowEnd == long.MinValue) windowEnd = ts + DeltaInterval;
                while (ts >= windowEnd) { deltaBytes += rows.Count * (long)rowBytes + denseParameters * sizeof(float); deltaWindows++; rows.Clear(); windowEnd += DeltaInterval; }
                for (int t = 0; t < e.Bags.Length; t++) foreach (long id in e.Bags[t]) rows.Add((t, id));
            }
            if (rows.Count > 0) { deltaBytes += rows.Count * (long)rowBytes + denseParameters * sizeof(float); deltaWindows++; }

            // ---- publish at a paced rate; SIGKILL r2 half-way, restart it a second later
            bool killed = false, restarted = false;
            TimeSpan killAt = TimeSpan.FromSeconds(s.Seconds / 2), restartAt = killAt + TimeSpan.FromSeconds(1);
            var (published, publishSeconds, latency, messages, errors, sizes) = await PublishPacedAsync(log, s.Batching, rate, total, n => examples[(int)n], async elapsed =>
            {
                if (!killed && elapsed >= killAt) { processes["r2"].Kill(); await processes["r2"].WaitForExitAsync(); killed = true; Console.WriteLine(F($"{elapsed.TotalSeconds:F1} s: r2 SIGKILLed")); }
                if (killed && !restarted && elapsed >= restartAt) { processes["r2"].Dispose(); processes["r2"] = StartReplica(s, nats.Url, model, "r2", work); restarted = true; Console.WriteLine(F($"{elapsed.TotalSeconds:F1} s: r2 restarted from its checkpoint")); }
            });
            var state = await log.StateAsync(CancellationToken.None);
            Console.WriteLine(F($"published {published} examples in {messages} messages in {publishSeconds:F1} s ({published / publishSeconds:F0}/s), {errors} errors; log holds {state.Messages} messages, {state.Bytes} bytes"));

            // ---- wait until every replica reports the last position (each reports every 0.5 s)
            long trainedTarget = published - published % s.Batch;   // the trailing partial batch is not trained
            var sw = Stopwatch.StartNew();
            IReadOnlyList<FleetStatus> statuses = [];
            while (sw.Elapsed < TimeSpan.FromSeconds(120))
            {
                statuses = await log.ReadStatusesAsync(CancellationToken.None);
                if (statuses.Count == Replicas.Length && statuses.All(x => x.LastSeen >= state.LastSequence && Trained(x, sizes) >= trainedTarget)) break;
                await Task.Delay(250);
            }
            double caughtUp = sw.Elapsed.TotalSeconds;
            await Task.Delay(1200);   // the last status (fingerprint at the final position) lands
            var (inAfter, outAfter) = await Varz(http);
            foreach (var p in processes.Values) { try { p.Kill(); } catch (InvalidOperationException) { } }
            foreach (var p in processes.Values) p.WaitForExit(5000);
            statuses = await log.ReadStatusesAsync(CancellationToken.None);
            object? divergence = s.R3Isa == "native" ? null : IsaDivergence(work, model, s.Batch, streamConfig);
            var view = FleetView.Of(state, statuses);
            Console.Write((await FleetReplicaHost.StatusAsync(nats.Url, Stream, CancellationToken.None)).Text);

            double wire = (inAfter - inBefore) + (outAfter - outBefore);
            double wirePerExample = published == 0 ? 0 : wire / published;
            double deltaPerExample = published == 0 ? 0 : (double)deltaBytes * Replicas.Length / published;
            // r3 at another ISA level is not expected to agree bit for bit (docs/fleet.md): its divergence is measured
            // and reported instead.
            bool r3Counts = s.R3Isa is "native";
            bool agree = statuses.Count == Replicas.Length
                         && statuses.Where(x => r3Counts || x.Replica != "r3").Select(x => (x.AppliedSequence, x.AppliedOffset, x.Fingerprint)).Distinct().Count() == 1;
            bool r3Agrees = statuses.Select(x => (x.AppliedSequence, x.AppliedOffset, x.Fingerprint)).Distinct().Count() == 1;
            // r1 never stopped: it trained exactly the full batches of what was published, or something was lost or doubled.
            long r1Trained = statuses.FirstOrDefault(x => x.Replica == "r1")?.ExamplesApplied ?? 0;
            long lost = trainedTarget - r1Trained;
            var (pubP50, pubP99) = latency.Percentiles();
            var steady = view.Replicas.Where(r => r.Status.Replica != "r2").ToList();
            double steadyP99 = steady.Count == 0 ? double.NaN : steady.Max(r => r.Status.LagP99Seconds);
            agree &= lost == 0;
            bool sustained = agree && published >= 0.95 * rate * s.Seconds && publishSeconds <= s.Seconds * 1.05 + 1 && steadyP99 < 1.0 && caughtUp < 60;
            var report = new
            {
                rateTarget = rate, seconds = s.Seconds, loadAverageBefore = loadStart, loadAverageAfter = LoadAverage(),
                publishedExamples = published, messages, examplesPerMessage = messages == 0 ? 0 : (double)published / messages,
                publishedPerSecond = published / publishSeconds, publishErrors = errors,
                logMessages = state.Messages, trainedTarget, examplesLostOrDoubledOnR1 = lost,
                publishLatencyP50Seconds = pubP50, publishLatencyP99Seconds = pubP99,
                publishLatencyNote = "intended publish time (paced schedule) to the log's ack of the message holding the example: linger + queueing",
                allCaughtUpAfterPublishSeconds = caughtUp,
                replicas = view.Replicas.Select(r => new
                {
                    replica = r.Status.Replica, appliedSequence = r.Status.AppliedSequence, appliedOffset = r.Status.AppliedOffset, fingerprint = r.Status.Fingerprint,
                    examplesAppliedThisProcess = r.Status.ExamplesApplied, lagP50Seconds = r.Status.LagP50Seconds, lagP99Seconds = r.Status.LagP99Seconds,
                    lagSamples = r.Status.LagSamples, missing = r.Status.Missing, skipped = r.Status.Skipped,
                    isa = r.Status.Replica == "r3" ? s.R3Isa : "native",
                }).ToList(),
                lagNote = "replica lag: append to training; end-to-end from the intended publish time is at most publishLatencyP99 + lagP99",
                agreement = view.Agreement, fingerprintsEqual = agree, r3Isa = s.R3Isa, r3EqualsR1 = r3Agrees, r1VersusR3 = divergence,
                storeBytesPerExample = published == 0 ? 0 : (double)state.Bytes / published,
                wireBytesPerExample = wirePerExample,
                wireNote = "nats-server in_bytes + out_bytes over the run divided by examples: the publish, every replica's delivery (3), acks, status reports",
                deltaSync = new { intervalSeconds = DeltaInterval, windows = deltaWindows, bytesPerExampleTo3Replicas = deltaPerExample, rowBytes, denseBytes = denseParameters * sizeof(float) },
                wireOverDelta = deltaPerExample == 0 ? double.NaN : wirePerExample / deltaPerExample,
                sustained,
            };
            Console.WriteLine(F($"rate {rate}: wire {wirePerExample:F1} B/example, delta sync {deltaPerExample:F0} B/example; lag P99 r1/r3 ≤ {steadyP99:F3} s; publish P99 {pubP99:F3} s; agree {agree}; sustained {sustained}"));
            return new RunResult(report, agree, sustained);
        }
        finally
        {
            foreach (var p in processes.Values) { try { if (!p.HasExited) p.Kill(); p.WaitForExit(5000); } catch (InvalidOperationException) { } p.Dispose(); }
        }
    }

    /// <summary>Examples before a replica's position: every message up to <see cref="FleetStatus.AppliedSequence"/>
    /// and <see cref="FleetStatus.AppliedOffset"/> of the next (message sizes as the publisher's acks reported them).</summary>
    static long Trained(FleetStatus s, SortedDictionary<ulong, int> sizes)
    {
        long n = 0;
        foreach (var (seq, count) in sizes) { if (seq > s.AppliedSequence) break; n += count; }
        return n + s.AppliedOffset;
    }

    static async Task WaitForReplicas(IExampleLog log, string work)
    {
        // Publishing starts once every replica is up (its first status), so the lag is not the processes' start-up.
        var ready = Stopwatch.StartNew();
        while ((await log.ReadStatusesAsync(CancellationToken.None)).Count < Replicas.Length)
        {
            if (ready.Elapsed > TimeSpan.FromSeconds(180)) throw new TimeoutException($"the replicas did not report within 180 s; see {work}/r*.log");
            await Task.Delay(200);
        }
    }
    static Process StartReplica(Settings s, string url, string model, string replica, string work)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { s.Cli, "fleet", "replica", "--log", url, "--stream", Stream, "--subject", Subject, "--model", model, "--replica-id", replica,
                                  "--checkpoint-dir", Path.Combine(work, replica), "--batch", s.Batch.ToString(CultureInfo.InvariantCulture), "--checkpoint-seconds", "0.5" })
            psi.ArgumentList.Add(a);
        if (replica == "r3") foreach (var (k, v) in IsaEnvironment(s.R3Isa)) psi.Environment[k] = v;
        var p = Process.Start(psi)!;
        var log = new StreamWriter(Path.Combine(work, replica + ".log"), append: true) { AutoFlush = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>How far r3 (another ISA level) is from r1 at the end: both checkpoints restored here, every row's
    /// effective embedding (base + adapter) compared, and the scores of the stream's first 4 096 events.</summary>
    static object? IsaDivergence(string work, string model, int batch, SyntheticStreamConfig streamConfig)
    {
        var c1 = FleetCheckpoint.Load(Path.Combine(work, "r1"), Stream);
        var c3 = FleetCheckpoint.Load(Path.Combine(work, "r3"), Stream);
        if (c1 is null || c3 is null) return null;
        var trainer = FleetReplicaOptions.Deterministic(new LiveDlrm.Online.OnlineTrainerOptions(), batch);
        LiveModelNode Load(string path) => LiveModelNode.Load(path, trainer, ringCapacity: 16);
        using var a = new FleetReplica(Load(model), model, new FleetReplicaOptions { ReplicaId = "cmp1", BatchSize = batch }, Load);
        using var b = new FleetReplica(Load(model), model, new FleetReplicaOptions { ReplicaId = "cmp3", BatchSize = batch }, Load);
        a.Restore(c1);
        b.Restore(c3);
        var config = a.Node.Model.Config;
        var x = new float[config.Dim]; var y = new float[config.Dim];
        double maxRow = 0; long rowsDiffer = 0;
        for (int t = 0; t < config.Tables.Count; t++)
        {
            if (a.Node.Adapters[t] is not { } ta || b.Node.Adapters[t] is not { } tb) continue;
            for (long row = 0; row < config.Tables[t].Rows; row++)
            {
                ta.ReadEffectiveRow(row, x);
                tb.ReadEffectiveRow(row, y);
                double m = 0;
                for (int d = 0; d < x.Length; d++) m = Math.Max(m, Math.Abs((double)x[d] - y[d]));
                if (m > 0) rowsDiffer++;
                maxRow = Math.Max(maxRow, m);
            }
        }
        using var source = new SyntheticEventSource(streamConfig);
        var events = new EventBatch(source.Schema.Layout, 4096);
        source.Read(events);
        var sa = new float[events.Count]; var sb = new float[events.Count];
        a.Node.Serve(events, sa);
        b.Node.Serve(events, sb);
        double maxScore = 0, sumScore = 0;
        for (int i = 0; i < sa.Length; i++) { double d = Math.Abs((double)sa[i] - sb[i]); maxScore = Math.Max(maxScore, d); sumScore += d; }
        Console.WriteLine(F($"r1 vs r3: positions {c1.AppliedSequence}+{c1.AppliedOffset} / {c3.AppliedSequence}+{c3.AppliedOffset}; {rowsDiffer} rows differ, max |Δ| embedding {maxRow:G3}, max |Δ| score {maxScore:G3} over {sa.Length} events"));
        return new
        {
            r1Position = new { c1.AppliedSequence, c1.AppliedOffset }, r3Position = new { c3.AppliedSequence, c3.AppliedOffset },
            rowsDiffer, maxAbsEffectiveEmbeddingDelta = maxRow, events = sa.Length, maxAbsScoreDelta = maxScore, meanAbsScoreDelta = sumScore / sa.Length,
        };
    }

    /// <summary>Environment that caps a replica's instruction set: .NET's JIT (Vector512/256 paths), libtorch's
    /// kernel dispatch, MKL and oneDNN.</summary>
    internal static IEnumerable<(string, string)> IsaEnvironment(string level) => level switch
    {
        "avx2" => [("DOTNET_EnableAVX512F", "0"), ("ATEN_CPU_CAPABILITY", "avx2")],
        "avx2-mkl" => [("DOTNET_EnableAVX512F", "0"), ("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")],
        "sse42" => [("DOTNET_EnableAVX512F", "0"), ("DOTNET_EnableAVX2", "0"), ("DOTNET_EnableAVX", "0"), ("ATEN_CPU_CAPABILITY", "default"),
                    ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"), ("ONEDNN_MAX_CPU_ISA", "SSE41")],
        _ => [],
    };

    // ---------------------------------------------------------------- Criteo-shaped stream: wire bytes vs delta sync

    static List<TrainingExample> CriteoExamples(int count, double eventRate, string fingerprint = "f")
    {
        var stream = new CriteoShapedStream(seed: 1, eventRate);
        var list = new List<TrainingExample>(count);
        for (int i = 0; i < count; i++)
        {
            var (label, time, dense, bags) = stream.Next();
            list.Add(new TrainingExample(i + 1, time, label, fingerprint, "p1", dense, bags));
        }
        return list;
    }

    /// <summary>The delta sync on the Criteo-shaped stream: over one whole 10-min window of event time (at the
    /// stream's event rate, the same seed, so the published examples are its first ones), the distinct rows touched
    /// (264 B each: dim-64 float32 row + id) plus the dense weights, to 3 replicas, per example.</summary>
    static (double BytesPerExample, long Examples, long DistinctRows, long DenseBytes) CriteoDelta(double eventRate)
    {
        var stream = new CriteoShapedStream(seed: 1, eventRate);
        long examples = (long)Math.Round(eventRate * DeltaInterval);
        var seen = Enumerable.Range(0, CriteoShapedStream.Vocabularies.Length).Select(_ => new System.Collections.BitArray((int)CriteoShapedStream.Rows)).ToArray();
        long distinct = 0;
        for (long i = 0; i < examples; i++)
            for (int t = 0; t < seen.Length; t++)
            {
                int row = (int)stream.NextRow(t);
                if (!seen[t][row]) { seen[t][row] = true; distinct++; }
            }
        long rowBytes = CriteoShapedStream.Dim * sizeof(float) + sizeof(long), denseBytes = CriteoShapedStream.DenseParameters() * sizeof(float);
        return ((double)(distinct * rowBytes + denseBytes) * Replicas.Length / examples, examples, distinct, denseBytes);
    }

    /// <summary>The entropy of one Criteo-shaped example, computed from the stream's own distributions (not estimated
    /// from a sample, whose plug-in entropy would undercount the Zipf tails).</summary>
    static (double[] TableBits, double DenseBits, double LabelBits, double BytesPerExample) CriteoInformationBound()
    {
        var clock = Stopwatch.StartNew();
        var tables = Enumerable.Range(0, CriteoShapedStream.Vocabularies.Length).AsParallel().AsOrdered().Select(CriteoShapedStream.RowEntropyBits).ToArray();
        double dense = Enumerable.Range(0, CriteoShapedStream.Dense).Sum(CriteoShapedStream.DenseEntropyBits);
        double label = CriteoShapedStream.LabelEntropyBits;
        double bytes = (tables.Sum() + dense + label) / 8;
        Console.WriteLine(F($"information bound: {bytes:F1} B/example (ids {tables.Sum():F1} bits, dense {dense:F1} bits, label {label:F2} bits; {clock.Elapsed.TotalSeconds:F0} s)"));
        return (tables.Select(b => Math.Round(b, 3)).ToArray(), dense, label, bytes);
    }

    static async Task<RunResult> CriteoRunAsync(Settings s, double rate, double eventRate)
    {
        Console.WriteLine(F($"---- Criteo-shaped stream at {rate} examples/s, event rate {eventRate}/s ({LoadAverage()})"));
        var deltaClock = Stopwatch.StartNew();
        var delta = CriteoDelta(eventRate);
        Console.WriteLine(F($"delta sync: {delta.DistinctRows} distinct rows in {delta.Examples} examples (10 min of event time), {delta.BytesPerExample:F0} B/example to 3 replicas ({deltaClock.Elapsed.TotalSeconds:F0} s)"));
        var otherRates = new[] { 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2100.0 }.Where(r => r != eventRate).Select(r => (Rate: r, Delta: CriteoDelta(r).BytesPerExample)).ToList();
        var bound = CriteoInformationBound();
        string loadStart = LoadAverage();
        long total = (long)(rate * s.Seconds);
        var examples = CriteoExamples((int)total, eventRate);
        await using var nats = await NatsServerProcess.StartAsync();
        await using var log = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream, Subject = Subject });
        // Three log readers, each with its own connection and durable consumer, reading and decoding every message
        // through the replicas' code path (a model of 26 × 1 M × 64 float32 rows is 6.7 GB per replica: three do not fit
        // this machine), so the server's byte counters see three deliveries of everything.
        using var stop = new CancellationTokenSource();
        var readers = new List<(NatsExampleLog Log, Task<long> Count)>();
        long[] counts = new long[Replicas.Length];
        for (int r = 0; r < Replicas.Length; r++)
        {
            var readerLog = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream, Subject = Subject });
            int index = r;
            readers.Add((readerLog, Task.Run(async () =>
            {
                try
                {
                    await foreach (var e in readerLog.ReadAsync(Replicas[index], 1, stop.Token))
                        Interlocked.Add(ref counts[index], LogRecord.Decode(e.Payload.Span) switch { ExampleBatch b => b.Examples.Count, TrainingExample => 1, _ => 0 });
                }
                catch (OperationCanceledException) { }
                return Interlocked.Read(ref counts[index]);
            })));
        }
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{nats.MonitorPort}") };
        await Task.Delay(500);
        var (inBefore, outBefore) = await Varz(http);
        var (published, publishSeconds, latency, messages, errors, sizes) = await PublishPacedAsync(log, s.Batching, rate, total, n => examples[(int)n]);
        var state = await log.StateAsync(CancellationToken.None);
        var sw = Stopwatch.StartNew();
        while (counts.Any(c => Interlocked.Read(ref c) < published) && sw.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(100);
        await Task.Delay(500);
        var (inAfter, outAfter) = await Varz(http);
        stop.Cancel();
        foreach (var (readerLog, count) in readers) { await count; await readerLog.DisposeAsync(); }
        double wirePerExample = published == 0 ? 0 : ((inAfter - inBefore) + (outAfter - outBefore)) / published;
        var (pubP50, pubP99) = latency.Percentiles();
        bool complete = counts.All(c => c == published);
        // The payload of the run's own messages (re-encoded in the publisher's grouping) against the information bound.
        double payload = 0;
        { int at = 0; foreach (int count in sizes.Values) { payload += LogRecord.Encode(new ExampleBatch(examples.GetRange(at, count).ToArray()), s.Batching.Compress).Length; at += count; } }
        double payloadPerExample = published == 0 ? 0 : payload / published;
        var deltaByRate = otherRates.Append((Rate: eventRate, Delta: delta.BytesPerExample)).OrderBy(r => r.Rate).ToList();
        // Copies of every example on the wire: the publish and one delivery per replica.
        int copies = 1 + Replicas.Length;
        double floorWire = copies * bound.BytesPerExample;
        var report = new
        {
            informationBound = new
            {
                note = "entropy of one example as the stream draws it (ids per table through the Zipf, permutation and hash; dense counts; label; event time and request id are sequential: 0 bits): no encoding can average fewer bytes",
                idBitsPerTable = bound.TableBits, idBits = bound.TableBits.Sum(), denseBits = bound.DenseBits, labelBits = bound.LabelBits,
                bytesPerExample = bound.BytesPerExample,
                payloadBytesPerExample = payloadPerExample, payloadOverBound = payloadPerExample / bound.BytesPerExample,
                copiesOnTheWire = copies,
                wireFloorBytesPerExample = floorWire,
                wireFloorNote = "copies × bound: the wire bytes of a perfect code with no protocol overhead at all",
                wireOverWireFloor = wirePerExample / floorWire,
                wireFloorOverDelta = floorWire / delta.BytesPerExample,
                targetOneTenthPossibleAtThisEventRate = floorWire <= delta.BytesPerExample / 10,
                highestEventRateWhereMeasuredWireMeetsOneTenth = deltaByRate.Where(r => wirePerExample <= r.Delta / 10).Select(r => (double?)r.Rate).LastOrDefault(),
                highestEventRateWhereWireFloorMeetsOneTenth = deltaByRate.Where(r => floorWire <= r.Delta / 10).Select(r => (double?)r.Rate).LastOrDefault(),
                eventRatesTried = deltaByRate.Select(r => r.Rate).ToArray(),
            },
            stream = F($"Criteo-shaped: 13 dense, 26 sparse (Criteo Kaggle vocabularies, Zipf {CriteoShapedStream.ZipfExponent}, hashed into {CriteoShapedStream.Rows}-row tables), dim {CriteoShapedStream.Dim}, event rate {eventRate}/s"),
            rateTarget = rate, seconds = s.Seconds, loadAverageBefore = loadStart, loadAverageAfter = LoadAverage(),
            publishedExamples = published, messages, examplesPerMessage = messages == 0 ? 0 : (double)published / messages,
            publishedPerSecond = published / publishSeconds, publishErrors = errors, publishLatencyP50Seconds = pubP50, publishLatencyP99Seconds = pubP99,
            logMessages = state.Messages, readerExamples = counts, everyReaderGotEverything = complete,
            readersNote = "three log readers (own connection and durable consumer each, the replicas' read and decode path, no training)",
            storeBytesPerExample = published == 0 ? 0 : (double)state.Bytes / published,
            wireBytesPerExample = wirePerExample,
            deltaSync = new { intervalSeconds = DeltaInterval, windowExamples = delta.Examples, distinctRows = delta.DistinctRows, rowBytes = CriteoShapedStream.Dim * 4 + 8, denseBytes = delta.DenseBytes, bytesPerExampleTo3Replicas = delta.BytesPerExample },
            wireOverDelta = wirePerExample / delta.BytesPerExample,
            // The log's bytes per example do not depend on the event rate; the delta sync's do (fewer examples share a window's rows).
            wireOverDeltaByEventRate = otherRates.Select(r => new { eventRate = r.Rate, deltaBytesPerExample = r.Delta, wireOverDelta = wirePerExample / r.Delta }).ToList(),
        };
        Console.WriteLine(F($"criteo: information bound {bound.BytesPerExample:F1} B/example (ids {bound.TableBits.Sum():F0} bits, dense {bound.DenseBits:F0}, label {bound.LabelBits:F2}); payload {payloadPerExample:F1} B/example = {payloadPerExample / bound.BytesPerExample:F2}× the bound; wire floor {floorWire:F0} B/example = 1/{delta.BytesPerExample / floorWire:F1} of the delta sync"));
        Console.WriteLine(F($"criteo: wire {wirePerExample:F1} B/example ({(double)published / Math.Max(1, messages):F0} examples/message), delta sync {delta.BytesPerExample:F0} B/example: ratio 1/{delta.BytesPerExample / wirePerExample:F1}; every reader complete {complete}"));
        return new RunResult(report, complete, true);
    }

    /// <summary>Bytes and CPU of the encodings on the same examples, interleaved rounds: single-example records, plain
    /// batches, Brotli batches (encode and decode µs per example, median of rounds).</summary>
    static object CodecCosts(List<TrainingExample> examples, int perMessage)
    {
        perMessage = Math.Max(2, perMessage);
        var chunks = examples.Chunk(perMessage).Select(c => new ExampleBatch(c)).ToList();
        double single = examples.Sum(e => (double)LogRecord.Encode(e).Length) / examples.Count;
        double plain = chunks.Sum(c => (double)LogRecord.Encode(c).Length) / examples.Count;
        double brotli = chunks.Sum(c => (double)LogRecord.Encode(c, compress: true).Length) / examples.Count;
        var encodePlain = new List<double>(); var encodeBrotli = new List<double>(); var decodePlain = new List<double>(); var decodeBrotli = new List<double>(); var encodeSingle = new List<double>();
        var plainBytes = chunks.Select(c => LogRecord.Encode(c)).ToList();
        var brotliBytes = chunks.Select(c => LogRecord.Encode(c, compress: true)).ToList();
        for (int round = 0; round < 7; round++)
        {
            encodeSingle.Add(Time(() => { foreach (var e in examples) LogRecord.Encode(e); }));
            encodePlain.Add(Time(() => { foreach (var c in chunks) LogRecord.Encode(c); }));
            encodeBrotli.Add(Time(() => { foreach (var c in chunks) LogRecord.Encode(c, compress: true); }));
            decodePlain.Add(Time(() => { foreach (var b in plainBytes) LogRecord.Decode(b); }));
            decodeBrotli.Add(Time(() => { foreach (var b in brotliBytes) LogRecord.Decode(b); }));
        }
        double Time(Action a) { var sw = Stopwatch.StartNew(); a(); return sw.Elapsed.TotalMicroseconds / examples.Count; }
        static double Median(List<double> v) { var a = v.Order().ToArray(); return a[a.Length / 2]; }
        var result = new
        {
            examples = examples.Count, examplesPerMessage = perMessage,
            payloadBytesPerExample = new { single, batch = plain, batchBrotli = brotli },
            encodeMicrosecondsPerExample = new { single = Median(encodeSingle), batch = Median(encodePlain), batchBrotli = Median(encodeBrotli) },
            decodeMicrosecondsPerExample = new { batch = Median(decodePlain), batchBrotli = Median(decodeBrotli) },
            loadAverage = LoadAverage(),
        };
        Console.WriteLine(F($"codec: payload B/example single {single:F1}, batch {plain:F1}, batch+Brotli {brotli:F1}; encode µs/example {Median(encodeSingle):F2} / {Median(encodePlain):F2} / {Median(encodeBrotli):F2}; decode {Median(decodePlain):F2} / {Median(decodeBrotli):F2}"));
        return result;
    }

    static async Task<(double In, double Out)> Varz(HttpClient http)
    {
        using var doc = JsonDocument.Parse(await http.GetStringAsync("/varz"));
        return (doc.RootElement.GetProperty("in_bytes").GetDouble(), doc.RootElement.GetProperty("out_bytes").GetDouble());
    }

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
