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
/// <c>./build.sh bench fleet</c>: a nats-server, three <c>livedlrm fleet replica</c> processes and a paced publisher
/// of labelled examples (the default synthetic stream's events, as a serving node would publish them) on loopback,
/// for a bounded time; replica r2 is killed with SIGKILL half-way and restarted from its checkpoint. Reports
/// examples/s published and applied, replication lag P50/P99 per replica, every replica's adapter fingerprint at the
/// end, examples lost (published but not in the log) and whether the restarted replica equals the others, bytes per
/// example on the wire (the server's own byte counters: every replica's delivery, headers and acks included) and in
/// the store, and, on the same event stream, what a delta-update sync (changed rows + dense weights every 10 min of
/// event time) would ship to the same three replicas.
/// </summary>
internal sealed class FleetRun : BenchRun
{
    readonly Option<double> _rate = Opt.Double("--rate", "examples published per second", 2000, 1, 1e6);
    readonly Option<double> _seconds = Opt.Double("--seconds", "seconds of publishing", 20, 2, 3600);
    readonly Option<int> _batch = Opt.Int("--batch", "examples per training step on every replica", 64, 1, 1 << 16);
    readonly Option<string?> _out = Opt.Text("--out", "JSON path (default artifacts/bench/fleet.json)", helpName: "PATH");

    public FleetRun() : base("fleet", "nats-server + 3 replica processes + a publisher on loopback, one replica SIGKILLed and restarted: rates, replication lag, fingerprints, wire bytes vs delta sync")
    {
        foreach (var o in new Option[] { _rate, _seconds, _batch, _out }) Add(o);
    }

    protected override int Run(ParseResult result)
    {
        string root = Lookup.LookupRun.RepoRoot();
        string output = result.GetValue(_out) ?? Path.Combine(root, "artifacts", "bench", "fleet.json");
        string cli = Path.Combine(root, "engine", "LiveDlrm.Cli", "bin", "Release", "net10.0", "livedlrm.dll");
        if (!File.Exists(cli)) throw new FileNotFoundException($"{cli} is missing (./build.sh build)", cli);
        return RunAsync(cli, root, output, result.GetValue(_rate), result.GetValue(_seconds), result.GetValue(_batch)).GetAwaiter().GetResult();
    }

    const string Stream = "LIVEDLRM_EXAMPLES", Subject = "livedlrm.examples.bench";
    static readonly string[] Replicas = ["r1", "r2", "r3"];

    static async Task<int> RunAsync(string cli, string root, string output, double rate, double seconds, int batch)
    {
        string work = Path.Combine(root, "artifacts", "bench", "fleet-work");
        if (Directory.Exists(work)) Directory.Delete(work, true);
        Directory.CreateDirectory(work);
        TorchRuntime.EnsureInitialised();
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

        await using var nats = await NatsServerProcess.StartAsync();
        var processes = new Dictionary<string, Process>();
        try
        {
            await using var log = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream, Subject = Subject });
            foreach (var r in Replicas) processes[r] = StartReplica(cli, nats.Url, model, r, work, batch);
            // Publishing starts once every replica is up (its first status), so the lag is not the processes' start-up.
            var ready = Stopwatch.StartNew();
            while ((await log.ReadStatusesAsync(CancellationToken.None)).Count < Replicas.Length)
            {
                if (ready.Elapsed > TimeSpan.FromSeconds(120)) throw new TimeoutException($"the replicas did not report within 120 s; see {work}/r*.log");
                await Task.Delay(200);
            }
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{nats.MonitorPort}") };
            var (inBefore, outBefore) = await Varz(http);

