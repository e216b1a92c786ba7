// A minimal host of LiveDlrm (walked through in docs/embedding.md): load a model, score requests, feed back their
// labels, let the colocated trainer adapt the embedding tables, save the adapters and restore them into a second
// model. The traffic is made up: 1 000 active items spread over a 100 000-row item table, 30 % of them "hot"
// (clicked 80 % of the time), the rest clicked 10 % of the time — something a fresh model does not know and the
// adapters can learn.
//
//   dotnet run -c Release [-- --model PATH] [--rounds N] [--state DIR]
//
// PATH: a LiveDlrm checkpoint directory or a PyTorch DLRM state_dict file with 4 dense features and two tables
// (the PyTorch import names them emb_0, emb_1); without it a freshly initialised model is written to a temporary
// directory first.
using System.Diagnostics.Metrics;
using LiveDlrm.Data;
using LiveDlrm.Hosting;

string? modelPath = null, stateDir = null;
int rounds = 40;
for (int i = 0; i < args.Length; i++)
{
    string value = i + 1 < args.Length ? args[i + 1] : throw Usage($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--model": modelPath = value; break;
        case "--state": stateDir = value; break;
        case "--rounds": rounds = int.TryParse(value, out int r) && r >= 10 ? r : throw Usage("--rounds must be an integer ≥ 10"); break;
        default: throw Usage($"unknown option {args[i]}");
    }
    i++;
}

var scratch = Directory.CreateTempSubdirectory("minimalhost-");
try
{
    if (modelPath is null)
    {
        // 1. A model to serve. A real host loads the checkpoint its training pipeline wrote.
        modelPath = Path.Combine(scratch.FullName, "model");
        HostedModel.WriteInitialCheckpoint(modelPath,
            new ModelShape(DenseFeatures: 4, Tables: [new TableShape("user", 50_000), new TableShape("item", 100_000)],
                           EmbeddingDim: 16, BottomMlp: [32, 16], TopMlp: [32, 1]), seed: 7);
    }
    stateDir ??= Path.Combine(scratch.FullName, "state");

    // 2. Load it. Options are the defaults but two: a trainer step every 128 labels, and a larger adapter step than
    //    the default (tuned for a trained base) because this base knows nothing yet.
    var options = new HostedModelOptions { TrainerBatchSize = 128, AdapterLearningRate = 0.3f };
    using var model = HostedModel.Load(modelPath, options);
    Console.WriteLine($"model: {modelPath} ({model.Layout.DenseCount} dense, {string.Join(", ", model.Layout.Sparse.Select(s => $"{s.Name} {s.Rows} rows"))})");
    Console.WriteLine($"torch: libLibTorchSharp.so loaded from {LoadedLibrary("libLibTorchSharp.so") ?? "(not loaded)"}");

    // 3. Observe it: the engine publishes through System.Diagnostics.Metrics; an exporter subscribes by meter name.
    long instruments = 0;
    using var listener = new MeterListener();
    listener.InstrumentPublished = (instrument, l) =>
    {
        if (HostedModel.MeterNames.Contains(instrument.Meter.Name)) Interlocked.Increment(ref instruments);
    };
    listener.Start();
    Console.WriteLine($"meters: {string.Join(", ", HostedModel.MeterNames)} ({Interlocked.Read(ref instruments)} instruments)");

    // 4. Serve, and train on the labels as they come back.
    model.StartTrainer(new TrainerQosOptions { Mode = TrainerQosMode.Throttle, TargetP99 = TimeSpan.FromMilliseconds(20) });
    var traffic = new Traffic(seed: 1);
    var batch = model.CreateBatch(capacity: 512);
    var scores = new float[batch.Capacity];
    var labels = new float[batch.Capacity];
    double firstLoss = 0, lastLoss = 0;
    int quarter = rounds / 4;
    long requestId = 0;
    for (int round = 1; round <= rounds; round++)
    {
        traffic.Fill(batch, labels, ref requestId);
        model.Score(batch, scores);                       // the scores the host would rank by
        double loss = LogLoss(scores.AsSpan(0, batch.Count), labels);
        for (int i = 0; i < batch.Count; i++)              // later, the clicks (or not) arrive
            model.Feedback(batch.RequestIds[i], labels[i]);
        model.WaitForTrainer();                            // a real host never waits; the sample does to be repeatable
        if (round <= quarter) firstLoss += loss / quarter;
        if (round > rounds - quarter) lastLoss += loss / quarter;
        if (round % 10 == 0 || round == 1)
        {
            var s = model.Status;
            Console.WriteLine($"round {round,3}: logloss {loss:F4}  trained {s.SamplesTrained,6}  adapted rows {s.AdaptedRows,5}  adapter memory {s.AdapterBytes / 1024.0:F1} of {s.AdapterBudgetBytes / 1024.0:F1} KiB");
        }
    }
    Console.WriteLine($"learned: logloss {firstLoss:F4} in the first {quarter} rounds, {lastLoss:F4} in the last {quarter} " +
                      "(always predicting the click rate: 0.619; knowing every item's rate: 0.378)");

    // 5. Keep what was learned: save the adapters, restore them into a second model of the same base, and check
    //    that both score alike.
    string file = model.SaveAdapters(stateDir);
    using var restored = HostedModel.Load(modelPath, options);
    bool found = restored.RestoreAdapters(stateDir);
    traffic.Fill(batch, labels, ref requestId);
    var again = new float[batch.Capacity];
    model.Score(batch, scores);
    restored.Score(batch, again);
    bool equal = found && scores.AsSpan(0, batch.Count).SequenceEqual(again.AsSpan(0, batch.Count));
    Console.WriteLine($"adapters: saved to {file}; restored into a second model: scores {(equal ? "identical" : "DIFFERENT")}");

    model.StopTrainer();
    var status = model.Status;
    Console.WriteLine(FormattableString.Invariant(
        $"result: logloss-first={firstLoss:F4} logloss-last={lastLoss:F4} trained={status.SamplesTrained} adapted-rows={status.AdaptedRows} restored-identical={equal.ToString().ToLowerInvariant()} instruments={Interlocked.Read(ref instruments)}"));
    return 0;
}
catch (HostedModelException e)
{
    Console.Error.WriteLine($"minimalhost: {e.Message}");
    return 2;
}
finally
{
    scratch.Delete(recursive: true);
}

