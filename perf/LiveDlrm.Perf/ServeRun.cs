using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using LiveDlrm.Checkpoints;
using LiveDlrm.CommandLine;
using LiveDlrm.Data;
using LiveDlrm.Harness;
using LiveDlrm.Model;
using LiveDlrm.Numa;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Perf;

/// <summary>
/// <c>./build.sh bench serve</c>: a <c>livedlrm serve</c> child process on loopback and the open-loop load generator
/// in this process. First the maximum sustainable QPS with the trainer off (the latency harness's criterion: nothing
/// dropped, failed or unanswered, median latency ≤ 5 × the light-load median); then at 50 % and 80 % of it the three modes
/// <c>no-trainer</c>, <c>trainer-unthrottled</c> (QoS off) and <c>trainer-qos</c> (plan, pinning, resctrl if mounted,
/// the duty-cycle controller defending the no-trainer server-side P99; an unpinned trainer at nice 10) and
/// <c>trainer-qos-idle</c> (the same with the trainer under SCHED_IDLE) in interleaved rounds with a rotating order,
/// so slow drifts of a shared machine fall on every mode alike; the figures are medians over rounds, the ratios
/// per-round P99(mode) / P99(no-trainer of the same round). Every served event becomes a training sample (labels
/// for a fraction, implicit negatives for the rest), so the trainer's load follows the traffic.
/// </summary>
internal sealed class ServeRun : BenchRun
{
    const string Token = "bench-serve-token-0123456789";
    // trainer-qos is `serve --qos full` as shipped (an unpinned trainer at nice 10); trainer-qos-idle is the same
    // with the trainer under SCHED_IDLE instead, measured in the same rounds so the two mechanisms are compared
    // under the same drift of a shared machine.
    static readonly string[] Modes = ["no-trainer", "trainer-unthrottled", "trainer-qos", "trainer-qos-idle"];

    readonly Option<int> _rounds = Opt.Int("--rounds", "interleaved rounds per load", 8, 1, 1000);
    readonly Option<double> _seconds = Opt.Double("--seconds", "measured seconds per mode and round", 4, 0.5, 600);
    readonly Option<int> _batch = Opt.Int("--batch", "events per request", 16, 1, 4096);
    readonly Option<double?> _maxQps = Opt.OptionalDouble("--max-qps", "skip the search and use Q as the maximum sustainable QPS", 1, 1e6);
    readonly Option<string?> _out = Opt.Text("--out", "JSON path (default artifacts/bench/serve.json)", helpName: "PATH");
    readonly Option<bool> _pin = Opt.Flag("--pin", "run the server on the first PU and this load generator on the others (taskset), so neither preempts the other");
    readonly Option<int?> _gen0Mb = Opt.OptionalInt("--server-gen0-mb", "the server's GC gen0 budget in MiB (DOTNET_GCgen0size); default: the runtime's choice", 1, 4096);

    public ServeRun() : base("serve", "a live node under open-loop load: max QPS, then P50/P99/P99.9 and trainer samples/s at 50 % and 80 %, no trainer / unthrottled / QoS, interleaved rounds")
    {
        foreach (var o in new Option[] { _rounds, _seconds, _batch, _maxQps, _out, _pin, _gen0Mb }) Add(o);
    }

    protected override int Run(ParseResult result)
    {
        string root = RepoRoot();
        string output = result.GetValue(_out) ?? Path.Combine(root, "artifacts", "bench", "serve.json");
        string cli = Path.Combine(root, "engine", "LiveDlrm.Cli", "bin", "Release", "net10.0", "livedlrm.dll");
        if (!File.Exists(cli)) throw new FileNotFoundException($"{cli} is missing (./build.sh build)", cli);
        var setup = new ServerSetup(result.GetValue(_pin), result.GetValue(_gen0Mb));
        return RunAsync(cli, root, output, result.GetValue(_rounds), result.GetValue(_seconds), result.GetValue(_batch), result.GetValue(_maxQps), setup).GetAwaiter().GetResult();
    }