            // ---- publish at a paced rate; SIGKILL r2 half-way, restart it a second later
            long published = 0, duplicates = 0, errors = 0;
            long payloadBytes = 0;
            var rows = new HashSet<(int Table, long Row)>();
            long deltaBytes = 0, deltaWindows = 0, windowEnd = long.MinValue;
            const long DeltaInterval = 600;
            int rowBytes = config.Dim * sizeof(float) + sizeof(long);
            using var source = new SyntheticEventSource(streamConfig);
            var events = new EventBatch(source.Schema.Layout, 256);
            long total = (long)(rate * seconds);
            var sw = Stopwatch.StartNew();
            bool killed = false, restarted = false;
            TimeSpan killAt = TimeSpan.FromSeconds(seconds / 2), restartAt = killAt + TimeSpan.FromSeconds(1);
            double killedAtSeconds = 0;
            var pending = new List<Task<PublishAck>>();
            while (published + pending.Count < total)
            {
                if (source.Read(events) == 0) break;
                for (int i = 0; i < events.Count && published + pending.Count < total; i++)
                {
                    long n = published + pending.Count;
                    var due = TimeSpan.FromSeconds(n / rate);
                    if (sw.Elapsed < due) await Task.Delay(due - sw.Elapsed);
                    if (!killed && sw.Elapsed >= killAt) { processes["r2"].Kill(); await processes["r2"].WaitForExitAsync(); killed = true; killedAtSeconds = sw.Elapsed.TotalSeconds; Console.WriteLine(F($"{sw.Elapsed.TotalSeconds:F1} s: r2 SIGKILLed")); }
                    if (killed && !restarted && sw.Elapsed >= restartAt) { processes["r2"].Dispose(); processes["r2"] = StartReplica(cli, nats.Url, model, "r2", work, batch); restarted = true; Console.WriteLine(F($"{sw.Elapsed.TotalSeconds:F1} s: r2 restarted from its checkpoint")); }
                    var example = new TrainingExample(n + 1, events.Timestamps[i], events.Labels[i], fingerprint, "p1", events.DenseRow(i).ToArray(),
                                                      Enumerable.Range(0, events.SparseCount).Select(t => events.Bag(t, i).ToArray()).ToArray());
                    var payload = LogRecord.Encode(example);
                    payloadBytes += payload.Length;
                    pending.Add(log.PublishAsync("p1-" + (n + 1).ToString(CultureInfo.InvariantCulture), payload, CancellationToken.None));
                    if (pending.Count >= 64) Drain();
                    // The delta sync's bill on the same events: distinct changed rows per 10-min window of event time, plus the dense weights.
                    long ts = events.Timestamps[i];
                    if (windowEnd == long.MinValue) windowEnd = ts + DeltaInterval;
                    while (ts >= windowEnd) { deltaBytes += rows.Count * (long)rowBytes + denseParameters * sizeof(float); deltaWindows++; rows.Clear(); windowEnd += DeltaInterval; }
                    for (int t = 0; t < events.SparseCount; t++) foreach (long id in events.Bag(t, i)) rows.Add((t, id));
                }
            }
            Drain();
            void Drain()
            {
                foreach (var p in pending)
                {
                    try { var ack = p.GetAwaiter().GetResult(); published++; if (ack.Duplicate) duplicates++; }
                    catch (Exception) { errors++; }
                }
                pending.Clear();
            }
            if (rows.Count > 0) { deltaBytes += rows.Count * (long)rowBytes + denseParameters * sizeof(float); deltaWindows++; }
            double publishSeconds = sw.Elapsed.TotalSeconds;
            var state = await log.StateAsync(CancellationToken.None);
            Console.WriteLine(F($"published {published} examples in {publishSeconds:F1} s ({published / publishSeconds:F0}/s), {errors} errors; log holds {state.Messages} messages, {state.Bytes} bytes"));

            // ---- wait until every replica reports the last position (each reports every 0.5 s)
            IReadOnlyList<FleetStatus> statuses = [];
            var catchUp = Stopwatch.StartNew();
            while (catchUp.Elapsed < TimeSpan.FromSeconds(120))
            {
                statuses = await log.ReadStatusesAsync(CancellationToken.None);
                ulong target = state.LastSequence - state.LastSequence % (ulong)batch;   // the trailing partial batch is not trained
                if (statuses.Count == Replicas.Length && statuses.All(s => s.LastSeen >= state.LastSequence && s.AppliedSequence >= target)) break;
                await Task.Delay(250);
            }
            double allCaughtUp = sw.Elapsed.TotalSeconds;
            // let the last status (with the fingerprint at the final position) land, then stop the replicas
            await Task.Delay(1200);
            var (inAfter, outAfter) = await Varz(http);
            foreach (var p in processes.Values) { try { p.Kill(); } catch (InvalidOperationException) { } }
            statuses = await log.ReadStatusesAsync(CancellationToken.None);
            var view = FleetView.Of(state, statuses);
            Console.Write((await FleetReplicaHost.StatusAsync(nats.Url, Stream, CancellationToken.None)).Text);

