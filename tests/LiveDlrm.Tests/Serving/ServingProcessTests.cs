using System.Diagnostics;
using System.Net;
using LiveDlrm.Runtime;
using LiveDlrm.Serving;
using LiveDlrm.Harness;
using LiveDlrm.Online.Persistence;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Serving;

/// <summary>The server on real loopback sockets: the load generator against it for a few seconds, and a
/// <c>livedlrm serve</c> child process killed with SIGKILL between two adapter checkpoints.</summary>
internal class ServingProcessTests
{
    string _root = "", _model = "";
    const string Token = "test-token-0123456789abcdef";

    [OneTimeSetUp]
    public void Model()
    {
        TorchRuntime.EnsureInitialised();
        _root = TempDir("livedlrm-serve-proc");
        _model = SaveCheckpoint(Path.Combine(_root, "model"), seed: 3);
    }

    [OneTimeTearDown]
    public void Cleanup() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    [Test]
    public async Task LoadGeneratorRunsAgainstARealSocketServer()
    {
        int port = FreePortPair();
        var log = new List<string>();
        var host = ServingHost.Create(Options(_model, o => { o.Listen = $"127.0.0.1:{port}"; o.LabelWindow = TimeSpan.FromSeconds(1); }), new ListLogger(log));
        await host.App.StartAsync();
        try
        {
            var result = await LoadGenerator.RunAsync(new LoadOptions
            {
                Target = new IPEndPoint(IPAddress.Loopback, port),
                Qps = 40,
                Duration = TimeSpan.FromSeconds(2),
                Warmup = TimeSpan.FromSeconds(0.5),
                EventsPerRequest = 8,
                FeedbackRate = 0.5,
                FeedbackDelay = TimeSpan.FromMilliseconds(200),
                Drain = TimeSpan.FromSeconds(10),
            });
            Assert.That(result.Errors, Is.Zero, result.Summary());
            Assert.That(result.Dropped, Is.Zero, result.Summary());
            Assert.That(result.Requests, Is.GreaterThan(20).And.EqualTo(result.Sent), result.Summary());
            Assert.That(result.Events, Is.EqualTo(result.Requests * 8));
            Assert.That(result.P50Ms, Is.GreaterThan(0).And.LessThanOrEqualTo(result.P99Ms));
            Assert.That(result.P99Ms, Is.LessThanOrEqualTo(result.MaxMs));
            Assert.That(result.FeedbackSent, Is.GreaterThan(0));
            Assert.That(result.FeedbackJoined, Is.EqualTo(result.FeedbackSent), result.Summary());
            Assert.That(LoadGenerator.ToJson(result), Does.Contain("\"p99Ms\""));
        }
        finally
        {
            await host.App.StopAsync();
            await host.DisposeAsync();
        }
        Assert.ThrowsAsync<ArgumentException>(() => LoadGenerator.RunAsync(new LoadOptions { Target = new IPEndPoint(IPAddress.Parse("10.1.2.3"), port) }),
            "only loopback targets");
    }

