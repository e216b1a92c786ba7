using LiveDlrm.Model;
using LiveDlrm.Pim;
using LiveDlrm.Tests.Model;

namespace LiveDlrm.Tests.Pim;

/// <summary>The DLRM model serving its embedding lookups from the PIM backend (the emulation here): the backend is
/// a configuration of the model, and the scores equal those of the CPU kernels up to summation order.</summary>
public class PimModelServingTests
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
}
