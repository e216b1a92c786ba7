using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Online;
using LiveDlrm.Runtime;

namespace LiveDlrm.Tests.Online;

/// <summary>A small live model (two tables big enough for an adapter, one too small) with its adapters and trainer.</summary>
sealed class OnlineTestModel : IDisposable
{
    public LiveModel Live { get; }
    public DlrmModel Model => Live.Model;
    public IReadOnlyList<TableAdapter?> Adapters => Live.Adapters;
    public OnlineTrainer Trainer => Live.Trainer;

    /// <summary>The same tables and dense features with a deeper top MLP ([72, 8, 1]): two ReLU layers to backpropagate
    /// through, one wide enough (72 inputs to the next) for the reuse backward's four-vector register blocks and a remainder.</summary>
    public static DlrmConfig DeepConfig(bool selfInteraction = false, bool idOnly = false) =>
        idOnly ? new(0, [], [72, 8, 1], Config().Tables, selfInteraction) : new(3, [8, 8], [72, 8, 1], Config().Tables, selfInteraction);

    public static DlrmConfig Config() => new(3, [8, 8], [8, 1],
        [new DlrmTableConfig("big", 400, 8, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("mid", 200, 8, PoolingMode.Mean, EmbeddingStorage.Fp32),
         new DlrmTableConfig("tiny", 3, 8, PoolingMode.Sum, EmbeddingStorage.Fp32)]);

    public static OnlineTrainerOptions Options(bool reuse = true, int queue = 1024, int batch = 16) => new()
    {
        BatchSize = batch,
        QueueCapacity = queue,
        MaxBatchWait = null,
        ReuseForward = reuse,
        Adapter = new AdapterOptions { InitialRank = 2, MaxRank = 4, BudgetFraction = 0.4, LearningRateA = 0.2f, LearningRateB = 0.05f },
    };

    public OnlineTestModel(OnlineTrainerOptions? options = null, int seed = 3, DlrmConfig? config = null, int ringCapacity = 4096)
    {
        TorchRuntime.EnsureInitialised();
        Live = LiveModel.Create(config ?? Config(), seed,
            new LiveModelOptions { Trainer = options ?? Options(), RingCapacity = ringCapacity, BaseBackend = ModelCopy.InlineCpuBackend });
    }

    public static EventBatchLayout Layout(int dense = 3) =>
        new(dense, Config().Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());

    /// <summary>Events whose label is decided by the "big" row (even row = click), so an adapter can learn it.</summary>
    public static EventBatch Batch(int count, int seed, long firstRequest = 0, int dense = 3)
    {
        var random = new Random(seed);
        var batch = new EventBatch(Layout(dense), count, 2);
        for (int e = 0; e < count; e++)
        {
            long big = random.Next(40);
            int row = batch.AddEvent(big % 2 == 0 ? 1 : 0, 1000 + e, firstRequest + e);
            var d = batch.DenseRowForWrite(row);
            for (int k = 0; k < d.Length; k++) d[k] = (float)random.NextDouble();
            batch.AddIndex(0, big);
            batch.AddIndex(1, random.Next(200));
            batch.AddIndex(1, random.Next(200));
            batch.AddIndex(2, random.Next(3));
        }
        return batch;
    }

    public static List<ServedEvent> Served(EventBatch batch) =>
        Enumerable.Range(0, batch.Count).Select(i => { var s = ServedEvent.FromBatch(batch, i, default, 8); return s; }).ToList();

    public void Dispose() => Live.Dispose();
}
