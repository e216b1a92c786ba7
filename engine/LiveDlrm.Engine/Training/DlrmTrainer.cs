using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Memory;
using LiveDlrm.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Training;

internal enum DenseOptimizerKind { Adagrad, Adam }

internal sealed record DlrmTrainerOptions
{
    /// <summary>Row-wise Adagrad learning rate of the embedding rows.</summary>
    public float EmbeddingLearningRate { get; init; } = 0.05f;
    public float EmbeddingEpsilon { get; init; } = 1e-8f;
    /// <summary>L2 penalty per occurrence of a row (the gradient gains λ·w/B for each of its k bags in a batch of
    /// B): rows seen rarely stay near zero instead of memorising their few events.</summary>
    public float EmbeddingWeightDecay { get; init; } = 0f;
    /// <summary>Starting value of every row's Adagrad accumulator. Zero makes a row's first step lr-sized whatever
    /// its gradient (Adagrad normalises it away), which lets one event move a rare row as far as a hundred move a
    /// common one; a positive start scales the early steps by the gradient instead.</summary>
    public float EmbeddingInitialAccumulator { get; init; } = 0f;
    public DenseOptimizerKind DenseOptimizer { get; init; } = DenseOptimizerKind.Adagrad;
    public double DenseLearningRate { get; init; } = 0.02;
    /// <summary>Threads for the sparse embedding update (work is split by table). 1 = on the calling thread.</summary>
    public int Threads { get; init; } = Math.Max(1, Environment.ProcessorCount);

    public void Validate()
    {
        if (!(EmbeddingLearningRate > 0) || !float.IsFinite(EmbeddingLearningRate)) throw new ArgumentOutOfRangeException(nameof(EmbeddingLearningRate), EmbeddingLearningRate, "must be positive");
        if (!(EmbeddingEpsilon > 0)) throw new ArgumentOutOfRangeException(nameof(EmbeddingEpsilon), EmbeddingEpsilon, "must be positive");
        if (!(DenseLearningRate > 0) || !double.IsFinite(DenseLearningRate)) throw new ArgumentOutOfRangeException(nameof(DenseLearningRate), DenseLearningRate, "must be positive");
        if (Threads < 1) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "must be at least 1");
    }
}

/// <summary>What one minibatch step did.</summary>
internal readonly record struct TrainStepResult(float Loss, int Events, bool Applied, long RowsUpdated);

/// <summary>
/// Full-parameter trainer of a <see cref="DlrmModel"/> (the "training cluster" side: base models, and the delta-sync
/// baseline). One <see cref="Step"/> = one minibatch: forward through the model's kernels and dense net, BCE-with-
/// logits (mean over the batch), autograd backward to the dense parameters and to the pooled embeddings; the dense
/// part is stepped by TorchSharp Adagrad/Adam, the embeddings by <see cref="RowwiseAdagrad"/> on exactly the rows the
/// batch touched (the pooled gradient of a bag is scattered to its rows, scaled by 1/len for mean pooling, summed
/// over duplicate rows first). Tables are updated in parallel over <see cref="DlrmTrainerOptions.Threads"/>.
/// Every updated row is marked in <see cref="Changes"/>. A step whose loss or gradients are not finite is discarded
/// (<see cref="SkippedSteps"/>) and changes nothing. Not thread-safe: one trainer, one thread calling Step.
/// </summary>
internal sealed unsafe class DlrmTrainer : IDisposable
{
    readonly DlrmModel _model;
    readonly DlrmTrainerOptions _options;
    readonly optim.Optimizer _denseOptimizer;
    readonly NativeBuffer[] _accumulators;
    readonly TableWork[] _work;

    public DlrmModel Model => _model;
    public DlrmTrainerOptions Options => _options;
    public ChangeTracker Changes { get; }
    public long Steps { get; private set; }
    public long SkippedSteps { get; private set; }
    public long EventsTrained { get; private set; }
    /// <summary>Bytes of the dense parameters (what a delta sync ships for the dense part).</summary>
    public long DenseBytes { get; }

    public DlrmTrainer(DlrmModel model, DlrmTrainerOptions? options = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _options = options ?? new DlrmTrainerOptions();
        _options.Validate();
        model.Dense.SetTrainable(true);
        var parameters = model.Dense.parameters().ToList();
        _denseOptimizer = _options.DenseOptimizer switch
        {
            DenseOptimizerKind.Adam => optim.Adam(parameters, _options.DenseLearningRate),
            _ => optim.Adagrad(parameters, _options.DenseLearningRate),
        };
        DenseBytes = parameters.Sum(p => p.numel()) * sizeof(float);
        // One fp32 accumulator per row, in native memory (a 10 M-row table needs 40 MB of state, not 40·d MB).
        _accumulators = model.Tables.Select(t => NativeBuffer.Allocate(t.Rows * sizeof(float))).ToArray();
        if (_options.EmbeddingInitialAccumulator > 0)
            for (int t = 0; t < _accumulators.Length; t++)
                for (long r = 0; r < model.Tables[t].Rows; r++) ((float*)_accumulators[t].Pointer)[r] = _options.EmbeddingInitialAccumulator;
        _work = model.Tables.Select(t => new TableWork(t.Dim)).ToArray();
        Changes = new ChangeTracker(model.Tables);
    }

