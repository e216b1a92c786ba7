using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Model;
using LiveDlrm.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Tests.Training;

internal class DlrmTrainerTests
{
    [OneTimeSetUp]
    public void Init() => TorchRuntime.EnsureInitialised();

    [Test]
    public void RowwiseAdagradKernelMatchesScalarReferenceForEveryLength()
    {
        var random = new Random(4);
        for (int dim = 1; dim <= 70; dim++)
        {
            var values = Enumerable.Range(0, dim).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
            var grad = Enumerable.Range(0, dim).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
            using var table = EmbeddingTable.FromFp32("t", [.. new float[dim], .. values, .. new float[dim]], dim, EmbeddingStorage.Fp32);
            float acc = 0.3f, accRef = 0.3f;
            var expected = values.ToArray();
            RowwiseAdagrad.Update(table, 1, grad, ref acc, 0.1f, 1e-8f, new float[dim]);
            RowwiseAdagrad.UpdateReference(expected, grad, ref accRef, 0.1f, 1e-8f);
            var actual = new float[dim];
            table.ReadRow(1, actual);
            Assert.That(actual, Is.EqualTo(expected).Within(1e-6f), $"dim {dim}");
            Assert.That(acc, Is.EqualTo(accRef).Within(1e-6f));
            // Neighbouring rows untouched (no overrun past the row).
            table.ReadRow(0, actual); Assert.That(actual, Is.All.EqualTo(0f));
            table.ReadRow(2, actual); Assert.That(actual, Is.All.EqualTo(0f));
        }
    }

    /// <summary>The trainer's scatter (duplicates summed, mean pooling scaled by 1/len) followed by row-wise Adagrad
    /// equals the same computed naively from autograd's dL/d(pooled) on an identical model — also with the
    /// per-occurrence weight decay and a non-zero starting accumulator.</summary>
    [TestCase(EmbeddingStorage.Fp32, 0f, 0f)]
    [TestCase(EmbeddingStorage.Fp16, 0f, 0f)]
    [TestCase(EmbeddingStorage.Fp32, 0.3f, 1e-4f)]
    public void SparseUpdateEqualsNaiveScatterOfPooledGradient(EmbeddingStorage storage, float weightDecay, float initialAccumulator)
    {
        var config = TinyDlrm.SmallConfig(storage);
        using var trained = DlrmModel.Create(config, 21);
        using var reference = DlrmModel.Create(config, 21);
        var batch = TinyDlrm.RandomBatch(config, 30, 5);
        // Force duplicates within a bag and across bags of table t2 (7 rows, 30 events → many repeats).
        const float lr = 0.07f, eps = 1e-8f;

        var expected = new Dictionary<(int, long), float[]>();
        using (var pass = reference.Forward(batch))
        {
            using var labels = tensor(batch.Labels.ToArray());
            using var loss = nn.functional.binary_cross_entropy_with_logits(pass.Logits, labels);
            loss.backward();
            for (int t = 0; t < config.Tables.Count; t++)
            {
                var grads = new Dictionary<long, double[]>();
                var occurrences = new Dictionary<long, int>();
                var g = pass.PooledGradient(t).ToArray();
                for (int bag = 0; bag < batch.Count; bag++)
                {
                    var rows = batch.Bag(t, bag);
                    double scale = config.Tables[t].Pooling == PoolingMode.Mean ? 1.0 / rows.Length : 1.0;
                    foreach (long r in rows)
                    {
                        occurrences[r] = occurrences.GetValueOrDefault(r) + 1;
                        if (!grads.TryGetValue(r, out var acc)) grads[r] = acc = new double[config.Dim];
                        for (int k = 0; k < config.Dim; k++) acc[k] += scale * g[bag * config.Dim + k];
                    }
                }
                foreach (var (row, gd) in grads)
                {
                    var values = new float[config.Dim];
                    reference.Tables[t].ReadRow(row, values);
                    for (int k = 0; k < config.Dim; k++) gd[k] += weightDecay * occurrences[row] / batch.Count * values[k];
                    float accumulator = initialAccumulator;
                    RowwiseAdagrad.UpdateReference(values, gd.Select(x => (float)x).ToArray(), ref accumulator, lr, eps);
                    expected[(t, row)] = values;
                }
            }
        }

        using var trainer = new DlrmTrainer(trained, new DlrmTrainerOptions
        {
            EmbeddingLearningRate = lr, EmbeddingEpsilon = eps, Threads = 2, EmbeddingWeightDecay = weightDecay, EmbeddingInitialAccumulator = initialAccumulator,
        });
        var result = trainer.Step(batch);
        Assert.That(result.Applied, Is.True);
        Assert.That(result.RowsUpdated, Is.EqualTo(expected.Count));

        float tolerance = storage == EmbeddingStorage.Fp32 ? 1e-6f : 2e-3f;   // fp16 re-quantises the updated row
        var actual = new float[config.Dim];
        for (int t = 0; t < config.Tables.Count; t++)
            for (long r = 0; r < config.Tables[t].Rows; r++)
            {
                trained.Tables[t].ReadRow(r, actual);
                if (expected.TryGetValue((t, r), out var want))
                    Assert.That(actual, Is.EqualTo(want).Within(tolerance), $"table {t} row {r}");
                else
                {
                    var before = new float[config.Dim];
                    reference.Tables[t].ReadRow(r, before);
                    Assert.That(actual, Is.EqualTo(before), $"untouched table {t} row {r} changed");
                }
            }
    }

