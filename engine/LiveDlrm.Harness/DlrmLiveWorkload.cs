using System.Diagnostics;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

using LiveDlrm.Scheduling;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Harness;

/// <summary>Shape of the real DLRM workload: the default synthetic stream and model, a base model trained on a
/// prefix of the stream, then Predict batches of <see cref="Batch"/> events through the LoRA adapters.</summary>
internal sealed record DlrmWorkloadOptions
{
    /// <summary>Events of the stream's prefix the base model is trained on (one pass; 0 = randomly initialised).</summary>
    public long BaseTrainEvents { get; init; } = 100_000;
    public int BaseTrainBatch { get; init; } = 512;
    /// <summary>Events per Predict request.</summary>
    public int Batch { get; init; } = 128;
    /// <summary>Distinct request batches drawn from the stream (after the prefix) and cycled through.</summary>
    public int RequestBatches { get; init; } = 64;
    public IReadOnlyList<int> BottomMlp { get; init; } = [32, 16];
    public IReadOnlyList<int> TopMlp { get; init; } = [64, 32, 1];
    public int ModelSeed { get; init; } = 7;
    public ulong StreamSeed { get; init; } = 1;
    public OnlineTrainerOptions OnlineTrainer { get; init; } = new();

    internal void Validate()
    {
        if (BaseTrainEvents < 0) throw new ArgumentOutOfRangeException(nameof(BaseTrainEvents), BaseTrainEvents, "base-train events must be ≥ 0");
        if (BaseTrainBatch < 1) throw new ArgumentOutOfRangeException(nameof(BaseTrainBatch), BaseTrainBatch, "base-train batch must be positive");
        if (Batch < 1) throw new ArgumentOutOfRangeException(nameof(Batch), Batch, "batch must be positive");
        if (RequestBatches < 1) throw new ArgumentOutOfRangeException(nameof(RequestBatches), RequestBatches, "request batches must be positive");
        OnlineTrainer.Validate();
    }
}

/// <summary>
/// DLRM inference as served live: the default synthetic model (<see cref="DlrmConfig.ForLayout"/> of the synthetic
/// stream's schema) trained for one pass over a prefix of the stream with <see cref="DlrmTrainer"/>, serving
/// <see cref="DlrmModel.Predict"/> through an <see cref="AdapterEmbeddingBackend"/> whose CPU kernels run on a
/// worker pool the plan pins. Its <see cref="Trainer"/> is the real <see cref="OnlineTrainer"/> on the same
/// adapters, fed labelled events from the stream, so adapters are trained and merged while requests are served.
/// </summary>
internal sealed class DlrmLiveWorkload : IInferenceWorkload
{
    public const string WorkloadName = "dlrm-live";

    readonly LiveModel _live;
    readonly EmbeddingWorkerPool _pool;
    readonly EventBatch[] _requests;
    readonly float[] _scores;
    int _next;

    public DlrmWorkloadOptions Options { get; }
    public string Name => WorkloadName;
    public string Description { get; }
    public IReadOnlyList<int> ThreadIds => _pool.ThreadIds;
    public IReadOnlyList<EmbeddingTable> Tables => _live.Model.Tables;
    public LiveModel Live => _live;
    public OnlineTrainerHost Trainer { get; }

