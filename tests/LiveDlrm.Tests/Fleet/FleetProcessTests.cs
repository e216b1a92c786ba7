using System.Diagnostics;
using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Serving.Fleet;
using LiveDlrm.Serving.Node;
using static LiveDlrm.Tests.Serving.ServingTestSupport;

namespace LiveDlrm.Tests.Fleet;

/// <summary><c>livedlrm fleet replica</c> as processes against a real nats-server: one is SIGKILLed mid-stream and
/// restarted from its checkpoint, and both end with the fingerprint of a replica that applied the log in this process;
/// <c>livedlrm fleet status</c> says they agree.</summary>
[NonParallelizable]
internal class FleetProcessTests
{
    const int Batch = 16;
    const string Stream = "PROC", Subject = "livedlrm.examples.proc";

    static string CliDll => Path.Combine(AppContext.BaseDirectory, "livedlrm.dll");

    static Process Replica(string url, string model, string id, string checkpoints, params (string Name, string Value)[] environment) =>
        Replica(url, model, id, checkpoints, Stream, Subject, environment);

    static Process Replica(string url, string model, string id, string checkpoints, string stream, string subject, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        foreach (var a in new[] { CliDll, "fleet", "replica", "--log", url, "--stream", stream, "--subject", subject, "--model", model, "--replica-id", id,
                                  "--checkpoint-dir", checkpoints, "--batch", Batch.ToString(), "--checkpoint-seconds", "0.2" })
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static async Task<FleetStatus?> WaitStatus(IExampleLog log, string replica, Func<FleetStatus, bool> until, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            var s = (await log.ReadStatusesAsync(CancellationToken.None)).FirstOrDefault(x => x.Replica == replica);
            if (s is not null && until(s)) return s;
            await Task.Delay(100);
        }
        return null;
    }

    [Test]
    public async Task AReplicaProcessKilledMidStreamRejoinsWithTheSameAdapters()
    {
        TorchRuntime.EnsureInitialised();
        string root = TempDir("livedlrm-fleet-proc");
        var processes = new List<Process>();
        await using var nats = await NatsServerProcess.StartAsync();
        try
        {
            string model = SaveCheckpoint(Path.Combine(root, "model"), seed: 9);
            string fingerprint = LiveModelNode.BaseFingerprint(model);
            await using var log = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream, Subject = Subject });
            // The same examples on a second stream, for p3 (another ISA level: its status board is its own).
            await using var log3 = await NatsExampleLog.ConnectAsync(nats.Url, new FleetStreamOptions { Stream = Stream + "3", Subject = Subject + "3" });
            var rng = new Random(31);
            async Task<ulong> Publish(int from, int to)
            {
                ulong last = 0;
                for (int i = from; i < to; i++)
                {
                    var e = FleetReplicaTests.Example(i, fingerprint, rng);
                    last = (await log.PublishAsync($"{e.Replica}-{e.RequestId}", LogRecord.Encode(e), CancellationToken.None)).Sequence;
                    await log3.PublishAsync($"{e.Replica}-{e.RequestId}", LogRecord.Encode(e), CancellationToken.None);
                }
                return last;
            }

            processes.Add(Replica(nats.Url, model, "p1", Path.Combine(root, "p1")));
            // p3 runs .NET without AVX-512 and libtorch's own kernels at AVX2; on a CPU without AVX-512 this is the
            // native level.
            processes.Add(Replica(nats.Url, model, "p3", Path.Combine(root, "p3"), Stream + "3", Subject + "3", ("DOTNET_EnableAVX512F", "0"), ("ATEN_CPU_CAPABILITY", "avx2")));
            var p2 = Replica(nats.Url, model, "p2", Path.Combine(root, "p2"));
            processes.Add(p2);
            ulong middle = await Publish(0, 20 * Batch);
            Assert.That(await WaitStatus(log, "p2", s => s.AppliedSequence >= middle / 2, TimeSpan.FromSeconds(90)), Is.Not.Null, "p2 applies the log");
            p2.Kill();   // SIGKILL
            await p2.WaitForExitAsync();
            ulong last = await Publish(20 * Batch, 40 * Batch);
            processes.Add(Replica(nats.Url, model, "p2", Path.Combine(root, "p2")));

