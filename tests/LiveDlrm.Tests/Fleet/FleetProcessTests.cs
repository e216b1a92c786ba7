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

    static Process Replica(string url, string model, string id, string checkpoints)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { CliDll, "fleet", "replica", "--log", url, "--stream", Stream, "--subject", Subject, "--model", model, "--replica-id", id,
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
            var rng = new Random(31);
            async Task<ulong> Publish(int from, int to)
            {
                ulong last = 0;
                for (int i = from; i < to; i++)
                {
                    var e = FleetReplicaTests.Example(i, fingerprint, rng);
                    last = (await log.PublishAsync($"{e.Replica}-{e.RequestId}", LogRecord.Encode(e), CancellationToken.None)).Sequence;
                }
                return last;
            }

            processes.Add(Replica(nats.Url, model, "p1", Path.Combine(root, "p1")));
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
