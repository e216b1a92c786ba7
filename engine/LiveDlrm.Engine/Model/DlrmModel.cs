using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Model;

/// <summary>
/// A DLRM: embedding tables in native memory looked up by the engine's kernels (through an
/// <see cref="IEmbeddingBackend"/>), dense part in TorchSharp (<see cref="DlrmDenseNet"/>).
/// <para>Pooled embeddings of a batch are written by the kernels straight into ONE float32 tensor that libtorch
/// allocated, laid out table-major <c>[T, B, d]</c> (table t's bags are contiguous, exactly the kernels' output
/// contract), so nothing is copied row by row on the way into TorchSharp.</para>
/// <para><see cref="Predict(EventBatch, Span{float})"/> is safe for concurrent callers: each call rents a scratch
/// (dense input and pooled tensors, sized for the largest batch seen) from a small pool and returns it, and every
/// temporary tensor lives in a dispose scope, so the steady state neither grows the managed heap nor native
/// memory. Writers (trainers, merges, checkpoint loads) coordinate at a higher level: a concurrent reader may see a
/// row or a weight mid-update, never freed memory.</para>
/// </summary>
internal sealed unsafe class DlrmModel : IDisposable
{
    readonly EmbeddingTable[] _tables;
    readonly Stack<PredictScratch> _scratch = new();
    readonly bool _ownsBackend;
    bool _disposed;

    public DlrmConfig Config { get; }
    public IReadOnlyList<EmbeddingTable> Tables => _tables;
    public DlrmDenseNet Dense { get; }
    public IEmbeddingBackend Backend { get; }