            var s1 = await WaitStatus(log, "p1", s => s.AppliedSequence == last, TimeSpan.FromSeconds(90));
            var s2 = await WaitStatus(log, "p2", s => s.AppliedSequence == last, TimeSpan.FromSeconds(90));
            var s3 = await WaitStatus(log3, "p3", s => s.AppliedSequence == last, TimeSpan.FromSeconds(90));
            Assert.That(s1, Is.Not.Null);
            Assert.That(s2, Is.Not.Null);

            // The reference: the same log applied here, in one go.
            using var reference = new FleetReplica(
                LiveModelNode.Load(model, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), 16), model,
                new FleetReplicaOptions { ReplicaId = "reference", BatchSize = Batch },
                p => LiveModelNode.Load(p, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), 16));
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            {
                var entries = new List<LogEntry>();
                await foreach (var e in log.ReadAsync("reference", 1, cts.Token)) { entries.Add(e); if (e.Sequence >= last) break; }
                foreach (var e in entries) reference.Apply(e);
            }
            string expected = reference.Fingerprint().ToString("x16");
            Assert.That(s1!.Fingerprint, Is.EqualTo(expected));
            Assert.That(s2!.Fingerprint, Is.EqualTo(expected), "the replica killed mid-stream rejoined with the same adapters");
            Assert.That(s2.ExamplesApplied, Is.LessThan(40 * Batch), "the restarted process replayed from its checkpoint, not from the start");
            Assert.That(s3, Is.Not.Null);
            Assert.That(s3!.AppliedSequence, Is.EqualTo(last));
            // Another ISA level is not bit-identical (docs/fleet.md, cross-ISA); its divergence stays within the
            // documented bound: every row's effective embedding within 1e-4 of the native replica's.
            var c3 = FleetCheckpoint.Load(Path.Combine(root, "p3"), Stream + "3")!;
            using var other = new FleetReplica(
                LiveModelNode.Load(model, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), 16), model,
                new FleetReplicaOptions { ReplicaId = "other", BatchSize = Batch },
                p => LiveModelNode.Load(p, FleetReplicaOptions.Deterministic(new OnlineTrainerOptions(), Batch), 16));
            other.Restore(c3);
            Assert.That(other.Fingerprint().ToString("x16"), Is.EqualTo(s3.Fingerprint));
            double maxDelta = 0;
            var config = reference.Node.Model.Config;
            var x = new float[config.Dim]; var y = new float[config.Dim];
            for (int t = 0; t < config.Tables.Count; t++)
            {
                if (reference.Node.Adapters[t] is not { } ra || other.Node.Adapters[t] is not { } oa) continue;   // a table without an adapter
                for (long row = 0; row < config.Tables[t].Rows; row++)
                {
                    ra.ReadEffectiveRow(row, x);
                    oa.ReadEffectiveRow(row, y);
                    for (int d = 0; d < x.Length; d++) maxDelta = Math.Max(maxDelta, Math.Abs((double)x[d] - y[d]));
                }
            }
            TestContext.Out.WriteLine($"p3 (AVX2) vs native: fingerprints {(s3.Fingerprint == expected ? "equal" : "differ")}, max |Δ| effective embedding {maxDelta:G3}");
            Assert.That(maxDelta, Is.LessThan(1e-4));

            var status = Process.Start(new ProcessStartInfo("dotnet") { ArgumentList = { CliDll, "fleet", "status", "--log", nats.Url, "--stream", Stream }, RedirectStandardOutput = true, UseShellExecute = false })!;
            string text = await status.StandardOutput.ReadToEndAsync();
            await status.WaitForExitAsync();
            Assert.That(status.ExitCode, Is.Zero, text);
            Assert.That(text, Does.Contain($"agree: 2 replica(s) at sequence {last} with fingerprint {expected}"));
        }
        finally
        {
            foreach (var p in processes) { try { if (!p.HasExited) p.Kill(); p.WaitForExit(10_000); } catch (InvalidOperationException) { } p.Dispose(); }
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }
}
