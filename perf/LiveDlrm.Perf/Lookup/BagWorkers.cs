namespace LiveDlrm.Perf.Lookup;

/// <summary>Dedicated threads that run one bag range each per call, for contenders that have no pool of their own
/// (the native reference). Bags are split into contiguous, equal ranges — the partitioning LiveDlrm's kernel uses —
/// and the caller's thread only dispatches and waits, so the same number of threads does the gathering.
/// Dispatch allocates nothing: the work is a cached delegate and the per-call state lives in the caller's fields.</summary>
sealed class BagWorkers : IDisposable
{
    readonly Thread[] _threads;
    readonly ManualResetEventSlim[] _start;
    readonly ManualResetEventSlim _done = new(false, spinCount: 2000);
    Action<int, int, int>? _work;   // (worker, bagBegin, bagEnd)
    int _bags, _pending;
    volatile bool _stopping;
    Exception? _failure;

    public int ThreadCount => _threads.Length;

    public BagWorkers(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _threads = new Thread[threads];
        _start = new ManualResetEventSlim[threads];
        for (int i = 0; i < threads; i++)
        {
            _start[i] = new ManualResetEventSlim(false, spinCount: 2000);
            int worker = i;
            _threads[i] = new Thread(() => Loop(worker)) { IsBackground = true, Name = $"bench-ref-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>Bag range of worker <paramref name="worker"/> out of <paramref name="threads"/> for a batch of
    /// <paramref name="bags"/> bags: contiguous, sizes differ by at most one.</summary>
    public static (int Begin, int End) Range(int bags, int threads, int worker) =>
        ((int)((long)bags * worker / threads), (int)((long)bags * (worker + 1) / threads));

    /// <summary>Runs <paramref name="work"/>(worker, bagBegin, bagEnd) on every worker and waits for all of them.</summary>
    public void Run(int bags, Action<int, int, int> work)
    {
        ObjectDisposedException.ThrowIf(_stopping, this);
        _work = work;
        _bags = bags;
        _failure = null;
        _pending = _threads.Length;
        _done.Reset();
        foreach (var s in _start) s.Set();
        _done.Wait();
        if (_failure is { } f) throw new InvalidOperationException($"a bench worker failed: {f.Message}", f);
    }

    void Loop(int worker)
    {
        while (true)
        {
            _start[worker].Wait();
            _start[worker].Reset();
            if (_stopping) return;
            try
            {
                var (begin, end) = Range(_bags, _threads.Length, worker);
                _work!(worker, begin, end);
            }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        foreach (var s in _start) s.Set();
        foreach (var t in _threads) t.Join();
        foreach (var s in _start) s.Dispose();
        _done.Dispose();
    }
}
