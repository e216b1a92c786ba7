using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Online;

/// <summary>Serves one adapted table whose base rows live in an <see cref="IBaseCopyBackend"/> (DPU MRAM): the
/// backend pools Σ W from its copy, the host adds <c>s·(Σ w A)·B</c> (<see cref="LoraAdapterTerm"/>), and the
/// adapter's merges are pushed to the copy in one batched update per merge batch.
///
/// Ordering of a merge against these lookups: a lookup (base pooling + adapter term) holds a read lock; a merge batch
/// takes the write lock in <see cref="MergeStarting"/>, writes W + A·B into the host table and drops A row by row,
/// pushes the rows in <see cref="MergeFinished"/> and only then releases. A lookup therefore sees old copy + A or new
/// copy without A for every merged row — never both (double count) and never neither (lost update). The price: these
/// lookups wait for a merge batch (1/16 of the adapter's rows by default, plus one push), and a merge waits for the
/// lookups in flight. Lookups through the fused CPU kernel do not take the lock; they read host W and A together under
/// the slot seqlock as before. If the push fails, the exception reaches the trainer and the lock is still released; the
/// PIM backend refuses lookups after a failed transfer, so stale rows are not served silently.</summary>
internal sealed class BaseCopyAdapterPath : IAdapterMergeObserver, IDisposable
{
    readonly IBaseCopyBackend _backend;
    readonly ReaderWriterLockSlim _gate = new(LockRecursionPolicy.NoRecursion);
    long _pushedRows;
    long _pushes;

    public BaseCopyAdapterPath(TableAdapter adapter, IBaseCopyBackend backend)
    {
        Adapter = adapter;
        _backend = backend;
    }

    public TableAdapter Adapter { get; }
    /// <summary>Rows pushed to the backend's copy after merges, and the number of batched pushes.</summary>
    public long PushedRows => Interlocked.Read(ref _pushedRows);
    public long Pushes => Interlocked.Read(ref _pushes);

    public void Forward(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                        PoolingMode pooling, ReadOnlySpan<float> weights, EmbeddingWorkerPool? pool)
    {
        _gate.EnterReadLock();
        try
        {
            _backend.Forward(Adapter.Table, indices, offsets, output, pooling, weights);
            LoraAdapterTerm.Add(Adapter, indices, offsets, output, pooling, weights, pool);
        }
        finally { _gate.ExitReadLock(); }
    }

    /// <summary>For a multi-table lookup: hold the read lock across the inner backend's pooling of this table (done
    /// together with other tables) and <see cref="AddAdapterTerm"/>, then <see cref="ExitLookup"/>.</summary>
    public void EnterLookup() => _gate.EnterReadLock();
    public void ExitLookup() => _gate.ExitReadLock();

    /// <summary>Adds the adapter term to a base pooling already in <paramref name="output"/>; only between
    /// <see cref="EnterLookup"/> and <see cref="ExitLookup"/>, with the base pooled under the same hold.</summary>
    public void AddAdapterTerm(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, Span<float> output,
                               PoolingMode pooling, ReadOnlySpan<float> weights, EmbeddingWorkerPool? pool)
        => LoraAdapterTerm.Add(Adapter, indices, offsets, output, pooling, weights, pool);

    public void MergeStarting(TableAdapter adapter) => _gate.EnterWriteLock();

    public void MergeFinished(TableAdapter adapter, ReadOnlySpan<long> rows)
    {
        try
        {
            if (rows.IsEmpty) return;
            _backend.UpdateBaseRows(adapter.Table, rows);
            Interlocked.Add(ref _pushedRows, rows.Length);
            Interlocked.Increment(ref _pushes);
        }
        finally { _gate.ExitWriteLock(); }
    }

    /// <summary>Detaches from the adapter (if still attached) so later merges no longer push here.</summary>
    public void Dispose()
    {
        if (ReferenceEquals(Adapter.MergeObserver, this)) Adapter.MergeObserver = null;
    }
}