    /// <param name="poolThreads">Dedicated embedding pool workers; the dispatch thread works too.</param>
    /// <param name="onWorkerStart">The plan's pinning hook for pool worker i.</param>
    public DlrmLiveWorkload(DlrmWorkloadOptions options, int poolThreads, Action<int>? onWorkerStart = null, ILogger? logger = null)
    {
        options.Validate();
        Options = options;
        TorchRuntime.EnsureInitialised();
        // Requests are timed on the dispatch thread: libtorch must not spread the MLPs over its own pool (which the
        // plan does not pin and which would compete with the trainer's steps).
        TorchSharp.torch.set_num_threads(1);
        _pool = new EmbeddingWorkerPool(poolThreads, onWorkerStart);
        using var source = new SyntheticEventSource(new SyntheticStreamConfig { Seed = options.StreamSeed });
        var layout = source.Schema.Layout;
        var config = DlrmConfig.ForLayout(layout, options.BottomMlp, options.TopMlp);
        string baseDescription;
        try
        {
            using (var baseModel = DlrmModel.Create(config, options.ModelSeed, new CpuEmbeddingBackend(_pool, ownsPool: false)))
            {
                baseDescription = TrainBase(baseModel, source, logger);
                _live = LiveModel.FromBase(baseModel, new LiveModelOptions
                {
                    Trainer = options.OnlineTrainer,
                    BaseBackend = () => new CpuEmbeddingBackend(_pool, ownsPool: false),
                });
            }
        }
        catch
        {
            _pool.Dispose();
            throw;
        }
        try
        {
            _requests = new EventBatch[options.RequestBatches];
            for (int i = 0; i < _requests.Length; i++)
            {
                _requests[i] = new EventBatch(layout, options.Batch);
                if (source.Read(_requests[i]) < options.Batch) throw new InvalidOperationException("the synthetic stream ended early");
            }
            _scores = new float[options.Batch];
            // The trainer's stream continues after the request batches: labelled events the model has not seen.
            Trainer = new OnlineTrainerHost(this, source.Config, options.BaseTrainEvents + (long)options.RequestBatches * options.Batch);
        }
        catch
        {
            _live.Dispose();
            _pool.Dispose();
            throw;
        }
        // The first Predicts pay one-off costs (libtorch kernel selection, scratch allocation, cold tables) of tens of
        // milliseconds; left in, they would set the harness's closed-loop capacity estimate and wreck the QPS search.
        for (int i = 0; i < 2 * _requests.Length; i++) Serve(i);
        int adapted = _live.Adapters.Count(a => a is not null);
        Description = $"DLRM {config.Tables.Count} tables ({_live.Model.TableBytes / (1 << 20)} MiB) dim {config.Dim}, bottom [{string.Join(",", options.BottomMlp)}], " +
                      $"top [{string.Join(",", options.TopMlp)}]; {baseDescription}; Predict of {options.Batch} synthetic events per request through LoRA adapters " +
                      $"on {adapted} table(s), {_pool.ThreadCount + 1} embedding thread(s) per request";
    }

    string TrainBase(DlrmModel model, SyntheticEventSource source, ILogger? logger)
    {
        if (Options.BaseTrainEvents == 0) return "base model randomly initialised";
        var sw = Stopwatch.StartNew();
        using var trainer = new DlrmTrainer(model, new DlrmTrainerOptions { Threads = 1 });
        var batch = new EventBatch(source.Schema.Layout, Options.BaseTrainBatch);
        long seen = 0;
        double loss = 0;
        int steps = 0;
        while (seen < Options.BaseTrainEvents)
        {
            int want = (int)Math.Min(Options.BaseTrainBatch, Options.BaseTrainEvents - seen);
            if (want < batch.Capacity) batch = new EventBatch(source.Schema.Layout, want);
            if (source.Read(batch) == 0) break;
            var step = trainer.Step(batch);
            seen += batch.Count;
            loss += step.Loss;
            steps++;
        }
        string text = $"base model trained one pass over {seen:N0} prefix events in {sw.Elapsed.TotalSeconds:F1} s (mean loss {loss / Math.Max(1, steps):F4})";
        logger?.LogInformation("dlrm-live: {Text}", text);
        return text;
    }

    // libtorch's OpenMP thread count is per calling thread: a new thread gets one OpenMP worker per PU, which on a
    // thread pinned to one PU spin-wait against each other (measured: 54 ms instead of 0.1 ms per request).
    [ThreadStatic] static bool t_torchSingleThreaded;

    internal static void UseOneTorchThreadHere()
    {
        if (t_torchSingleThreaded) return;
        TorchSharp.torch.set_num_threads(1);
        t_torchSingleThreaded = true;
    }

    public void Serve(long request)
    {
        UseOneTorchThreadHere();
        var batch = _requests[_next];
        if (++_next == _requests.Length) _next = 0;
        _live.Predict(batch, _scores);
    }

    /// <summary>Scores of the last request (for checks).</summary>
    internal ReadOnlySpan<float> LastScores => _scores;

    public void Dispose()
    {
        Trainer.Dispose();
        _live.Dispose();
        _pool.Dispose();
    }
}

