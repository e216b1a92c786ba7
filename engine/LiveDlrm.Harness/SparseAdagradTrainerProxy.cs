using System.Diagnostics;
using System.Runtime.InteropServices;
using LiveDlrm.Embeddings;
using LiveDlrm.Numa;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

internal sealed record TrainerProxyOptions
{
    public int Tables { get; init; } = 2;
    public long Rows { get; init; } = 1_000_000;
    public int Dim { get; init; } = 64;
    /// <summary>Samples per step; a step is the unit between throttle checks, so it should stay around a millisecond.</summary>
    public int SamplesPerStep { get; init; } = 32;
    public int IdsPerSample { get; init; } = 16;
    public double ZipfExponent { get; init; } = 0.8;
    public float LearningRate { get; init; } = 0.05f;
    public int Seed { get; init; } = 7;

    internal void Validate()
    {
        if (Tables < 1 || Rows < 1 || Dim < 1 || SamplesPerStep < 1 || IdsPerSample < 1)
            throw new ArgumentOutOfRangeException(nameof(TrainerProxyOptions), this, "every size of the trainer proxy must be positive");
    }
}

/// <summary>A synthetic colocated trainer, harsher on memory than the LoRA trainer: real sparse training of a tiny model — per sample a
/// logistic prediction from the sum-pooled embeddings of <see cref="TrainerProxyOptions.Tables"/> tables, its
/// log-loss gradient pushed into every row of every bag with row-wise Adagrad (one accumulator per row). Its own
/// tables, low Zipf skew: each step reads and writes thousands of scattered rows, i.e. it is memory-bandwidth
/// heavy, the worst interference a colocated trainer inflicts (the <c>dlrm-live</c> workload runs the real one). Implements <see cref="ITrainerHost"/> so the plan
/// pins its threads and the QoS controller throttles it.</summary>
internal sealed class SparseAdagradTrainerProxy : ILatencyTrainer
{
    readonly EmbeddingTable[] _tables;
    readonly float[][] _accumulators;
    readonly long[][] _idPools;
    readonly List<Thread> _threads = new();
    readonly List<int> _tids = new();
    DutyCycleGate _gate = new();
    long _samples;
    double _lossSum;
    long _lossCount;

    public TrainerProxyOptions Options { get; }
    public string Name => "sparse-adagrad-proxy";
    public int? MaxThreads => null;
    public IReadOnlyList<int> ThreadIds { get { lock (_tids) return _tids.ToList(); } }
    public ITrainerThrottle Throttle => _gate;
    public long SamplesProcessed => Interlocked.Read(ref _samples);
    public IReadOnlyList<EmbeddingTable> Tables => _tables;
    /// <summary>Mean log-loss of the samples since the last call (shows the proxy really learns).</summary>
    public double TakeMeanLoss() { lock (_accumulators) { double m = _lossCount == 0 ? double.NaN : _lossSum / _lossCount; _lossSum = 0; _lossCount = 0; return m; } }

    public string Description => $"{Options.Tables} tables × {Options.Rows:N0} rows × dim {Options.Dim} fp32, row-wise Adagrad, " +
                                 $"{Options.SamplesPerStep} samples × {Options.IdsPerSample} ids/table per step (Zipf {Options.ZipfExponent})";

    public SparseAdagradTrainerProxy(TrainerProxyOptions options)
    {
        options.Validate();
        Options = options;
        _tables = new EmbeddingTable[options.Tables];
        _accumulators = new float[options.Tables][];
        _idPools = new long[options.Tables][];
        try
        {
            for (int t = 0; t < options.Tables; t++)
            {
                _tables[t] = EmbeddingTable.Create($"trainer_{t}", options.Rows, options.Dim, EmbeddingStorage.Fp32);
                EmbeddingLookupWorkload.FillDeterministic(_tables[t], options.Seed + t);
                _accumulators[t] = new float[options.Rows];
                _idPools[t] = ZipfIds.Generate(options.Rows, options.ZipfExponent, 1 << 20, options.Seed * 17 + t);
            }
        }
        catch
        {
            foreach (var t in _tables) t?.Dispose();
            throw;
        }
    }

