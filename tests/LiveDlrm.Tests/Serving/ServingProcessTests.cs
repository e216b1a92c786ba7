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
public class ServingProcessTests
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

    Child StartServer(int port, string adapters, string token)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in new[] { CliDll, "serve", "--model", _model, "--adapters", adapters, "--listen", $"127.0.0.1:{port}", "--qos", "off",
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

    static (int ExitCode, string Output, string Error) RunCli(string args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo("dotnet", $"{CliDll} {args}") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(); Assert.Fail($"livedlrm {args} did not exit within {timeout}"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