    /// <summary>Real events replayed from a TSV file over real sockets: every request carries the file's events in
    /// order and each label sent back is the event's own, so every one joins; a file whose features do not fit the
    /// node's model is refused before anything is sent.</summary>
    [Test]
    public async Task LoadGeneratorReplaysATsvFileWithItsLabels()
    {
        string dir = Path.Combine(_root, "tsv");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "events.schema.json"), """
            { "columns": ["label", "d1", "d2", "d3", "user", "item", "device"], "label": "label",
              "dense": [ { "name": "d1" }, { "name": "d2" }, { "name": "d3" } ],
              "sparse": [ { "name": "user", "rows": 20000, "mapping": "integer" },
                          { "name": "item", "rows": 5000, "mapping": "integer" },
                          { "name": "device", "rows": 10, "mapping": "integer" } ] }
            """);
        var rng = new Random(5);
        File.WriteAllLines(Path.Combine(dir, "events.tsv"), Enumerable.Range(0, 200).Select(i =>
            $"{(i % 4 == 0 ? 1 : 0)}\t{rng.Next(10)}\t{rng.Next(10)}\t{rng.Next(10)}\t{rng.Next(20000)}\t{rng.Next(5000)}\t{rng.Next(10)}"));
        var file = new LiveDlrm.Data.DataSourceOptions { Data = Path.Combine(dir, "events.tsv") };

        int port = FreePortPair();
        var log = new List<string>();
        var host = ServingHost.Create(Options(_model, o => o.Listen = $"127.0.0.1:{port}"), new ListLogger(log));
        await host.App.StartAsync();
        try
        {
            var result = await LoadGenerator.RunAsync(new LoadOptions
            {
                Target = new IPEndPoint(IPAddress.Loopback, port),
                Qps = 40, Duration = TimeSpan.FromSeconds(1.5), Warmup = TimeSpan.FromSeconds(0.2), EventsPerRequest = 8,
                FeedbackRate = 1, FeedbackDelay = TimeSpan.FromMilliseconds(100), Drain = TimeSpan.FromSeconds(10),
                Source = () => file.Open(),
            });
            Assert.That(result.Errors, Is.Zero, result.Summary());
            Assert.That(result.Events, Is.EqualTo(result.Requests * 8), result.Summary());
            Assert.That(result.FeedbackSent, Is.GreaterThan(0).And.EqualTo(result.FeedbackJoined), result.Summary());
            // The requests are the file's events in order, and the labels sent back are theirs (every 4th is a click).
            var shape = new LoadGenerator.ModelShape("x", 3, [new("users", 20_000), new("items", 5_000), new("device", 10)]);
            var (requests, labels) = LoadGenerator.ReadRequests(shape, new LoadOptions
            {
                Target = new IPEndPoint(IPAddress.Loopback, port), Qps = 1000, Duration = TimeSpan.FromSeconds(10), EventsPerRequest = 8, Source = () => file.Open(),
            });
            Assert.That(requests, Has.Length.EqualTo(25), "200 events, 8 per request, the whole file once");
            Assert.That(labels.SelectMany(l => l), Is.EqualTo(Enumerable.Range(0, 200).Select(i => i % 4 == 0 ? 1f : 0f)));
            Assert.That(requests[0].Events[0].Sparse.Select(b => b.Ids.Single()), Is.EqualTo(FirstLineIds(Path.Combine(dir, "events.tsv"))));

            var wrongSchema = Path.Combine(dir, "two.schema.json");
            File.WriteAllText(wrongSchema, """
                { "columns": ["label", "d1", "user"], "label": "label", "dense": [ { "name": "d1" } ],
                  "sparse": [ { "name": "user", "rows": 20000, "mapping": "integer" } ] }
                """);
            var wrong = new LiveDlrm.Data.DataSourceOptions { Data = Path.Combine(dir, "events.tsv"), SchemaPath = wrongSchema };
            var e = Assert.ThrowsAsync<LiveDlrm.Data.DataFormatException>(() => LoadGenerator.RunAsync(new LoadOptions
            {
                Target = new IPEndPoint(IPAddress.Loopback, port), Qps = 10, Duration = TimeSpan.FromSeconds(1), Source = () => wrong.Open(),
            }))!;
            Assert.That(e.Message, Does.StartWith("--data: the events have 1 dense and 1 sparse features, the node's model 3 and 3"));
        }
        finally
        {
            await host.App.StopAsync();
            await host.DisposeAsync();
        }
    }

    static long[] FirstLineIds(string tsv) => File.ReadLines(tsv).First().Split('\t')[4..].Select(long.Parse).ToArray();

    /// <summary>SIGHUP re-reads <c>--model</c>: after the checkpoint at that path is replaced, the signal makes the
    /// running process load it and switch, without a restart and without failing a request after it.</summary>
    [Test]
    public async Task SighupReloadsTheBaseModelFromItsPath()
    {
        string model = SaveCheckpoint(Path.Combine(_root, "hup-model"), seed: 3);
        string next = SaveCheckpoint(Path.Combine(_root, "hup-next"), seed: 4);
        string token = TokenFile(_root, Token);
        int port = FreePortPair();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        var child = StartServer(port, Path.Combine(_root, "hup-adapters"), token, model, defaultHangup: true);
        try
        {
            Assert.That(await WaitUntilAsync(() => Ready(http), 60), Is.True, "server became ready: " + child.Output());
            string before = await Fingerprint(http);
            string expected = LiveDlrm.Serving.Node.LiveModelNode.BaseFingerprint(next);
            Assert.That(expected, Is.Not.EqualTo(before));
            Directory.Move(model, model + ".old");
            Directory.Move(next, model);
            child.Signal("HUP");
            Assert.That(await WaitUntilAsync(async () => await Fingerprint(http) == expected, 60), Is.True, "the new base serves: " + child.Output());
            var scored = await ScoreAsync(http, Body([Event(7)]));
            Assert.That(scored.Model, Is.EqualTo(expected));
            // The switch is visible before the reload logs its end (the old model is freed first).
            Assert.That(await WaitUntilAsync(() => Task.FromResult(child.Output().Contains("reloaded: now serving")), 30), Is.True, child.Output());
            Assert.That(child.Output(), Does.Contain("SIGHUP: reloading"));
            Assert.That(child.Terminate(TimeSpan.FromSeconds(30)), Is.Zero, "still a graceful exit after the reload\n" + child.Output());
        }
        finally { child.Kill(); }
    }

    static async Task<string> Fingerprint(HttpClient http)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync("/v1/model"));
        return doc.RootElement.GetProperty("fingerprint").GetString()!;
    }

    [Test]
    public async Task AdaptersSurviveSigkillAsTheLastCheckpointBitForBit()
    {
        string adapters = Path.Combine(_root, "adapters");
        string token = TokenFile(_root, Token);
        int port = FreePortPair();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };

        var first = StartServer(port, adapters, token);
        ulong liveBeforeKill;
        try
        {
            Assert.That(await WaitUntilAsync(() => Ready(http), 60), Is.True, "server 1 became ready: " + first.Output());
            // Train, and wait for a checkpoint that holds the training.
            await TrainAsync(http, 0);
            double saved = Sum(await ScrapeAsync(http), "livedlrm_adapter_checkpoints_total", "result=\"saved\"");
            Assert.That(await WaitUntilAsync(async () => Sum(await ScrapeAsync(http), "livedlrm_adapter_checkpoints_total", "result=\"saved\"") > saved, 30), Is.True);
            // Train more after that checkpoint, then kill in the middle of the interval (retried if a checkpoint
            // happened meanwhile: the machine may be slow).
            int round = 1;
            while (true)
            {
                saved = Sum(await ScrapeAsync(http), "livedlrm_adapter_checkpoints_total", "result=\"saved\"");
                await TrainAsync(http, round++);
                liveBeforeKill = Convert.ToUInt64((await AdminJsonAsync<AdapterState>(http, HttpMethod.Get, "/admin/adapters", Token)).State, 16);
                if (Sum(await ScrapeAsync(http), "livedlrm_adapter_checkpoints_total", "result=\"saved\"") == saved || round > 4) break;
            }
        }
        finally { first.Kill(); }
        var lastSaved = new AdapterStore(adapters).ReadVerified();
        Assert.That(lastSaved, Is.Not.Null);
        ulong savedState = AdapterStore.Fingerprint(lastSaved!);
        Assert.That(savedState, Is.Not.EqualTo(liveBeforeKill), "the kill came between checkpoints: the training after the last one is lost, no more");
        Assert.That(Directory.GetFiles(adapters).Select(Path.GetFileName), Is.EqualTo(new[] { AdapterStore.FileName }));

        var second = StartServer(port, adapters, token);
        try
        {
            Assert.That(await WaitUntilAsync(() => Ready(http), 60), Is.True, "server 2 became ready: " + second.Output());
            var restored = await AdminJsonAsync<AdapterState>(http, HttpMethod.Get, "/admin/adapters", Token);
            Assert.That(Convert.ToUInt64(restored.State, 16), Is.EqualTo(savedState), "restored adapters equal the last saved ones bit for bit");
            Assert.That(Sum(await ScrapeAsync(http), "livedlrm_adapter_rows"), Is.GreaterThan(0), "and they hold trained rows");
            Assert.That(second.Output(), Does.Contain("adapters: restored from"));
            Assert.That(second.Terminate(TimeSpan.FromSeconds(30)), Is.Zero, "SIGTERM: graceful drain, exit code 0\n" + second.Output());
            Assert.That(second.Output(), Does.Contain("adapters: saved to"));
        }
        finally { second.Kill(); }

        // A different base model refuses these adapters with one line, unless told to reset them.
        string other = SaveCheckpoint(Path.Combine(_root, "other"), seed: 4);
        var refused = RunCli($"serve --model {other} --adapters {adapters} --listen 127.0.0.1:{port} --qos off", TimeSpan.FromSeconds(60));
        Assert.That(refused.ExitCode, Is.EqualTo(2), refused.Output + refused.Error);
        // Start-up log lines come first on stderr (the logger's stream); the error is one line after them, no trace.
        var errorLines = refused.Error.Trim().Split('\n');
        Assert.That(errorLines[^1], Does.StartWith("livedlrm serve: ").And.Contain("--adapters-reset"), refused.Error);
        Assert.That(errorLines.Count(l => l.StartsWith("livedlrm serve: ", StringComparison.Ordinal)), Is.EqualTo(1), refused.Error);
        Assert.That(refused.Error, Does.Not.Contain("   at "), "no stack trace");
    }

    async Task TrainAsync(HttpClient http, int round)
    {
        var scored = await ScoreAsync(http, Body(Enumerable.Range(0, 32).Select(i => Event(1000 * round + i)).ToArray()));
        double before = Sum(await ScrapeAsync(http), "livedlrm_trainer_samples_total");
        await FeedbackAsync(http, scored.RequestIds.Select((id, i) => (id, (float)(i % 2))));
        Assert.That(await WaitUntilAsync(async () => Sum(await ScrapeAsync(http), "livedlrm_trainer_samples_total") >= before + 32, 30), Is.True);
    }

    static async Task<bool> Ready(HttpClient http)
    {
        try { using var r = await http.GetAsync("/readyz"); return r.StatusCode == HttpStatusCode.OK; }
        catch (HttpRequestException) { return false; }
    }

    sealed class Child(Process process, System.Text.StringBuilder output)
    {
        public string Output() { lock (output) return output.ToString(); }
        /// <summary>SIGKILL: no drain, no final save.</summary>
        public void Kill()
        {
            try
            {
                if (!process.HasExited) process.Kill(entireProcessTree: false);
                process.WaitForExit(10_000);
            }
            catch (InvalidOperationException) { }   // already disposed
            process.Dispose();
        }

        public void Signal(string name)
        {
            using var kill = Process.Start("kill", ["-" + name, process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            kill.WaitForExit();
        }

        /// <summary>SIGTERM, then the exit code (or -1 if it did not exit in time).</summary>
        public int Terminate(TimeSpan timeout)
        {
            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
            if (!process.WaitForExit(timeout)) return -1;
            process.WaitForExit();   // the output readers drain
            return process.ExitCode;
        }
    }

    static string CliDll => Path.Combine(AppContext.BaseDirectory, "livedlrm.dll");

    /// <summary>A <c>livedlrm serve</c> child. <paramref name="defaultHangup"/>: SIGHUP reset to its default
    /// disposition first (coreutils env), since a runner started under nohup passes SIGHUP down ignored and the .NET
    /// runtime leaves an ignored SIGHUP ignored.</summary>
    Child StartServer(int port, string adapters, string token, string? model = null, bool defaultHangup = false)
    {
        var psi = new ProcessStartInfo(defaultHangup ? "env" : "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        if (defaultHangup) { psi.ArgumentList.Add("--default-signal=HUP"); psi.ArgumentList.Add("dotnet"); }
        foreach (var a in new[] { CliDll, "serve", "--model", model ?? _model, "--adapters", adapters, "--listen", $"127.0.0.1:{port}", "--qos", "off",
                                  "--checkpoint-interval", "4s", "--trainer-batch", "8", "--admin-token-file", token })
            psi.ArgumentList.Add(a);
        var output = new System.Text.StringBuilder();
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return new Child(p, output);
    }

    internal static (int ExitCode, string Output, string Error) RunCli(string args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo("dotnet", $"{CliDll} {args}") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(); Assert.Fail($"livedlrm {args} did not exit within {timeout}"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