            double wireOut = outAfter - outBefore, wireIn = inAfter - inBefore;
            double deltaPerExample = published == 0 ? 0 : (double)deltaBytes * Replicas.Length / published;
            double wirePerExample = published == 0 ? 0 : (wireIn + wireOut) / published;
            var report = new
            {
                machine = new { processors = Environment.ProcessorCount, loadAverage = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "" },
                stream = "default synthetic stream (seed 1), " + F($"{config.Tables.Count} tables, dim {config.Dim}"),
                rateTarget = rate, seconds, batch,
                publishedExamples = published, publishedPerSecond = published / publishSeconds, publishErrors = errors, duplicatesOnPublish = duplicates,
                logMessages = state.Messages, examplesLost = published - (long)state.Messages,
                killedR2AtSeconds = killedAtSeconds,
                allCaughtUpAfterPublishSeconds = allCaughtUp - publishSeconds,
                replicas = view.Replicas.Select(r => new
                {
                    replica = r.Status.Replica, appliedSequence = r.Status.AppliedSequence, fingerprint = r.Status.Fingerprint,
                    examplesAppliedThisProcess = r.Status.ExamplesApplied, appliedPerSecond = r.Status.ExamplesApplied / publishSeconds,
                    lagP50Seconds = r.Status.LagP50Seconds, lagP99Seconds = r.Status.LagP99Seconds, lagSamples = r.Status.LagSamples,
                    missing = r.Status.Missing, skipped = r.Status.Skipped,
                }).ToList(),
                agreement = view.Agreement,
                allFingerprintsEqual = statuses.Count == Replicas.Length && statuses.Select(s => (s.AppliedSequence, s.Fingerprint)).Distinct().Count() == 1,
                payloadBytesPerExample = published == 0 ? 0 : (double)payloadBytes / published,
                storeBytesPerExample = state.Messages == 0 ? 0 : (double)state.Bytes / state.Messages,
                wireBytesPerExample = wirePerExample,
                wireNote = "nats-server in_bytes + out_bytes over the run divided by examples: the publish, every replica's delivery (3), acks, status reports",
                deltaSync = new { intervalSeconds = DeltaInterval, windows = deltaWindows, bytesPerExampleTo3Replicas = deltaPerExample, rowBytes, denseBytes = denseParameters * sizeof(float) },
                wireOverDelta = deltaPerExample == 0 ? double.NaN : wirePerExample / deltaPerExample,
            };
            Directory.CreateDirectory(Path.GetDirectoryName(output)!);
            File.WriteAllText(output, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            Console.WriteLine(F($"wire {wirePerExample:F0} B/example (payload {report.payloadBytesPerExample:F0} B), delta sync {deltaPerExample:F0} B/example to 3 replicas; all fingerprints equal: {report.allFingerprintsEqual}; lost {report.examplesLost}"));
            Console.WriteLine($"report: {output}");
            return report.allFingerprintsEqual && report.examplesLost == 0 ? 0 : 1;
        }
        finally
        {
            foreach (var p in processes.Values) { try { if (!p.HasExited) p.Kill(); p.WaitForExit(5000); } catch (InvalidOperationException) { } p.Dispose(); }
        }
    }

    static Process StartReplica(string cli, string url, string model, string replica, string work, int batch)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { cli, "fleet", "replica", "--log", url, "--stream", Stream, "--subject", Subject, "--model", model, "--replica-id", replica,
                                  "--checkpoint-dir", Path.Combine(work, replica), "--batch", batch.ToString(CultureInfo.InvariantCulture), "--checkpoint-seconds", "0.5" })
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        var log = new StreamWriter(Path.Combine(work, replica + ".log"), append: true) { AutoFlush = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static async Task<(double In, double Out)> Varz(HttpClient http)
    {
        using var doc = JsonDocument.Parse(await http.GetStringAsync("/varz"));
        return (doc.RootElement.GetProperty("in_bytes").GetDouble(), doc.RootElement.GetProperty("out_bytes").GetDouble());
    }

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