    public void Start(int threads, Action<int>? onThreadStart = null)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "at least one trainer thread");
        if (_threads.Count > 0) throw new InvalidOperationException("trainer already running");
        _gate.Dispose();
        _gate = new DutyCycleGate();
        lock (_tids) _tids.Clear();
        var started = new CountdownEvent(threads);
        Exception? failure = null;
        for (int i = 0; i < threads; i++)
        {
            int index = i;
            var gate = _gate;
            var thread = new Thread(() =>
            {
                try
                {
                    lock (_tids) _tids.Add(ThreadAffinity.IsAvailable ? ThreadAffinity.CurrentThreadId() : 0);
                    onThreadStart?.Invoke(index);
                }
                catch (Exception e) { failure = e; gate.Release(); }
                started.Signal();
                if (failure is null) Loop(index, gate);
            }) { IsBackground = true, Name = $"livedlrm-trainer-{i}" };
            _threads.Add(thread);
            thread.Start();
        }
        started.Wait();
        started.Dispose();
        if (failure is not null)
        {
            Stop();
            throw new InvalidOperationException($"trainer thread start hook failed: {failure.Message}", failure);
        }
    }

    /// <summary>Runs <paramref name="steps"/> steps on the calling thread and returns their mean log-loss (tests:
    /// the sequence is deterministic for a given seed).</summary>
    internal double TrainSteps(int steps, int seed)
    {
        var rng = new Random(seed);
        var pooled = new float[Options.Dim];
        double loss = 0;
        for (int i = 0; i < steps; i++)
            for (int s = 0; s < Options.SamplesPerStep; s++) loss += TrainSample(rng, pooled);
        return loss / (steps * (double)Options.SamplesPerStep);
    }

    void Loop(int index, DutyCycleGate gate)
    {
        var rng = new Random(Options.Seed * 1000 + index);
        var pooled = new float[Options.Dim];
        do
        {
            long t0 = Stopwatch.GetTimestamp();
            double loss = 0;
            for (int s = 0; s < Options.SamplesPerStep; s++) loss += TrainSample(rng, pooled);
            Interlocked.Add(ref _samples, Options.SamplesPerStep);
            lock (_accumulators) { _lossSum += loss; _lossCount += Options.SamplesPerStep; }
            if (!gate.AfterStep(Stopwatch.GetTimestamp() - t0)) break;
        } while (true);
    }

    /// <summary>One sample: ids per table from the Zipf pool, label = parity of the first id (a learnable function
    /// of the input), p = σ(Σ_t Σ_k pooled_t[k]), then for every row in every bag g = (p − y)·1 per component,
    /// row-wise Adagrad: G += mean(g²), row −= lr·g/√(G + ε). Threads race on shared hot rows like Hogwild.</summary>
    double TrainSample(Random rng, float[] pooled)
    {
        int n = Options.IdsPerSample;
        double logit = 0;
        int label = 0;
        Span<int> starts = stackalloc int[_tables.Length];
        for (int t = 0; t < _tables.Length; t++)
        {
            var ids = _idPools[t];
            starts[t] = rng.Next(ids.Length - n + 1);
            if (t == 0) label = (int)(ids[starts[0]] & 1);
            Array.Clear(pooled);
            for (int j = 0; j < n; j++)
            {
                var row = MemoryMarshal.Cast<byte, float>(_tables[t].StoredRow(ids[starts[t] + j]));
                for (int k = 0; k < row.Length; k++) pooled[k] += row[k];
            }
            for (int k = 0; k < pooled.Length; k++) logit += pooled[k];
        }
        double p = 1 / (1 + Math.Exp(-logit));
        float g = (float)(p - label);
        double loss = -Math.Log(Math.Clamp(label == 1 ? p : 1 - p, 1e-7, 1));
        for (int t = 0; t < _tables.Length; t++)
        {
            var ids = _idPools[t];
            var acc = _accumulators[t];
            for (int j = 0; j < n; j++)
            {
                long id = ids[starts[t] + j];
                var row = MemoryMarshal.Cast<byte, float>(_tables[t].StoredRow(id));
                // d logit / d row[k] = 1, so the gradient is g in every component; mean(g²) = g².
                float G = acc[id] += g * g;
                float step = Options.LearningRate * g / (MathF.Sqrt(G) + 1e-6f);
                for (int k = 0; k < row.Length; k++) row[k] -= step;
            }
        }
        return loss;
    }

    public void Stop()
    {
        _gate.Release();
        foreach (var t in _threads) t.Join();
        _threads.Clear();
    }

    public void Dispose()
    {
        Stop();
        _gate.Dispose();
        foreach (var t in _tables) t.Dispose();
    }
}