    /// <summary>Takes ownership of <paramref name="tables"/> and <paramref name="dense"/> (disposed with the model);
    /// the backend is disposed too unless <paramref name="ownsBackend"/> is false. No backend = the CPU SIMD kernels
    /// (<see cref="CpuEmbeddingBackend"/>; concurrent callers that find its worker pool busy run inline).</summary>
    public DlrmModel(DlrmConfig config, IReadOnlyList<EmbeddingTable> tables, DlrmDenseNet dense, IEmbeddingBackend? backend = null, bool ownsBackend = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tables);
        ArgumentNullException.ThrowIfNull(dense);
        if (tables.Count != config.Tables.Count) throw new ArgumentException($"{tables.Count} tables given, the config has {config.Tables.Count}", nameof(tables));
        for (int i = 0; i < tables.Count; i++)
        {
            var t = tables[i];
            var c = config.Tables[i];
            if (t.Name != c.Name || t.Rows != c.Rows || t.Dim != c.Dim || t.Storage != c.Storage)
                throw new ArgumentException($"table {i} is {t}, the config wants '{c.Name}' [{c.Rows} × {c.Dim} {c.Storage}]", nameof(tables));
        }
        if (!dense.Config.SameShape(config)) throw new ArgumentException("the dense net was built for a different config", nameof(dense));
        Config = config;
        _tables = tables.ToArray();
        Dense = dense;
        Backend = backend ?? new CpuEmbeddingBackend();   // the SIMD kernels on the shared worker pool
        _ownsBackend = backend is null || ownsBackend;
    }

    /// <summary>A freshly initialised model (facebookresearch/dlrm init: rows of table t uniform in
    /// ±√(1/rows); dense as <see cref="DlrmDenseNet.Initialise"/>), deterministic by <paramref name="seed"/>.</summary>
    public static DlrmModel Create(DlrmConfig config, int seed, IEmbeddingBackend? backend = null, bool ownsBackend = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        TorchRuntime.EnsureInitialised();
        var random = new Random(seed);
        var tables = new List<EmbeddingTable>();
        DlrmDenseNet? dense = null;
        try
        {
            foreach (var tc in config.Tables)
            {
                var table = EmbeddingTable.Create(tc.Name, tc.Rows, tc.Dim, tc.Storage);
                tables.Add(table);
                float bound = (float)Math.Sqrt(1.0 / tc.Rows);
                var row = new float[tc.Dim];
                for (long r = 0; r < tc.Rows; r++)
                {
                    for (int k = 0; k < row.Length; k++) row[k] = (float)(random.NextDouble() * 2 - 1) * bound;
                    table.WriteRow(r, row);
                }
            }
            dense = new DlrmDenseNet(config);
            dense.Initialise(random);
            return new DlrmModel(config, tables, dense, backend, ownsBackend);
        }
        catch
        {
            foreach (var t in tables) t.Dispose();
            dense?.Dispose();
            throw;
        }
    }

    // ---------------------------------------------------------------- embeddings

    /// <summary>Pools every table for <paramref name="batch"/> into <paramref name="pooled"/>, table-major
    /// <c>[T, B, d]</c> (at least T·B·d floats).</summary>
    public void Pool(EventBatch batch, Span<float> pooled)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(batch);
        Config.CheckLayout(batch.Layout);
        int b = batch.Count, d = Config.Dim;
        long needed = (long)_tables.Length * b * d;
        if (pooled.Length < needed) throw new ArgumentException($"pooled holds {pooled.Length} floats, {_tables.Length} tables × {b} events × dim {d} need {needed}", nameof(pooled));
        // All tables in one call: a backend that serves them together (PIM: one launch per DPU set) gets the whole batch.
        var lookups = new TableLookup[_tables.Length];
        for (int t = 0; t < _tables.Length; t++)
            lookups[t] = new TableLookup(_tables[t], batch.IndicesMemory(t), batch.OffsetsMemory(t), t * b * d, Config.Tables[t].Pooling);
        Backend.ForwardTables(lookups, pooled[..(int)needed]);
    }

    // ---------------------------------------------------------------- inference

    /// <summary>Click probabilities of the events of <paramref name="batch"/> into <paramref name="scores"/>.</summary>
    public void Predict(EventBatch batch, Span<float> scores) => Predict(batch, scores, null);

    /// <summary>The same scores (the same code), also handing <paramref name="observer"/> what this forward computed:
    /// the pooled embeddings and, when it asks for them, the dense activations (the live model keeps them with the
    /// served request for its trainer).</summary>
    public void Predict(EventBatch batch, Span<float> scores, IForwardObserver? observer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(batch);
        int b = batch.Count;
        if (scores.Length < b) throw new ArgumentException($"scores holds {scores.Length} floats for {b} events", nameof(scores));
        if (b == 0) return;
        var scratch = Rent(b);
        try
        {
            int d = Config.Dim, features = Config.DenseFeatures, tables = _tables.Length;
            var pooledSpan = new Span<float>(scratch.PooledPointer, tables * b * d);
            Pool(batch, pooledSpan);
            batch.Dense.CopyTo(new Span<float>(scratch.DensePointer, b * features));
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var dense = scratch.Dense.narrow(0, 0, (long)b * features).view(b, features);
            var pooled = scratch.Pooled.narrow(0, 0, (long)tables * b * d).view(tables, b, d);
            Tensor logits;
            Tensor? bottom = null;
            Tensor[]? hidden = null;
            if (observer is { KeepsActivations: true }) logits = Dense.ForwardKeepingActivations(dense, pooled, out bottom, out hidden);
            else logits = Dense.forward(dense, pooled);
            var probabilities = logits.sigmoid_();
            new ReadOnlySpan<float>(TensorMemory.Pointer(probabilities), b).CopyTo(scores);
            observer?.Observe(batch, pooledSpan, new DenseActivations(bottom, hidden));
        }
        finally
        {
            Return(scratch);
        }
    }

    public float[] Predict(EventBatch batch)
    {
        var scores = new float[batch.Count];
        Predict(batch, scores);
        return scores;
    }

    // ---------------------------------------------------------------- training forward

    /// <summary>A forward pass for training: the pooled embeddings become a leaf tensor with requires_grad, so after
    /// <c>loss.backward()</c> <see cref="DlrmForwardPass.PooledGradient"/> holds dL/d(pooled) per table, whether the
    /// dense parameters are trained or frozen (<see cref="DlrmDenseNet.SetTrainable"/>). Dispose the pass to free
    /// its tensors.</summary>
    public DlrmForwardPass Forward(EventBatch batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Count == 0) throw new ArgumentException("empty batch", nameof(batch));
        return new DlrmForwardPass(this, batch);
    }

    // ---------------------------------------------------------------- scratch pool

    sealed class PredictScratch : IDisposable
    {
        public readonly int Capacity;
        public readonly Tensor Dense, Pooled;
        public readonly float* DensePointer, PooledPointer;

        public PredictScratch(int capacity, DlrmConfig config)
        {
            Capacity = capacity;
            // Created outside any caller's dispose scope: the scratch outlives every call that uses it.
            Dense = empty((long)capacity * config.DenseFeatures).DetachFromDisposeScope();
            Pooled = empty((long)config.Tables.Count * capacity * config.Dim).DetachFromDisposeScope();
            DensePointer = TensorMemory.Pointer(Dense);
            PooledPointer = TensorMemory.Pointer(Pooled);
        }

        public void Dispose() { Dense.Dispose(); Pooled.Dispose(); }
    }

    PredictScratch Rent(int batch)
    {
        lock (_scratch)
        {
            if (_scratch.TryPop(out var s))
            {
                if (s.Capacity >= batch) return s;
                s.Dispose();
            }
        }
        // Capacities are rounded up to a power of two so a stream of slightly growing batches reallocates rarely.
        int capacity = (int)Math.Min(int.MaxValue / 2, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(batch, 16)));
        return new PredictScratch(capacity, Config);
    }

    void Return(PredictScratch scratch)
    {
        lock (_scratch)
        {
            if (!_disposed && _scratch.Count < Math.Max(4, Environment.ProcessorCount * 2)) { _scratch.Push(scratch); return; }
        }
        scratch.Dispose();
    }

    public long TableBytes => _tables.Sum(t => t.ByteSize);

    /// <summary>Delta sync: copies the stored bytes of <paramref name="changes"/>' rows (as recorded by a trainer's
    /// <c>ChangeTracker</c> on <paramref name="source"/>, a model of the same config) and, optionally, every dense
    /// parameter into this model. Returns the bytes copied (the payload a delta update ships). Concurrent readers
    /// may see a row mid-copy; callers that need atomicity serialise at a higher level.</summary>
    public long ApplyDelta(DlrmModel source, Training.ChangedRows changes, bool includeDense = true)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(changes);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!source.Config.SameShape(Config)) throw new ArgumentException("the source model has a different config", nameof(source));
        if (changes.Rows.Count != _tables.Length) throw new ArgumentException($"changes list {changes.Rows.Count} tables, the model has {_tables.Length}", nameof(changes));
        long bytes = 0;
        for (int t = 0; t < _tables.Length; t++)
            foreach (long row in changes.Rows[t])
            {
                source._tables[t].StoredRow(row).CopyTo(_tables[t].StoredRow(row));
                bytes += _tables[t].RowStride;
            }
        if (includeDense)
        {
            Dense.CopyFrom(source.Dense);
            bytes += Dense.NamedParameters().Sum(p => p.Parameter.numel()) * sizeof(float);
        }
        return bytes;
    }

    public void Dispose()
    {
        lock (_scratch)
        {
            if (_disposed) return;
            _disposed = true;
            while (_scratch.TryPop(out var s)) s.Dispose();
        }
        foreach (var t in _tables) t.Dispose();
        Dense.Dispose();
        if (_ownsBackend) Backend.Dispose();
    }
}