    /// <summary>Where the server and the load generator run, and the server's GC gen0 budget (null: the runtime's).</summary>
    sealed record ServerSetup(bool Pin, int? Gen0Mb)
    {
        public string Placement => Pin
            ? F($"pinned: server on PU 0, load generator on PU 1-{Environment.ProcessorCount - 1} (taskset)")
            : "unpinned: server and load generator share every PU";
        public string Gc => Gen0Mb is int mb ? F($"workstation concurrent GC, gen0 budget {mb} MiB (DOTNET_GCgen0size)") : "workstation concurrent GC, runtime-chosen gen0 budget";
    }

    static async Task<int> RunAsync(string cli, string root, string output, int rounds, double seconds, int batch, double? givenMax, ServerSetup setup)
    {
        if (setup.Pin)
        {
            if (Environment.ProcessorCount < 2) throw new InvalidOperationException("--pin needs at least two PUs");
            // Every thread of this process (the load generator's), and the threads it starts later, off PU 0.
            using var taskset = Process.Start("taskset", ["-a", "-c", "-p", F($"1-{Environment.ProcessorCount - 1}"), Environment.ProcessId.ToString(CultureInfo.InvariantCulture)]);
            taskset.WaitForExit();
            if (taskset.ExitCode != 0) throw new InvalidOperationException("--pin: taskset failed");
        }
        string work = Path.Combine(root, "artifacts", "bench", "serve-work");
        if (Directory.Exists(work)) Directory.Delete(work, true);
        Directory.CreateDirectory(work);
        string model = Path.Combine(work, "model");
        Console.WriteLine(BuildModel(model));
        string tokenFile = Path.Combine(work, "token");
        File.WriteAllText(tokenFile, Token);
        int port = FreePortPair();
        var target = new IPEndPoint(IPAddress.Loopback, port);
        using var server = StartServer(cli, model, tokenFile, port, Path.Combine(work, "server.log"), setup);
        using var http = new HttpClient { BaseAddress = new Uri($"http://{target}"), Timeout = TimeSpan.FromSeconds(60) };
        try
        {
            if (!await WaitReady(http, server)) { Console.Error.WriteLine($"bench serve: the server did not start; see {work}/server.log"); return 1; }
            var topology = Topology.Detect();
            string loadStart = LoadAverage();
            Console.WriteLine($"load average: {loadStart}; {setup.Placement}; server {setup.Gc}");
            string machine = F($"{topology.Source}: {topology.Nodes.Count} node(s), {topology.Cores.Count} cores, {topology.Pus.Count} PUs, {Environment.ProcessorCount} processors visible");

            // ---- max sustainable QPS, trainer off
            await SetTrainer(http, "no-trainer", null);
            var search = new List<ServeSearchStep>();
            var light = await Load(target, 20, 3, batch, 11);
            double limit = 5 * light.P50Ms;
            Console.WriteLine(F($"light load 20 QPS: P50 {light.P50Ms:F3} ms, P99 {light.P99Ms:F3} ms → sustainable = no errors or drops and P50 ≤ {limit:F3} ms"));
            double maxQps = 20;
            if (givenMax is double g) maxQps = g;
            else
            {
                for (double qps = 40; qps <= 20_000; qps *= 1.5)
                {
                    var r = await Load(target, qps, 3, batch, 12 + search.Count);
                    bool ok = r.Errors == 0 && r.Dropped == 0 && r.Requests == r.Sent && r.P50Ms <= limit;
                    search.Add(new ServeSearchStep(qps, r.AchievedQps, r.P50Ms, r.P99Ms, r.Errors, r.Dropped, ok));
                    Console.WriteLine(F($"search: {qps,7:F0} QPS → achieved {r.AchievedQps:F0}, P50 {r.P50Ms:F3} ms, P99 {r.P99Ms:F3} ms, errors {r.Errors}, dropped {r.Dropped}: {(ok ? "sustainable" : "not sustainable")}"));
                    if (!ok) break;
                    maxQps = qps;
                }
            }
            Console.WriteLine(F($"max sustainable QPS: {maxQps:F0} ({batch} events per request)"));

            var loads = new List<ServeLoadCase>();
            foreach (double fraction in new[] { 0.5, 0.8 })
            {
                double qps = maxQps * fraction;
                // The controller defends the no-trainer server-side P99 at this load (calibration run).
                await SetTrainer(http, "no-trainer", null);
                var before = await Scrape(http);
                await Load(target, qps, Math.Max(4, seconds), batch, 99);
                double targetMs = ServerP99Ms(before, await Scrape(http));
                Console.WriteLine(F($"load {fraction:P0} = {qps:F0} QPS: no-trainer server-side P99 (with pool wait) {targetMs:F3} ms = the QoS target"));
                // One unrecorded pass through the modes: the first trainer start of a run pays one-off costs.
                foreach (var mode in Modes)
                {
                    await SetTrainer(http, mode, targetMs);
                    await Load(target, qps, 1, batch, 98);
                }
                var perMode = Modes.ToDictionary(x => x, _ => new List<(LoadResult R, double Rate, double Duty, GcPauses Gc)>());
                var ratios = Modes.ToDictionary(x => x, _ => new List<double>());
                for (int round = 0; round < rounds; round++)
                {
                    var order = Enumerable.Range(0, Modes.Length).Select(i => Modes[(i + round) % Modes.Length]).ToArray();
                    var p99 = new Dictionary<string, double>();
                    foreach (var mode in order)
                    {
                        await SetTrainer(http, mode, targetMs);
                        await Task.Delay(500);
                        double s0 = Samples(await Scrape(http));
                        var gcBefore = ServerGcPauses(await Scrape(http), 0);
                        var sw = Stopwatch.StartNew();
                        var r = await Load(target, qps, seconds, batch, 1000 * round + Array.IndexOf(Modes, mode));
                        var after = await Scrape(http);
                        double elapsed = sw.Elapsed.TotalSeconds;
                        double rate = (Samples(after) - s0) / elapsed;
                        double duty = Value(after, "livedlrm_qos_duty_cycle_ratio");
                        var gc = ServerGcPauses(after, elapsed, gcBefore);
                        perMode[mode].Add((r, rate, duty, gc));
                        p99[mode] = r.P99Ms;
                        Console.WriteLine(F($"  round {round + 1}/{rounds} {mode,-20} P50 {r.P50Ms,8:F3} ms  P99 {r.P99Ms,8:F3} ms  P99.9 {r.P999Ms,8:F3} ms  trainer {rate,8:F0} samples/s  duty {duty:F2}  errors {r.Errors} dropped {r.Dropped}  | server GC {gc.Count} pauses, longest ≤ {gc.MaxMs:F1} ms; generator late P99 {r.SendLateP99Ms:F1} ms, GC {r.ClientGcPauseMs:F1} ms"));
                    }
                    foreach (var mode in Modes) ratios[mode].Add(p99[mode] / p99["no-trainer"]);
                }
                double unthrottledRate = Median(perMode["trainer-unthrottled"].Select(x => x.Rate));
                var modes = Modes.Select(mode => new ServeModeResult(
                    mode,
                    qps,
                    P50Ms: Median(perMode[mode].Select(x => x.R.P50Ms)),
                    P99Ms: Median(perMode[mode].Select(x => x.R.P99Ms)),
                    P999Ms: Median(perMode[mode].Select(x => x.R.P999Ms)),
                    MaxMs: perMode[mode].Max(x => x.R.MaxMs),
                    TrainerSamplesPerS: mode == "no-trainer" ? null : Median(perMode[mode].Select(x => x.Rate)),
                    TrainerRateVsUnthrottled: mode == "no-trainer" ? null : Median(perMode[mode].Select(x => x.Rate)) / unthrottledRate,
                    TrainerDutyCycleMedian: mode.StartsWith("trainer-qos", StringComparison.Ordinal) ? Median(perMode[mode].Select(x => x.Duty)) : null,
                    P99VsNoTrainerPerRound: ratios[mode],
                    P99VsNoTrainer: Median(ratios[mode]),
                    P99AddedMsMedian: Median(Enumerable.Range(0, rounds).Select(i => perMode[mode][i].R.P99Ms - perMode["no-trainer"][i].R.P99Ms)),
                    Errors: perMode[mode].Sum(x => x.R.Errors),
                    Dropped: perMode[mode].Sum(x => x.R.Dropped),
                    Stalls: new ServeStallAttribution(
                        ServerGcPausesPerSMedian: Median(perMode[mode].Select(x => x.Gc.PerS)),
                        ServerGcPauseMsPerSMedian: Median(perMode[mode].Select(x => x.Gc.MsPerS)),
                        ServerGcPauseMaxMs: perMode[mode].Max(x => x.Gc.MaxMs),
                        GeneratorSendLateP99MsMedian: Median(perMode[mode].Select(x => x.R.SendLateP99Ms)),
                        GeneratorSendLateMaxMs: perMode[mode].Max(x => x.R.SendLateMaxMs),
                        GeneratorGcPauseMsMedian: Median(perMode[mode].Select(x => x.R.ClientGcPauseMs))))).ToList();
                foreach (var x in modes)
                    Console.WriteLine(F($"{fraction:P0} {x.Mode,-20} median P50 {x.P50Ms:F3} ms  P99 {x.P99Ms:F3} ms  P99.9 {x.P999Ms:F3} ms  P99 ratio (median of rounds) {x.P99VsNoTrainer:F3}  added P99 {x.P99AddedMsMedian:F3} ms  trainer {x.TrainerSamplesPerS:F0} samples/s ({x.TrainerRateVsUnthrottled:P0} of unthrottled)  server GC {x.Stalls.ServerGcPausesPerSMedian:F2} pauses/s, {x.Stalls.ServerGcPauseMsPerSMedian:F1} ms/s, longest ≤ {x.Stalls.ServerGcPauseMaxMs:F1} ms"));
                loads.Add(new ServeLoadCase(fraction, qps, targetMs, rounds, seconds, modes));
            }
            await SetTrainer(http, "no-trainer", null);
            var report = new ServeBenchReport(machine, loadStart, LoadAverage(), batch, light.P50Ms, maxQps, search, loads,
                "at 50 %: trainer-qos p99_vs_no_trainer <= 1.05 with trainer_rate_vs_unthrottled >= 0.30; at 80 %: trainer-qos p99_added_ms_median < 20; trainer-qos never worse than trainer-unthrottled",
                setup.Placement, setup.Gc);
            // snake_case like latency.json, whose field names these share where they mean the same.
            Reports.ReportJson.Write(report, output, BenchJsonContext.Default.ServeBenchReport);
            Console.WriteLine($"wrote {output}");
            return 0;
        }
        finally
        {
            // A graceful stop (SIGTERM): the server drains and exits by itself.
            if (!server.HasExited)
            {
                Process.Start("kill", ["-TERM", server.Id.ToString(CultureInfo.InvariantCulture)])?.WaitForExit();
                if (!server.WaitForExit(20_000)) server.Kill();
            }
        }
    }

