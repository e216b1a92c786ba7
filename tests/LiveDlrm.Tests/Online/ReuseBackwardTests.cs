using LiveDlrm.Data;
using LiveDlrm.Metrics;
using LiveDlrm.Model;
using LiveDlrm.Online;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Tests.Online;

internal class ReuseBackwardTests
{
    /// <summary>Serves <paramref name="batch"/> and takes every request back out of the ring, labelled.</summary>
    static List<ServedEvent> ServeAndTake(LiveModel server, EventBatch batch, float[]? scores = null)
    {
        server.Serve(batch, scores ?? new float[batch.Count]);
        var served = new List<ServedEvent>();
        for (int i = 0; i < batch.Count; i++)
        {
            Assert.That(server.Ring.TryTake(batch.RequestIds[i], out var s), Is.True);
            s.Label = batch.Labels[i];
            served.Add(s);
        }
        return served;
    }

    /// <summary>The autograd oracle, written independently of the trainer: the model's own forward from the pooled
    /// embeddings (plus h·ΔW + Δb when a last-layer update is given), mean BCE-with-logits, backward.</summary>
    static (double Loss, float[] GradPooled, float[] GradLastW, float GradLastB) Autograd(DlrmModel model, EventBatch batch, LastLayerAdapter.Snapshot? delta)
    {
        using var scope = NewDisposeScope();
        int b = batch.Count, tables = model.Tables.Count, d = model.Config.Dim;
        var pooledData = new float[tables * b * d];
        model.Pool(batch, pooledData);
        var pooled = tensor(pooledData).reshape(tables, b, d).requires_grad_(true);
        var dense = tensor(batch.Dense.ToArray()).reshape(b, model.Config.DenseFeatures);
        var logits = model.Dense.ForwardKeepingActivations(dense, pooled, out _, out var hidden, delta: null);
        Tensor? dw = null, db = null;
        if (delta is not null)
        {
            dw = tensor(delta.Weight.ToArray()).requires_grad_(true);
            db = tensor(new[] { delta.Bias }).requires_grad_(true);
            logits = logits + hidden[^1].matmul(dw) + db;
        }
        var loss = nn.functional.binary_cross_entropy_with_logits(logits, tensor(batch.Labels.ToArray()));
        loss.backward();
        return (loss.item<float>(), pooled.grad!.data<float>().ToArray(),
                dw?.grad!.data<float>().ToArray() ?? [], db?.grad!.data<float>().ToArray()[0] ?? 0f);
    }

    static double RelativeError(float[] actual, float[] expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        Assert.That(maxRef, Is.GreaterThan(0), "the reference gradient is all zero: the comparison would prove nothing");
        return maxDiff / maxRef;
    }

    [TestCase(false, false, false)]
    [TestCase(true, false, false)]
    [TestCase(false, true, false)]
    [TestCase(true, true, false)]
    [TestCase(false, true, true)]
    [TestCase(true, false, true)]
    public void ReuseBackwardGivesTheAutogradGradients(bool selfInteraction, bool withLastLayerDelta, bool idOnly)
    {
        var options = OnlineTestModel.Options() with { AdaptLastLayer = withLastLayerDelta };
        using var m = new OnlineTestModel(options, seed: 11, config: OnlineTestModel.DeepConfig(selfInteraction, idOnly));
        // All tables' gradients here; the trainer's own backward computes only the adapted tables' (checked below).
        var backward = new FrozenDenseBackward(m.Model.Dense);
        if (withLastLayerDelta)
        {
            // A nonzero ΔW, Δb so the last layer's effective weights differ from the frozen ones.
            var g = Enumerable.Range(0, backward.LastLayerInputs).Select(k => (k % 3 - 1) * 0.5f).ToArray();
            Assert.That(m.Trainer.LastLayer!.Apply(g, 0.3f), Is.True);
        }
        var server = m.Live;
        var batch = OnlineTestModel.Batch(96, 21, dense: idOnly ? 0 : 3);
        var served = ServeAndTake(server, batch);
        Assert.That(served.All(s => s.Activations is { Length: > 0 } && s.Pooled is not null), Is.True, "the serving forward was not kept");

        var delta = m.Trainer.LastLayer?.Current;
        var gradPooled = new float[3 * batch.Count * 8];
        var gradW = new float[backward.LastLayerInputs];
        double loss = backward.Backward(served, delta, gradPooled, gradW, out float gradB);
        var reference = Autograd(m.Model, batch, delta);

        Assert.That(loss, Is.EqualTo(reference.Loss).Within(1e-5 * Math.Abs(reference.Loss)));
        Assert.That(RelativeError(gradPooled, reference.GradPooled), Is.LessThanOrEqualTo(1e-5));
        // Some hidden units must be off for the ReLU masks to have been exercised.
        Assert.That(served.SelectMany(s => s.Activations!.Skip(idOnly ? 0 : 8)).Count(v => v == 0), Is.GreaterThan(0));
        // The trainer's backward (adapted tables only: "tiny" has none) gives the same for them and zero for "tiny".
        var trainerGrad = new float[gradPooled.Length];
        m.Trainer.ReuseBackward!.Backward(served, delta, trainerGrad, new float[backward.LastLayerInputs], out _);
        int perTable = batch.Count * 8;
        Assert.That(trainerGrad.AsSpan(0, 2 * perTable).ToArray(), Is.EqualTo(gradPooled.AsSpan(0, 2 * perTable).ToArray()).Within(1e-6f));
        Assert.That(trainerGrad.AsSpan(2 * perTable).ToArray().All(g => g == 0), Is.True);
        Assert.That(gradPooled.AsSpan(2 * perTable).ToArray().Any(g => g != 0), Is.True);
        if (withLastLayerDelta)
        {
            Assert.That(RelativeError(gradW, reference.GradLastW), Is.LessThanOrEqualTo(1e-5));
            Assert.That(gradB, Is.EqualTo(reference.GradLastB).Within(1e-5 * Math.Abs(reference.GradLastB)));
        }
    }