    [Test]
    public void ChangeTrackerReportsExactlyTheTouchedRowsAndTheirBytes()
    {
        var config = TinyDlrm.SmallConfig(EmbeddingStorage.Int8Rowwise);
        using var model = DlrmModel.Create(config, 2);
        using var trainer = new DlrmTrainer(model);
        var batch = TinyDlrm.RandomBatch(config, 10, 8);
        trainer.Step(batch);
        var touched = Enumerable.Range(0, config.Tables.Count).Select(t => batch.Indices(t).ToArray().Distinct().OrderBy(x => x).ToArray()).ToArray();
        long bytes = touched.Select((rows, t) => rows.LongLength * model.Tables[t].RowStride).Sum();
        Assert.That(trainer.Changes.ChangedBytes(), Is.EqualTo(bytes));
        var changes = trainer.Changes.TakeChanges();
        Assert.That(changes.Rows, Is.EqualTo(touched));
        Assert.That(changes.Bytes, Is.EqualTo(bytes));
        Assert.That(trainer.Changes.ChangedRowCount(), Is.Zero, "take starts a new interval");
        Assert.That(trainer.Changes.TakeChanges().RowCount, Is.Zero);
    }

    [Test]
    public void NonFiniteStepIsDiscardedAndChangesNothing()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 2);
        using var trainer = new DlrmTrainer(model);
        var batch = TinyDlrm.RandomBatch(config, 6, 3);
        batch.DenseRowForWrite(2)[1] = float.NaN;
        var before = model.Dense.NamedParameters().Select(p => p.Parameter.data<float>().ToArray()).ToArray();
        var row = new float[config.Dim];
        var rowsBefore = Enumerable.Range(0, config.Tables.Count).Select(t => { var r = new float[config.Dim]; model.Tables[t].ReadRow(batch.Indices(t)[0], r); return r; }).ToArray();
        var result = trainer.Step(batch);
        Assert.That(result.Applied, Is.False);
        Assert.That(trainer.SkippedSteps, Is.EqualTo(1));
        Assert.That(trainer.Changes.ChangedRowCount(), Is.Zero);
        var after = model.Dense.NamedParameters().Select(p => p.Parameter.data<float>().ToArray()).ToArray();
        Assert.That(after, Is.EqualTo(before));
        for (int t = 0; t < config.Tables.Count; t++)
        {
            model.Tables[t].ReadRow(batch.Indices(t)[0], row);
            Assert.That(row, Is.EqualTo(rowsBefore[t]));
        }
    }

    [Test]
    public void StepsDoNotAccumulateTensorsOrNativeMemory()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 2);
        using var trainer = new DlrmTrainer(model);
        var batch = TinyDlrm.RandomBatch(config, 32, 3);
        for (int i = 0; i < 20; i++) trainer.Step(batch);   // optimizer state exists after the first steps
        long tensors = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        long native = LiveDlrm.Memory.NativeBuffer.LiveBytes;
        for (int i = 0; i < 200; i++) trainer.Step(batch);
        Assert.That(DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount, Is.EqualTo(tensors), "tensors leaked by Step");
        Assert.That(LiveDlrm.Memory.NativeBuffer.LiveBytes, Is.EqualTo(native));
    }

    [Test]
    public void LossDecreasesOnARepeatedBatch()
    {
        var config = TinyDlrm.SmallConfig();
        using var model = DlrmModel.Create(config, 2);
        using var trainer = new DlrmTrainer(model, new DlrmTrainerOptions { DenseOptimizer = DenseOptimizerKind.Adam, DenseLearningRate = 0.01 });
        var batch = TinyDlrm.RandomBatch(config, 64, 3);
        float first = trainer.Step(batch).Loss;
        float last = first;
        for (int i = 0; i < 50; i++) last = trainer.Step(batch).Loss;
        Assert.That(last, Is.LessThan(first * 0.7f));
    }
}

internal class DeltaSyncTests
{
    [Test]
    public void ApplyingTheTrackedChangesMakesAStaleCopyIdenticalToTheTrainedModel()
    {
        TorchRuntime.EnsureInitialised();
        var config = TinyDlrm.SmallConfig(EmbeddingStorage.Fp16);
        using var trained = DlrmModel.Create(config, 3);
        using var serving = DlrmModel.Create(config, 3);
        using var trainer = new DlrmTrainer(trained);
        for (int i = 0; i < 5; i++) trainer.Step(TinyDlrm.RandomBatch(config, 8, 40 + i));
        var probe = TinyDlrm.RandomBatch(config, 60, 99);
        Assert.That(serving.Predict(probe), Is.Not.EqualTo(trained.Predict(probe)));
        var changes = trainer.Changes.TakeChanges();
        long bytes = serving.ApplyDelta(trained, changes);
        Assert.That(bytes, Is.EqualTo(changes.Bytes + trainer.DenseBytes));
        Assert.That(serving.Predict(probe), Is.EqualTo(trained.Predict(probe)));
        for (int t = 0; t < config.Tables.Count; t++)
            for (long r = 0; r < config.Tables[t].Rows; r++)
                Assert.That(serving.Tables[t].StoredRow(r).SequenceEqual(trained.Tables[t].StoredRow(r)), Is.True, $"table {t} row {r}");
    }
}
