using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Pim;
using LiveDlrm.Tests.Model;

namespace LiveDlrm.Tests.Pim;

/// <summary>The DLRM model serving its embedding lookups from the PIM backend (the emulation here): the backend is
/// a configuration of the model, and the scores equal those of the CPU kernels up to summation order.</summary>
internal class PimModelServingTests
{
    [Test]
    public void DlrmModelServesItsLookupsFromPim()
    {
        PimTestSupport.RequireLibrary();
        var config = TinyDlrm.SmallConfig();
        var batch = TinyDlrm.RandomBatch(config, 64, 3);
        var log = new List<string>();
        using var pim = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, DpusPerTable = 4, Logger = new ListLogger(log) });
        using var onCpu = DlrmModel.Create(config, 7);
        using var onPim = DlrmModel.Create(config, 7, pim, ownsBackend: false);

        float[] expected = onCpu.Predict(batch), actual = onPim.Predict(batch);

        Assert.That(onPim.Backend.Name, Does.StartWith("pim-"));
        Assert.That(log.Count(l => l.Contains("loaded", StringComparison.Ordinal)), Is.EqualTo(config.Tables.Count), string.Join("\n", log));
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f), $"event {i}");
    }

    /// <summary>The model pools all its tables with one launch per batch (its tables share one DPU set), and each table's
    /// pooled block equals the CPU reference up to summation order.</summary>
    [Test]
    public void DlrmModelPoolsABatchOverAllTablesInOneLaunch()
    {
        PimTestSupport.RequireLibrary();
        var config = TinyDlrm.SmallConfig();
        var batch = TinyDlrm.RandomBatch(config, 64, 5);
        using var pim = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, DpusPerTable = 4 });
        using var onPim = DlrmModel.Create(config, 7, pim, ownsBackend: false);
        int tables = config.Tables.Count, block = batch.Count * config.Dim;
        Assert.That(tables, Is.GreaterThan(1));
        var pooled = new float[tables * block];
        onPim.Pool(batch, pooled);   // places the tables (first use)
        Assert.That(pim.DeviceCount, Is.EqualTo(1));

        long launches = pim.Stats(onPim.Tables[0]).Launches;
        Array.Fill(pooled, float.NaN);
        onPim.Pool(batch, pooled);
        Assert.That(pim.Stats(onPim.Tables[0]).Launches - launches, Is.EqualTo(1), $"{tables} tables, one launch");

        for (int t = 0; t < tables; t++)
        {
            var expected = new float[block];
            EmbeddingBagReference.Forward(onPim.Tables[t], batch.Indices(t).ToArray(), batch.Offsets(t).ToArray(), expected, config.Tables[t].Pooling);
            var actual = pooled.AsSpan(t * block, block).ToArray();
            if (config.Tables[t].Pooling == PoolingMode.Mean) Assert.That(actual, Is.EqualTo(expected).Within(1e-5), $"table {t}");
            else PimTestSupport.AssertSumsMatch(onPim.Tables[t], batch.Indices(t), batch.Offsets(t), actual, expected, $"table {t}");
        }
    }
}