    [Test]
    public void TrainerStepWithReuseEqualsTheAutogradReferenceStep()
    {
        // Same served events, one step each way (C# backward vs --no-reuse autograd with fresh pooling): same adapters.
        var batch = OnlineTestModel.Batch(48, 5);
        (float[] Rows, float[] LastW) Run(bool reuse)
        {
            using var m = new OnlineTestModel(OnlineTestModel.Options(reuse: reuse) with { AdaptLastLayer = true }, config: OnlineTestModel.DeepConfig());
            var server = m.Live;
            Assert.That(m.Trainer.TrainOn(ServeAndTake(server, batch)), Is.True);
            var rows = new List<float>();
            var row = new float[8];
            for (long r = 0; r < 40; r++) { m.Adapters[0]!.ReadEffectiveRow(r, row); rows.AddRange(row); }
            return (rows.ToArray(), m.Trainer.LastLayer!.Current.Weight.ToArray());
        }
        var withReuse = Run(true);
        var reference = Run(false);
        Assert.That(withReuse.Rows, Is.EqualTo(reference.Rows).Within(1e-5f));
        Assert.That(withReuse.LastW, Is.EqualTo(reference.LastW).Within(1e-5f));
        Assert.That(withReuse.LastW.Any(w => w != 0), Is.True);
    }