static double LogLoss(ReadOnlySpan<float> p, ReadOnlySpan<float> y)
{
    double sum = 0;
    for (int i = 0; i < p.Length; i++)
    {
        double q = Math.Clamp(p[i], 1e-7, 1 - 1e-7);
        sum -= y[i] * Math.Log(q) + (1 - y[i]) * Math.Log(1 - q);
    }
    return sum / p.Length;
}

// Where the process mapped a shared library from (on Debian 12 it must be the patched copy in this app's output).
static string? LoadedLibrary(string name) =>
    File.ReadLines("/proc/self/maps").Where(l => l.EndsWith("/" + name, StringComparison.Ordinal))
        .Select(l => l[l.IndexOf('/')..]).FirstOrDefault();

static Exception Usage(string message)
{
    Console.Error.WriteLine($"minimalhost: {message}");
    Environment.Exit(2);
    return new InvalidOperationException("unreachable");
}

/// <summary>The made-up traffic: users uniform over their table, items from a fixed active set.</summary>
sealed class Traffic(int seed)
{
    readonly Random _random = new(seed);
    readonly long[] _items = Enumerable.Range(0, 1000).Select(i => (long)i * 97 + 13).ToArray();

    public void Fill(EventBatch batch, Span<float> labels, ref long requestId)
    {
        batch.Clear();
        while (!batch.IsFull)
        {
            int k = _random.Next(_items.Length);
            bool hot = k % 10 < 3;
            float label = _random.NextDouble() < (hot ? 0.8 : 0.1) ? 1f : 0f;
            int row = batch.AddEvent(label: 0f, timestamp: 0, requestId: ++requestId);
            var dense = batch.DenseRowForWrite(row);
            for (int d = 0; d < dense.Length; d++) dense[d] = (float)_random.NextDouble();
            batch.AddIndex(0, _random.NextInt64(batch.Layout.Sparse[0].Rows));
            batch.AddIndex(1, _items[k] % batch.Layout.Sparse[1].Rows);
            labels[row] = label;
        }
    }
}
