using LiveDlrm.Interop;

namespace LiveDlrm.Embeddings;

/// <summary>A small set of dedicated threads ("livedlrm-emb-{i}") that share the bags of one lookup with the
/// calling thread. One lookup at a time per pool: a second caller that finds the pool busy runs its lookup on its
/// own thread instead of queueing. The hand-off is a struct in a field plus a chunk counter, so a lookup
/// allocates nothing.</summary>
internal sealed unsafe class EmbeddingWorkerPool : IDisposable
{
    /// <summary>Chunks per participating thread: enough to even out bags of different lengths and a worker that
    /// wakes late, few enough that the shared counter stays cold.</summary>
    const int ChunksPerThread = 4;

    static readonly Lazy<EmbeddingWorkerPool> _shared = new(() => new EmbeddingWorkerPool(SharedThreadCount));

    /// <summary>Workers of <see cref="Shared"/>: one per processor besides the calling thread.</summary>
    public static int SharedThreadCount => Math.Max(0, Environment.ProcessorCount - 1);

    /// <summary>The process-wide pool used when a lookup passes no pool: one worker per core besides the caller.</summary>
    public static EmbeddingWorkerPool Shared => _shared.Value;

    readonly Thread[] _threads;
    readonly int[] _threadIds;
    /// <summary>Per worker, its managed allocation counter after its last job (tests check it stays flat).</summary>
    readonly long[] _allocatedAfterJob;
    readonly SemaphoreSlim _wake = new(0);
    // Released once per lookup by the last worker to finish. A SemaphoreSlim rather than a ManualResetEventSlim:
    // the latter allocates its lock object the first time a waiter really blocks, which showed up as 24 bytes on
    // the calling thread of an otherwise allocation-free lookup under load.
    readonly SemaphoreSlim _done = new(0);
    readonly object _gate = new();
    volatile bool _disposed;

    // The current lookup; written by the caller before the wake-up (SemaphoreSlim.Release is a full fence).
    BagJob _job;
    int _chunkBags, _chunkCount, _nextChunk, _pending, _failed;

    /// <summary>Dedicated worker threads (the calling thread of a lookup works as well).</summary>
    public int ThreadCount => _threads.Length;

    /// <summary>Linux thread ids (gettid) of the workers, in worker order: what sched_setaffinity and resctrl take.</summary>
    public IReadOnlyList<int> ThreadIds => _threadIds;

    /// <param name="threads">Dedicated workers, 0 or more (0: every lookup runs on its calling thread).</param>
    /// <param name="onWorkerStart">Runs on each worker thread itself, with its index, before it takes work (e.g. to
    /// pin it). An exception there fails the constructor.</param>
    public EmbeddingWorkerPool(int threads, Action<int>? onWorkerStart = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(threads, 1024);
        _threads = new Thread[threads];
        _threadIds = new int[threads];
        _allocatedAfterJob = new long[threads];
        var started = new CountdownEvent(threads);
        var errors = new Exception?[threads];
        for (int i = 0; i < threads; i++)
        {
            int index = i;
            _threads[i] = new Thread(() =>
            {
                try
                {
                    _threadIds[index] = MemoryInterop.GetTid();
                    onWorkerStart?.Invoke(index);
                }
                catch (Exception e)
                {
                    errors[index] = e;
                }
                started.Signal();
                if (errors[index] is null) WorkerLoop(index);
            })
            {
                Name = $"livedlrm-emb-{i}",
                IsBackground = true,    // a pool that is never disposed must not keep the process alive
            };
            _threads[i].Start();
        }
        started.Wait();
        started.Dispose();
        var failures = errors.Where(e => e is not null).Select(e => e!).ToList();
        if (failures.Count > 0)
        {
            Dispose();
            throw new AggregateException($"EmbeddingWorkerPool: onWorkerStart failed on {failures.Count} of {threads} workers", failures);
        }
    }

    void WorkerLoop(int index)
    {
        while (true)
        {
            _wake.Wait();
            if (_disposed) return;
            RunChunks();
            Volatile.Write(ref _allocatedAfterJob[index], GC.GetAllocatedBytesForCurrentThread());
            if (Interlocked.Decrement(ref _pending) == 0) _done.Release();
        }
    }

    void RunChunks()
    {
        ref readonly BagJob job = ref _job;
        int c;
        while ((c = Interlocked.Increment(ref _nextChunk) - 1) < _chunkCount)
        {
            int begin = c * _chunkBags, end = Math.Min(job.Bags, begin + _chunkBags);
            if (!job.Kernel(in job, begin, end)) Volatile.Write(ref _failed, 1);
        }
    }

    /// <summary>Runs <paramref name="job"/> on the workers and the calling thread. False (and nothing run) when the
    /// pool is busy with another caller's lookup or disposed.</summary>
    internal bool TryRun(in BagJob job, out bool ok)
    {
        ok = false;
        if (_disposed || !Monitor.TryEnter(_gate)) return false;
        try
        {
            if (_disposed) return false;
            int participants = _threads.Length + 1;
            _chunkBags = Math.Max(1, (job.Bags + participants * ChunksPerThread - 1) / (participants * ChunksPerThread));
            _chunkCount = (job.Bags + _chunkBags - 1) / _chunkBags;
            _job = job;
            _nextChunk = 0;
            _failed = 0;
            _pending = _threads.Length;
            _wake.Release(_threads.Length);
            RunChunks();
            // The caller's pinned spans must stay valid until every worker has left the job.
            _done.Wait();
            ok = _failed == 0;
            _job = default;
            return true;
        }
        finally
        {
            Monitor.Exit(_gate);
        }
    }

    /// <summary>Sum over the workers of the bytes each had allocated when it finished its last job.</summary>
    internal long WorkerAllocatedBytes
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _allocatedAfterJob.Length; i++) sum += Volatile.Read(ref _allocatedAfterJob[i]);
            return sum;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        int alive = _threads.Count(t => t.IsAlive);
        if (alive > 0) _wake.Release(_threads.Length);
        foreach (var t in _threads)
            if (t.ManagedThreadId != Environment.CurrentManagedThreadId) t.Join();
        _wake.Dispose();
        _done.Dispose();
    }
}
