using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Memory;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using TorchSharp;

namespace LiveDlrm.Tests.Model;

internal class DlrmModelTests
{
    [OneTimeSetUp]
    public void Init() => TorchRuntime.EnsureInitialised();

    static float Sigmoid(double x) => (float)(1 / (1 + Math.Exp(-x)));

    [Test]
    public void ForwardOfTinyModelEqualsHandComputation()
    {
        using var model = TinyDlrm.HandModel();
        var batch = TinyDlrm.HandBatch(model.Config);
        var scores = model.Predict(batch);

        // Event 0: bottom relu([1−2+0.1, 0.5+4−0.2]) = [0, 4.3]; A = r0 + r2 = [1.5, 0.5]; B = mean(r1, r3) = [1.125, 0.25]
        // pairs in dlrm order (A·x, B·x, B·A) = (2.15, 1.075, 1.8125); top over [0, 4.3, 2.15, 1.075, 1.8125]
        double logit0 = 0.3 * 0 - 0.2 * 4.3 + 0.1 * 2.15 + 0.05 * 1.075 - 0.4 * 1.8125 + 0.25;
        // Event 1: bottom relu([0.5+1+0.1, 0.25−2−0.2]) = [1.6, 0]; A empty = [0, 0]; B = r2 = [0, −1]; all pairs 0
        double logit1 = 0.3 * 1.6 + 0.25;
        // Event 2: bottom relu([0.1, −0.2]) = [0.1, 0]; A = r1 = [0, 1]; B = mean(r0, r0) = [1, 1]; pairs (0, 0.1, 1)
        double logit2 = 0.3 * 0.1 + 0.05 * 0.1 - 0.4 * 1 + 0.25;

        Assert.That(scores, Is.EqualTo(new[] { Sigmoid(logit0), Sigmoid(logit1), Sigmoid(logit2) }).Within(1e-6f));
    }

    [Test]
    public void SelfInteractionAddsTheDiagonalInDlrmOrder()
    {
        var config = TinyDlrm.SmallConfig(self: true);
        Assert.That(config.PairOrder(), Is.EqualTo(new[] { (0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (3, 3) }));
        Assert.That(config.TopInput, Is.EqualTo(4 + 10));
        var noSelf = TinyDlrm.SmallConfig(self: false);
        Assert.That(noSelf.PairOrder(), Is.EqualTo(new[] { (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2) }));
        using var model = DlrmModel.Create(config, 3);
        var scores = model.Predict(TinyDlrm.RandomBatch(config, 5, 1));
        Assert.That(scores, Has.All.InRange(0f, 1f));
    }

    [Test]
    public void DenseStateDictUsesDlrmNames()
    {
        using var model = DlrmModel.Create(TinyDlrm.SmallConfig(), 1);
        var names = model.Dense.NamedParameters().Select(p => p.Name).ToArray();
        Assert.That(names, Is.EqualTo(new[] { "bot_l.0.weight", "bot_l.0.bias", "bot_l.2.weight", "bot_l.2.bias", "top_l.0.weight", "top_l.0.bias", "top_l.2.weight", "top_l.2.bias" }));
    }

    [TestCase(EmbeddingStorage.Fp32)]
    [TestCase(EmbeddingStorage.Fp16)]
    [TestCase(EmbeddingStorage.Int8Rowwise)]
    public void PredictMatchesPredictOnSubBatchesAndTrainingForward(EmbeddingStorage storage)
    {
        var config = TinyDlrm.SmallConfig(storage);
        using var model = DlrmModel.Create(config, 11);
        var batch = TinyDlrm.RandomBatch(config, 40, 2);
        var all = model.Predict(batch);
        // Scratch capacity differs between a batch of 40 and of 1: results must not depend on it.
        var single = new EventBatch(batch.Layout, 1, 3);
        for (int e = 0; e < batch.Count; e++)
        {
            single.Clear();
            single.CopyEventFrom(batch, e);
            Assert.That(model.Predict(single)[0], Is.EqualTo(all[e]).Within(1e-6f), $"event {e}");
        }
        using var pass = model.Forward(batch);
        var logits = pass.Logits.data<float>().ToArray();
        Assert.That(logits.Select(l => Sigmoid(l)).ToArray(), Is.EqualTo(all).Within(1e-6f));
    }

    [Test]
    public void BatchNotMatchingTheConfigIsRejectedWithTheReason()
    {
        using var model = DlrmModel.Create(TinyDlrm.SmallConfig(), 1);
        var wrongDense = new EventBatch(new EventBatchLayout(3, model.Config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray()), 2);
        wrongDense.AddEvent(0, 0);
        Assert.That(() => model.Predict(wrongDense), Throws.ArgumentException.With.Message.Contains("dense"));
        var wrongTable = new EventBatch(new EventBatchLayout(4, [new SparseFeatureLayout("t0", "t0", 50), new SparseFeatureLayout("x", "x", 20), new SparseFeatureLayout("t2", "t2", 7)]), 2);
        wrongTable.AddEvent(0, 0);
        Assert.That(() => model.Predict(wrongTable), Throws.ArgumentException.With.Message.Contains("'x'"));
    }

    [Test]
    public void PredictSteadyStateDoesNotGrowHeapNativeOrTensorCount()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 5);
        var batch = TinyDlrm.RandomBatch(config, 64, 3);
        var scores = new float[64];
        for (int i = 0; i < 200; i++) model.Predict(batch, scores);   // warm up: scratch, JIT, tiering

        long native0 = NativeBuffer.LiveBytes;
        long tensors0 = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        long heap0 = GC.GetTotalMemory(true);
        long allocated0 = GC.GetAllocatedBytesForCurrentThread();
        const int calls = 2000;
        for (int i = 0; i < calls; i++) model.Predict(batch, scores);
        long perCall = (GC.GetAllocatedBytesForCurrentThread() - allocated0) / calls;
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        long heapGrowth = GC.GetTotalMemory(true) - heap0;

        TestContext.Out.WriteLine($"managed bytes allocated per Predict: {perCall}; heap growth after {calls} calls: {heapGrowth}");
        Assert.That(NativeBuffer.LiveBytes, Is.EqualTo(native0));
        Assert.That(DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount, Is.EqualTo(tensors0), "tensors leaked by Predict");
        // TorchSharp allocates a small managed wrapper per op; what matters is that it is a small constant per call
        // (independent of the batch size) and that nothing accumulates.
        Assert.That(perCall, Is.LessThan(16 * 1024));
        Assert.That(heapGrowth, Is.LessThan(256 * 1024));
    }

    [Test]
    public void ConcurrentPredictCallersGetTheSameScoresAsSerialCalls()
    {
        var config = TinyDlrm.SmallConfig(EmbeddingStorage.Fp16);
        using var model = DlrmModel.Create(config, 9);
        var batches = Enumerable.Range(0, 8).Select(i => TinyDlrm.RandomBatch(config, 1 + 37 * i % 100, 100 + i)).ToArray();
        var expected = batches.Select(model.Predict).ToArray();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            var buffer = new float[128];
            for (int iter = 0; iter < 300; iter++)
            {
                int k = (t * 7 + iter) % batches.Length;
                model.Predict(batches[k], buffer);
                for (int e = 0; e < batches[k].Count; e++)
                    if (buffer[e] != expected[k][e]) { failures.Enqueue($"thread {t} batch {k} event {e}: {buffer[e]} vs {expected[k][e]}"); return; }
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.That(failures, Is.Empty);
    }
}