/// <summary>One training forward of a <see cref="DlrmModel"/> (see <see cref="DlrmModel.Forward"/>). Owns its input,
/// pooled and logit tensors (the autograd graph keeps what backward needs); it opens no dispose scope that outlives
/// the constructor, so passes may be kept (e.g. in a replay ring) and disposed in any order.</summary>
internal sealed unsafe class DlrmForwardPass : IDisposable
{
    readonly int _tables, _dim;
    Tensor? _grad;

    public int Count { get; }
    /// <summary>Dense input [B, F].</summary>
    public Tensor DenseInput { get; }
    /// <summary>Pooled embeddings [T, B, d], a leaf with requires_grad.</summary>
    public Tensor Pooled { get; }
    /// <summary>Logits [B] (before the sigmoid), attached to the autograd graph.</summary>
    public Tensor Logits { get; }

    internal DlrmForwardPass(DlrmModel model, EventBatch batch)
    {
        var config = model.Config;
        Count = batch.Count;
        _tables = config.Tables.Count;
        _dim = config.Dim;
        using var scope = NewDisposeScope();
        DenseInput = empty(Count, config.DenseFeatures);
        batch.Dense.CopyTo(new Span<float>(TensorMemory.Pointer(DenseInput), Count * config.DenseFeatures));
        Pooled = empty(_tables, Count, _dim);
        model.Pool(batch, new Span<float>(TensorMemory.Pointer(Pooled), _tables * Count * _dim));
        Pooled.requires_grad_(true);
        Logits = model.Dense.forward(DenseInput, Pooled);
        // Intermediate wrappers die with the scope; libtorch's graph holds its own references to saved tensors.
        DenseInput.DetachFromDisposeScope();
        Pooled.DetachFromDisposeScope();
        Logits.DetachFromDisposeScope();
    }

    /// <summary>Pooled embeddings of table <paramref name="table"/>, [B × d] row-major.</summary>
    public ReadOnlySpan<float> PooledOf(int table) => new(TensorMemory.Pointer(Pooled) + (long)table * Count * _dim, Count * _dim);

    /// <summary>dL/d(pooled) of table <paramref name="table"/> after backward, [B × d]; empty before backward.</summary>
    public ReadOnlySpan<float> PooledGradient(int table)
    {
        if (_grad is null)
        {
            using var scope = NewDisposeScope();
            var grad = Pooled.grad;
            if (grad is null) return default;
            _grad = grad.DetachFromDisposeScope();
        }
        return new ReadOnlySpan<float>(TensorMemory.Pointer(_grad) + (long)table * Count * _dim, Count * _dim);
    }

    public void Dispose()
    {
        _grad?.Dispose();
        Logits.Dispose();
        Pooled.Dispose();
        DenseInput.Dispose();
    }
}