    /// <summary>The default synthetic world's DLRM, trained one pass over 50 k events, saved as the served base.</summary>
    static string BuildModel(string dir)
    {
        TorchRuntime.EnsureInitialised();
        var sw = Stopwatch.StartNew();
        using var source = new SyntheticEventSource(new SyntheticStreamConfig { Seed = 1 });
        var config = DlrmConfig.ForLayout(source.Schema.Layout, [32, 16], [64, 32, 1]);
        using var model = DlrmModel.Create(config, 7);
        using (var trainer = new DlrmTrainer(model, new DlrmTrainerOptions { Threads = 1 }))
        {
            var b = new EventBatch(source.Schema.Layout, 512);
            for (long seen = 0; seen < 50_000 && source.Read(b) > 0; seen += b.Count) trainer.Step(b);
        }
        Checkpoint.Save(model, dir);
        return F($"model: {config.Tables.Count} tables ({model.TableBytes >> 20} MiB), trained on 50 000 synthetic events in {sw.Elapsed.TotalSeconds:F1} s");
    }

    static Process StartServer(string cli, string model, string token, int port, string logFile, ServerSetup setup)
    {
        var psi = new ProcessStartInfo(setup.Pin ? "taskset" : "dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        if (setup.Pin) foreach (var a in new[] { "-c", "0", "dotnet" }) psi.ArgumentList.Add(a);
        if (setup.Gen0Mb is int mb) psi.Environment["DOTNET_GCgen0size"] = F($"0x{(long)mb << 20:X}");
        foreach (var a in new[] { cli, "serve", "--model", model, "--listen", $"127.0.0.1:{port}", "--admin-token-file", token, "--no-trainer",
                                  "--label-window", "500ms", "--qos", "full" })
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        var log = new StreamWriter(logFile) { AutoFlush = true };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static async Task<bool> WaitReady(HttpClient http, Process server)
    {
        for (int i = 0; i < 600 && !server.HasExited; i++)
        {
            try { using var r = await http.GetAsync("/readyz"); if (r.IsSuccessStatusCode) return true; }
            catch (HttpRequestException) { }
            await Task.Delay(100);
        }
        return false;
    }

    static async Task SetTrainer(HttpClient http, string mode, double? targetMs)
    {
        string body = mode switch
        {
            "no-trainer" => "{\"running\":false}",
            "trainer-unthrottled" => "{\"running\":true,\"qos\":\"off\"}",
            "trainer-qos-idle" => F($"{{\"running\":true,\"qos\":\"full\",\"trainerPriority\":\"idle\",\"qosTargetMs\":{targetMs ?? 10:R}}}"),
            _ => F($"{{\"running\":true,\"qos\":\"full\",\"trainerPriority\":\"nice\",\"qosTargetMs\":{targetMs ?? 10:R}}}"),
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/admin/trainer") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token);
        using var response = await http.SendAsync(request);
        if (!response.IsSuccessStatusCode) throw new InvalidOperationException($"/admin/trainer {body}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    static Task<LoadResult> Load(IPEndPoint target, double qps, double seconds, int batch, int seed) => LoadGenerator.RunAsync(new LoadOptions
    {
        Target = target, Qps = qps, Duration = TimeSpan.FromSeconds(seconds), Warmup = TimeSpan.FromSeconds(0.5),
        EventsPerRequest = batch, FeedbackRate = 0.2, FeedbackDelay = TimeSpan.FromMilliseconds(500), Seed = seed,
    });

    static async Task<string> Scrape(HttpClient http) => await http.GetStringAsync("/metrics");

    static double Value(string metrics, string name) => metrics.Split('\n')
        .Where(l => l.StartsWith(name + "{", StringComparison.Ordinal) || l.StartsWith(name + " ", StringComparison.Ordinal))
        .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));

    static double Samples(string metrics) => Value(metrics, "livedlrm_trainer_samples_total");

    /// <summary>The server's GC pauses between two scrapes (its <c>livedlrm_gc_pause_seconds</c> histogram): how many,
    /// per second, their total per second, and the upper edge of the bucket of the longest.</summary>
    internal readonly record struct GcPauses(double Count, double TotalMs, double MaxMs, double PerS, double MsPerS, Dictionary<double, double> Buckets);

    static GcPauses ServerGcPauses(string metrics, double seconds, GcPauses? before = null)
    {
        var buckets = Buckets(metrics, "livedlrm_gc_pause_seconds_bucket{", null);
        double count = Value(metrics, "livedlrm_gc_pause_seconds_count") - (before?.Count ?? 0);
        double totalMs = 1000 * Value(metrics, "livedlrm_gc_pause_seconds_sum") - (before?.TotalMs ?? 0);
        double maxMs = 0, previous = 0;
        foreach (var le in buckets.Keys.Order())
        {
            double n = buckets[le] - (before?.Buckets.GetValueOrDefault(le) ?? 0);
            if (n > previous) maxMs = double.IsInfinity(le) ? double.PositiveInfinity : le * 1000;
            previous = n;
        }
        return before is null ? new GcPauses(count, totalMs, 0, 0, 0, buckets)
            : new GcPauses(count, totalMs, maxMs, seconds > 0 ? count / seconds : 0, seconds > 0 ? totalMs / seconds : 0, buckets);
    }

    /// <summary>A Prometheus histogram's cumulative buckets by upper edge (+Inf included), optionally of one label.</summary>
    static Dictionary<double, double> Buckets(string text, string prefix, string? label) => text.Split('\n')
        .Where(l => l.StartsWith(prefix, StringComparison.Ordinal) && (label is null || l.Contains(label, StringComparison.Ordinal)))
        .Select(l => (Le: l[(l.IndexOf("le=\"", StringComparison.Ordinal) + 4)..], V: double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture)))
        .ToDictionary(x => x.Le.StartsWith("+Inf", StringComparison.Ordinal) ? double.PositiveInfinity : double.Parse(x.Le[..x.Le.IndexOf('"')], CultureInfo.InvariantCulture), x => x.V);

    /// <summary>The P99 of the latency the QoS controller watches (handler time plus the pool's queueing delay) over
    /// the requests between two scrapes, from its histogram's buckets (the upper edge of the bucket holding the 99th
    /// percentile: at most √2 above the true value).</summary>
    static double ServerP99Ms(string before, string after)
    {
        Dictionary<double, double> Buckets(string text) => text.Split('\n')
            .Where(l => l.StartsWith("livedlrm_qos_request_latency_seconds_bucket{", StringComparison.Ordinal) && l.Contains("api=\"grpc\""))
            .Select(l => (Le: l[(l.IndexOf("le=\"", StringComparison.Ordinal) + 4)..], V: double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture)))
            .ToDictionary(x => x.Le.StartsWith("+Inf", StringComparison.Ordinal) ? double.PositiveInfinity : double.Parse(x.Le[..x.Le.IndexOf('"')], CultureInfo.InvariantCulture), x => x.V);
        var a = Buckets(before);
        var b = Buckets(after);
        var edges = b.Keys.Order().ToList();
        double total = b[double.PositiveInfinity] - a.GetValueOrDefault(double.PositiveInfinity);
        foreach (var le in edges)
            if (b[le] - a.GetValueOrDefault(le) >= 0.99 * total) return double.IsInfinity(le) ? 1000 : le * 1000;
        return 1000;
    }

    /// <summary>The 1, 5 and 15 minute load averages (/proc/loadavg): the figures mean little without them on a shared machine.</summary>
    static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

    static int FreePortPair()
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
            l.Start();
            int port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            try { var n = new System.Net.Sockets.TcpListener(IPAddress.Loopback, port + 1); n.Start(); n.Stop(); return port; }
            catch (System.Net.Sockets.SocketException) { }
        }
        throw new InvalidOperationException("no free pair of loopback ports");
    }

    static double Median(IEnumerable<double> values)
    {
        var v = values.Where(x => !double.IsNaN(x)).Order().ToArray();
        return v.Length == 0 ? double.NaN : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
