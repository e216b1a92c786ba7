using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using TorchSharp;

namespace LiveDlrm.Tests.Model;

/// <summary>Small models and batches shared by the model, training and checkpoint tests.</summary>
static class TinyDlrm
{
    /// <summary>2 dense features, d = 2, tables A (3 rows, sum) and B (4 rows, mean), top = one linear layer.</summary>
    public static DlrmConfig HandConfig(EmbeddingStorage storage = EmbeddingStorage.Fp32) => new(2, [2], [1],
        [new DlrmTableConfig("A", 3, 2, PoolingMode.Sum, storage), new DlrmTableConfig("B", 4, 2, PoolingMode.Mean, storage)]);

    /// <summary>The hand model: explicit weights the tests compute with by hand.</summary>
    public static DlrmModel HandModel()
    {
        TorchRuntime.EnsureInitialised();
        var config = HandConfig();
        var a = EmbeddingTable.FromFp32("A", [1, 0, 0, 1, 0.5f, 0.5f], 2, EmbeddingStorage.Fp32);
        var b = EmbeddingTable.FromFp32("B", [1, 1, 2, 0, 0, -1, 0.25f, 0.5f], 2, EmbeddingStorage.Fp32);
        var dense = new DlrmDenseNet(config);
        using (torch.no_grad())
        {
            dense.BottomLayers[0].weight!.copy_(torch.tensor(new float[] { 1, -1, 0.5f, 2 }).reshape(2, 2));
            dense.BottomLayers[0].bias!.copy_(torch.tensor(new float[] { 0.1f, -0.2f }));
            dense.TopLayers[0].weight!.copy_(torch.tensor(new float[] { 0.3f, -0.2f, 0.1f, 0.05f, -0.4f }).reshape(1, 5));
            dense.TopLayers[0].bias!.copy_(torch.tensor(new float[] { 0.25f }));
        }
        return new DlrmModel(config, [a, b], dense);
    }

    public static EventBatchLayout Layout(DlrmConfig config) =>
        new(config.DenseFeatures, config.Tables.Select(t => new SparseFeatureLayout(t.Name, t.Name, t.Rows)).ToArray());

    /// <summary>Three events: (dense [1, 2], A {0, 2}, B {1, 3}), (dense [0.5, −1], A {}, B {2}), (dense [0, 0], A {1}, B {0, 0}).</summary>
    public static EventBatch HandBatch(DlrmConfig config)
    {
        var batch = new EventBatch(Layout(config), 8);
        Add(batch, [1, 2], [0, 2], [1, 3], 1);
        Add(batch, [0.5f, -1], [], [2], 0);
        Add(batch, [0, 0], [1], [0, 0], 1);
        return batch;
    }

    public static void Add(EventBatch batch, float[] dense, long[] a, long[] b, float label)
    {
        int row = batch.AddEvent(label, 0);
        dense.CopyTo(batch.DenseRowForWrite(row));
        foreach (long i in a) batch.AddIndex(0, i);
        foreach (long i in b) batch.AddIndex(1, i);
    }

    /// <summary>A random batch for any config: dense N(0,1)-ish, 1–3 indices per bag, labels 0/1.</summary>
    public static EventBatch RandomBatch(DlrmConfig config, int count, int seed)
    {
        var random = new Random(seed);
        var batch = new EventBatch(Layout(config), count, 3);
        for (int e = 0; e < count; e++)
        {
            int row = batch.AddEvent(random.Next(2), e, e);
            var d = batch.DenseRowForWrite(row);
            for (int k = 0; k < d.Length; k++) d[k] = (float)(random.NextDouble() * 2 - 1);
            for (int t = 0; t < config.Tables.Count; t++)
            {
                int n = 1 + random.Next(3);
                for (int j = 0; j < n; j++) batch.AddIndex(t, random.NextInt64(config.Tables[t].Rows));
            }
        }
        return batch;
    }

    public static DlrmConfig SmallConfig(EmbeddingStorage storage = EmbeddingStorage.Fp32, bool self = false) => new(4, [8, 4], [8, 1],
        [new DlrmTableConfig("t0", 50, 4, PoolingMode.Sum, storage), new DlrmTableConfig("t1", 20, 4, PoolingMode.Mean, storage),
         new DlrmTableConfig("t2", 7, 4, PoolingMode.Sum, storage)], self);
}
