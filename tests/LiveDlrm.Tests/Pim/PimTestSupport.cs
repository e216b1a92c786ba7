using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>Small tables, profiles and the comparison with the scalar reference shared by the PIM tests.</summary>
static class PimTestSupport
{
    public static void RequireLibrary()
    {
        if (!PimDevice.IsAvailable)
            Assert.Fail("liblivedlrm_pim.so is not next to the tests: build native/ with ./build.sh build");
    }

    /// <summary>For tests of the project's emulation itself (its messages, its test kernels).</summary>
    public static void RequireEmulation()
    {
        RequireLibrary();
        if (PimDevice.BuiltWithSdk) Assert.Ignore("liblivedlrm_pim was built against the UPMEM SDK; this tests the emulation");
    }

    /// <summary>The backend lookups are tested on: the emulation, or the SDK's simulator in an SDK build.</summary>
    public static PimBackendKind Backend => PimDevice.BuiltWithSdk ? PimBackendKind.Simulator : PimBackendKind.Emulated;

    public static string KernelDir => AppContext.BaseDirectory;

    /// <summary>Values in [-1, 1) from a fixed seed.</summary>
    public static EmbeddingTable RandomTable(string name, long rows, int dim, int seed = 7)
    {
        var rng = new Random(seed);
        var values = new float[rows * dim];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        return EmbeddingTable.FromFp32(name, values, dim, EmbeddingStorage.Fp32);
    }

    /// <summary>|pim - reference| ≤ 1e-6 · Σ|terms| per element (terms weighted when <paramref name="weights"/> are
    /// given): the bound for the same sum in another order.</summary>
    public static void AssertSumsMatch(EmbeddingTable table, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, float[] actual, float[] expected, string what,
                                       ReadOnlySpan<float> weights = default)
    {
        int dim = table.Dim;
        var row = new float[dim];
        for (int b = 0; b < offsets.Length - 1; b++)
        {
            var magnitude = new double[dim];
            for (long i = offsets[b]; i < offsets[b + 1]; i++)
            {
                table.ReadRow(indices[(int)i], row);
                double w = weights.IsEmpty ? 1 : Math.Abs(weights[(int)i]);
                for (int d = 0; d < dim; d++) magnitude[d] += w * Math.Abs(row[d]);
            }
            for (int d = 0; d < dim; d++)
            {
                double diff = Math.Abs(actual[b * dim + d] - expected[b * dim + d]);
                if (diff > 1e-6 * magnitude[d] + 1e-30)
                    Assert.Fail($"{what}: bag {b} column {d}: PIM {actual[b * dim + d]:R} vs reference {expected[b * dim + d]:R} (|diff| {diff:E2} > 1e-6 x {magnitude[d]:F3})");
            }
        }
    }
}