    /// <summary>A copy of table <paramref name="table"/>'s row-wise Adagrad accumulators, one per row (what an online
    /// learner continuing this model starts its rows from: <see cref="LiveDlrm.Lora.RowAccumulators"/>).</summary>
    public float[] CopyAccumulators(int table)
    {
        var values = new float[_model.Tables[table].Rows];
        new ReadOnlySpan<float>((float*)_accumulators[table].Pointer, values.Length).CopyTo(values);
        return values;
    }

    /// <summary>A trainer that continues this one on <paramref name="copy"/> (a copy of <see cref="Model"/>, e.g.
    /// <see cref="ModelCopy.Clone"/>): the same options, its own copies of the row-wise accumulators and of the dense
    /// optimizer's state, the same step counts. Stepping either afterwards leaves the other as it was, so several
    /// delta-sync runs can each continue one base trainer (the replay's sweep).</summary>
    public DlrmTrainer Fork(DlrmModel copy)
    {
        ArgumentNullException.ThrowIfNull(copy);
        if (ReferenceEquals(copy, _model)) throw new ArgumentException("a fork needs its own copy of the model", nameof(copy));
        if (!copy.Config.SameShape(_model.Config)) throw new ArgumentException("the copy has another architecture than the trained model", nameof(copy));
        var fork = new DlrmTrainer(copy, _options);
        try
        {
            for (int t = 0; t < _accumulators.Length; t++)
                Buffer.MemoryCopy(_accumulators[t].Pointer, fork._accumulators[t].Pointer, _model.Tables[t].Rows * sizeof(float), _model.Tables[t].Rows * sizeof(float));
            // Through a stream: TorchSharp's load_state_dict(StateDictionary) would share the state tensors between
            // the two optimizers; the binary form copies them into the fork's own.
            using var buffer = new MemoryStream();
            using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) ((TorchSharp.Modules.OptimizerHelper)_denseOptimizer).save_state_dict(writer);
            buffer.Position = 0;
            using (var reader = new BinaryReader(buffer)) ((TorchSharp.Modules.OptimizerHelper)fork._denseOptimizer).load_state_dict(reader);
            fork.Steps = Steps;
            fork.SkippedSteps = SkippedSteps;
            fork.EventsTrained = EventsTrained;
            return fork;
        }
        catch
        {
            fork.Dispose();
            throw;
        }
    }

    /// <summary>Row-wise Adagrad accumulator of one row (for tests and checkpoints of the optimizer state).</summary>
    public float Accumulator(int table, long row)
    {
        if ((ulong)row >= (ulong)_model.Tables[table].Rows) throw new ArgumentOutOfRangeException(nameof(row));
        return ((float*)_accumulators[table].Pointer)[row];
    }

    /// <summary>Trains on <paramref name="batch"/>. If <paramref name="predictions"/> is non-empty it receives the
    /// model's click probabilities from BEFORE the update (progressive "predict, then learn" evaluation).</summary>
    public TrainStepResult Step(EventBatch batch, Span<float> predictions = default)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int b = batch.Count;
        if (b == 0) return new TrainStepResult(0, 0, false, 0);
        if (predictions.Length != 0 && predictions.Length < b) throw new ArgumentException($"predictions holds {predictions.Length} floats for {b} events", nameof(predictions));

        using var scope = NewDisposeScope();
        _denseOptimizer.zero_grad();
        using var pass = _model.Forward(batch);
        var labels = empty(b);
        batch.Labels.CopyTo(TensorMemory.Span(labels));
        var loss = nn.functional.binary_cross_entropy_with_logits(pass.Logits, labels);
        float lossValue = loss.item<float>();
        if (predictions.Length != 0)
        {
            using var _ = no_grad();
            var p = pass.Logits.detach().sigmoid();
            TensorMemory.Span(p).CopyTo(predictions);
        }
        if (!float.IsFinite(lossValue)) { SkippedSteps++; return new TrainStepResult(lossValue, b, false, 0); }
        loss.backward();
        if (!GradientsFinite(pass)) { SkippedSteps++; return new TrainStepResult(lossValue, b, false, 0); }

        _denseOptimizer.step();
        long rows = UpdateEmbeddings(batch, pass);
        Steps++;
        EventsTrained += b;
        return new TrainStepResult(lossValue, b, true, rows);
    }

    bool GradientsFinite(DlrmForwardPass pass)
    {
        for (int t = 0; t < _model.Tables.Count; t++)
            foreach (float g in pass.PooledGradient(t))
                if (!float.IsFinite(g)) return false;
        foreach (var p in _model.Dense.parameters())
        {
            var grad = p.grad;
            if (grad is not null && !grad.isfinite().all().item<bool>()) return false;
        }
        return true;
    }

    long UpdateEmbeddings(EventBatch batch, DlrmForwardPass pass)
    {
        int tables = _model.Tables.Count;
        var gradients = new float*[tables];
        for (int t = 0; t < tables; t++)
            fixed (float* g = pass.PooledGradient(t)) gradients[t] = g;   // tensor memory: not moved by the GC
        long total = 0;
        if (_options.Threads <= 1 || tables == 1)
        {
            for (int t = 0; t < tables; t++) total += UpdateTable(t, batch, gradients[t]);
        }
        else
        {
            Parallel.For(0, tables, new ParallelOptions { MaxDegreeOfParallelism = _options.Threads },
                         () => 0L, (t, _, sum) => sum + UpdateTable(t, batch, gradients[t]), sum => Interlocked.Add(ref total, sum));
        }
        return total;
    }

    /// <summary>Scatter-adds the pooled gradient of every bag to its rows, then one row-wise Adagrad update per
    /// distinct row. Returns the number of rows updated.</summary>
    long UpdateTable(int t, EventBatch batch, float* pooledGradient)
    {
        var table = _model.Tables[t];
        var work = _work[t];
        int dim = table.Dim;
        var indices = batch.Indices(t);
        var offsets = batch.Offsets(t);
        int n = indices.Length;
        if (n == 0) return 0;
        work.Ensure(n);
        // (row, occurrence) pairs sorted by row put duplicate rows next to each other without a hash map.
        for (int bag = 0; bag < batch.Count; bag++)
        {
            int start = (int)offsets[bag], end = (int)offsets[bag + 1];
            float scale = _model.Config.Tables[t].Pooling == PoolingMode.Mean && end > start ? 1f / (end - start) : 1f;
            for (int j = start; j < end; j++)
            {
                work.Rows[j] = indices[j];
                work.Bags[j] = bag;
                work.Scales[j] = scale;
            }
        }
        for (int j = 0; j < n; j++) work.Order[j] = j;
        Array.Sort(work.Rows, work.Order, 0, n);

        float* accumulators = (float*)_accumulators[t].Pointer;
        var gradient = work.Gradient.AsSpan(0, dim);
        long updated = 0;
        for (int j = 0; j < n;)
        {
            long row = work.Rows[j];
            if ((ulong)row >= (ulong)table.Rows) throw new ArgumentOutOfRangeException(nameof(batch), row, $"table '{table.Name}': index {row} is outside [0, {table.Rows})");
            gradient.Clear();
            int occurrences = 0;
            for (; j < n && work.Rows[j] == row; j++, occurrences++)
            {
                int k = work.Order[j];
                RowwiseAdagrad.Axpy(gradient, new ReadOnlySpan<float>(pooledGradient + (long)work.Bags[k] * dim, dim), work.Scales[k]);
            }
            if (_options.EmbeddingWeightDecay > 0)
            {
                table.ReadRow(row, work.RowScratch);
                RowwiseAdagrad.Axpy(gradient, work.RowScratch, _options.EmbeddingWeightDecay * occurrences / batch.Count);
            }
            RowwiseAdagrad.Update(table, row, gradient, ref accumulators[row], _options.EmbeddingLearningRate, _options.EmbeddingEpsilon, work.RowScratch);
            Changes.Mark(t, row);
            updated++;
        }
        return updated;
    }

    /// <summary>Per-table scratch, grown geometrically and reused across steps.</summary>
    sealed class TableWork(int dim)
    {
        public long[] Rows = [];
        public int[] Order = [];
        public int[] Bags = [];
        public float[] Scales = [];
        public readonly float[] Gradient = new float[dim];
        public readonly float[] RowScratch = new float[dim];

        public void Ensure(int n)
        {
            if (Rows.Length >= n) return;
            int size = Math.Max(n, Rows.Length * 2);
            Rows = new long[size]; Order = new int[size]; Bags = new int[size]; Scales = new float[size];
        }
    }

    public void Dispose()
    {
        _denseOptimizer.Dispose();
        foreach (var a in _accumulators) a.Dispose();
    }
}