/// <summary>
/// The colocated trainer of <see cref="DlrmLiveWorkload"/>: the live model's own <see cref="OnlineTrainer"/> (one
/// thread: adapters accept a single writer), plus a feeder thread that reads labelled events from the synthetic
/// stream and keeps about two batches queued for it — so the trainer is never starved and never far behind; the
/// feeder only produces what the trainer consumes, and is throttled with it. Both threads run <c>onThreadStart</c>
/// (the plan's trainer pinning) and are listed in <see cref="ThreadIds"/>.
/// </summary>
internal sealed class OnlineTrainerHost : ILatencyTrainer
{
    readonly DlrmLiveWorkload _workload;
    readonly OnlineTrainer _trainer;
    readonly SyntheticEventSource _stream;
    readonly EventBatch _feed;
    Thread? _feeder;
    int _feederTid;
    volatile bool _stopping;
    Exception? _feederFailure;

    internal OnlineTrainerHost(DlrmLiveWorkload workload, SyntheticStreamConfig stream, long skipEvents)
    {
        _workload = workload;
        _trainer = workload.Live.Trainer;
        _stream = new SyntheticEventSource(stream);
        var skip = new EventBatch(_stream.Schema.Layout, 4096);
        for (long left = skipEvents; left > 0;)
        {
            int n = _stream.Read(skip);
            if (n == 0) break;
            left -= n;
        }
        _feed = new EventBatch(_stream.Schema.Layout, workload.Options.OnlineTrainer.BatchSize);
    }

    public string Name => "online-lora-trainer";
    public string Description => $"OnlineTrainer (LoRA adapters, batch {_workload.Options.OnlineTrainer.BatchSize}, merges into the served tables) + 1 feeder thread reading labelled synthetic events";
    public int? MaxThreads => 1;
    public ITrainerThrottle Throttle => _feeder is not null ? _trainer.Throttle : throw new InvalidOperationException("the online trainer is not started");
    public long SamplesProcessed => _trainer.SamplesProcessed;
    public OnlineTrainer Trainer => _trainer;
    public IReadOnlyList<int> ThreadIds
    {
        get
        {
            var ids = _trainer.ThreadIds.ToList();
            int f = Volatile.Read(ref _feederTid);
            if (f != 0) ids.Add(f);
            return ids;
        }
    }

    public void Start(int threads, Action<int>? onThreadStart = null)
    {
        if (threads != 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "the online trainer runs one thread (adapters accept a single writer)");
        if (_feeder is not null) throw new InvalidOperationException("the online trainer host is already started");
        _stopping = false;
        _feederFailure = null;
        // The trainer thread runs its steps' torch ops itself (see UseOneTorchThreadHere), then the plan's pinning.
        _trainer.Start(1, i => { DlrmLiveWorkload.UseOneTorchThreadHere(); onThreadStart?.Invoke(i); });
        _feeder = new Thread(() => Feed(onThreadStart)) { Name = "livedlrm-trainer-feed", IsBackground = true };
        _feeder.Start();
    }

    void Feed(Action<int>? onThreadStart)
    {
        try
        {
            Volatile.Write(ref _feederTid, Numa.ThreadAffinity.IsAvailable ? Numa.ThreadAffinity.CurrentThreadId() : Environment.CurrentManagedThreadId);
            onThreadStart?.Invoke(0);
            int batch = _workload.Options.OnlineTrainer.BatchSize;
            while (!_stopping)
            {
                if (_trainer.QueueLength >= 2 * batch) { Thread.Sleep(1); continue; }
                if (_stream.Read(_feed) == 0) _stream.Reset();
                _trainer.Enqueue(_feed);
            }
        }
        catch (Exception e)
        {
            _feederFailure = e;
        }
    }

    public void Stop()
    {
        if (_feeder is null) return;
        _stopping = true;
        _feeder.Join();
        _feeder = null;
        Volatile.Write(ref _feederTid, 0);
        _trainer.Stop();
        if (_feederFailure is { } e) throw new InvalidOperationException("the trainer's feeder thread failed", e);
    }

    public void Dispose()
    {
        Stop();
        _stream.Dispose();
    }
}