    [Test]
    public void LastLayerUpdateLowersTheLossOnAFixedBatch()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options() with { AdaptLastLayer = true, LastLayerLearningRate = 0.05f }, config: OnlineTestModel.DeepConfig());
        var server = m.Live;
        var batch = OnlineTestModel.Batch(128, 8);
        var served = ServeAndTake(server, batch);
        // 80 % clicks: the base model (~50 %) is miscalibrated here, which the last layer alone can correct.
        for (int i = 0; i < served.Count; i++) served[i].Label = i % 5 == 0 ? 0f : 1f;
        var backward = m.Trainer.ReuseBackward!;
        var layer = m.Trainer.LastLayer!;
        var gradPooled = new float[3 * batch.Count * 8];
        var gradW = new float[backward.LastLayerInputs];
        // Only the last layer learns here (the table adapters are not stepped), so the loss change is its own.
        double first = backward.Backward(served, layer.Current, gradPooled, gradW, out float gradB), loss = first;
        for (int step = 0; step < 100; step++)
        {
            Assert.That(layer.Apply(gradW, gradB), Is.True);
            loss = backward.Backward(served, layer.Current, gradPooled, gradW, out gradB);
        }
        Assert.That(loss, Is.LessThan(first - 0.1), $"loss {first:F4} → {loss:F4}");
        Assert.That(layer.Current.Version, Is.EqualTo(100));
    }

    [Test]
    public void ServingSeesTheLastLayerUpdate()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options() with { AdaptLastLayer = true, LastLayerLearningRate = 0.5f }, config: OnlineTestModel.DeepConfig());
        var server = m.Live;
        var batch = OnlineTestModel.Batch(32, 9);
        var before = new float[batch.Count];
        server.Serve(batch, before);
        Assert.That(before, Is.EqualTo(m.Model.Predict(batch)).Within(1e-6f), "a zero update must serve the base model");

        var layer = m.Trainer.LastLayer!;
        var g = Enumerable.Range(0, layer.Inputs).Select(k => k % 2 == 0 ? 1f : -1f).ToArray();
        Assert.That(layer.Apply(g, -1f), Is.True);
        var after = new float[batch.Count];
        for (int i = 0; i < batch.Count; i++) batch.SetRequestId(i, 1000 + i);
        server.Serve(batch, after);

        // Expected: σ(base logit + h·ΔW + Δb) from the model's own forward.
        using var scope = NewDisposeScope();
        var pooledData = new float[3 * batch.Count * 8];
        m.Model.Pool(batch, pooledData);
        using var noGrad = no_grad();
        var logits = m.Model.Dense.ForwardKeepingActivations(tensor(batch.Dense.ToArray()).reshape(batch.Count, 3),
            tensor(pooledData).reshape(3, batch.Count, 8), out _, out var hidden, delta: null);
        var delta = layer.Current;
        var expected = (logits + hidden[^1].matmul(tensor(delta.Weight.ToArray())) + delta.Bias).sigmoid().data<float>().ToArray();
        Assert.That(after, Is.EqualTo(expected).Within(1e-6f));
        Assert.That(after.Zip(before).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-3f), "the update did not reach serving");
    }

    [Test]
    public void NonFiniteLastLayerUpdateIsRejectedAndNothingPublished()
    {
        var layer = new LastLayerAdapter(4, 0.1f);
        Assert.That(layer.Apply([1f, 2f, 3f, 4f], 1f), Is.True);
        var published = layer.Current;
        Assert.That(layer.Apply([1f, float.NaN, 3f, 4f], 1f), Is.False);
        Assert.That(layer.Apply([1f, 2f, 3f, 4f], float.PositiveInfinity), Is.False);
        Assert.That(layer.Apply([1f, 2f, 3e30f, 4f], 1f), Is.False, "an overflowing accumulator must be refused");
        Assert.That(layer.RejectedSteps, Is.EqualTo(3));
        Assert.That(layer.Current, Is.SameAs(published));
        Assert.That(layer.Current.Weight.ToArray().All(float.IsFinite), Is.True);
        Assert.That(layer.Apply([1f, 2f, 3f, 4f], 1f), Is.True, "training continues after a refused step");
        Assert.Throws<ArgumentException>(() => layer.Apply([1f], 1f));
    }

    [Test]
    public void PoisonedActivationsDiscardTheReuseStep()
    {
        using var m = new OnlineTestModel(OnlineTestModel.Options() with { AdaptLastLayer = true }, config: OnlineTestModel.DeepConfig());
        var server = m.Live;
        var batch = OnlineTestModel.Batch(16, 4);
        var served = ServeAndTake(server, batch);
        served[2].Activations![^2] = float.NaN;   // last hidden layer: the served logit would have been NaN
        var published = m.Trainer.LastLayer!.Current;
        Assert.That(m.Trainer.TrainOn(served), Is.False);
        Assert.That(m.Trainer.DiscardedSteps, Is.EqualTo(1));
        Assert.That(m.Trainer.LastLayer.Current, Is.SameAs(published));
        Assert.That(m.Adapters[0]!.ActiveRows, Is.EqualTo(0));
    }

    [Test]
    public void ReadersAlwaysSeeOneWholeVersion()
    {
        // Equal gradients keep every weight equal within a version, so a torn read would show two values.
        var layer = new LastLayerAdapter(64, 0.01f);
        var g = Enumerable.Repeat(0.5f, 64).ToArray();
        using var stop = new CancellationTokenSource();
        long reads = 0;
        string? failure = null;
        var reader = Task.Run(() =>
        {
            long lastVersion = 0;
            while (!stop.IsCancellationRequested)
            {
                var s = layer.Current;
                var w = s.Weight;
                for (int k = 1; k < w.Length; k++) if (w[k] != w[0]) failure = $"version {s.Version}: weight {k} = {w[k]}, weight 0 = {w[0]}";
                if (s.Version < lastVersion) failure = $"version went back from {lastVersion} to {s.Version}";
                lastVersion = s.Version;
                reads++;
            }
        });
        for (int i = 0; i < 20000; i++) Assert.That(layer.Apply(g, 0.5f), Is.True);
        stop.Cancel();
        reader.Wait();
        Assert.That(failure, Is.Null);
        Assert.That(reads, Is.GreaterThan(0));
        Assert.That(layer.Current.Version, Is.EqualTo(20000));
    }
}
