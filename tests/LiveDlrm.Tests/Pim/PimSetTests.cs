using System.Diagnostics;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>One DPU set serving several tables in one launch, the int32 kernel, batched row updates.</summary>
internal class PimSetTests
{
    const int Dpus = 16;

    static AccessProfile Zipf(long rows, int seed, int pooling = 12) => AccessProfile.Zipf(rows, 1.05, batches: 2, bagsPerBatch: 48, pooling, seed);

    [Test]
    public void ABatchOverSeveralTablesIsOneLaunchAndMatchesTheReference()
    {
        PimTestSupport.RequireLibrary();
        using var a = PimTestSupport.RandomTable("a", 2000, 16, seed: 1);
        using var b = PimTestSupport.RandomTable("b", 500, 200, seed: 2);   // two column tiles
        using var c = PimTestSupport.RandomTable("c", 3000, 8, seed: 3);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, DpusPerTable = Dpus });
        backend.Load(a, PimPartitioner.Build(PimStrategy.CacheAware, Zipf(a.Rows, 1), a.Dim, Dpus));
        backend.Load(b, PimPartitioner.Build(PimStrategy.UniformRowWise, Zipf(b.Rows, 2), b.Dim, Dpus));
        backend.Load(c, PimPartitioner.Build(PimStrategy.NonUniform, Zipf(c.Rows, 3), c.Dim, Dpus));
        Assert.That(backend.DeviceCount, Is.EqualTo(1), "plans over the same DPU count share one set");
        var tables = new[] { a, b, c };
        var batches = tables.Select((t, i) => Zipf(t.Rows, 10 + i).Batches[0]).ToArray();
        var rng = new Random(5);
        var weights = batches[2].Indices.Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var starts = new int[3];
        for (int i = 1; i < 3; i++) starts[i] = starts[i - 1] + batches[i - 1].Bags * tables[i - 1].Dim;
        var output = new float[starts[2] + batches[2].Bags * c.Dim];
        var lookups = new List<TableLookup>
        {
            new(a, batches[0].Indices, batches[0].Offsets, starts[0]),
            new(b, batches[1].Indices, batches[1].Offsets, starts[1], PoolingMode.Mean),
            new(c, batches[2].Indices, batches[2].Offsets, starts[2], PoolingMode.WeightedSum, weights),
        };
        long launches = backend.Stats(a).Launches;
        backend.ForwardTables(lookups, output);
        Assert.That(backend.Stats(a).Launches - launches, Is.EqualTo(1), "three tables, one launch");
        var modes = new[] { PoolingMode.Sum, PoolingMode.Mean, PoolingMode.WeightedSum };
        for (int i = 0; i < 3; i++)
        {
            var actual = output.AsSpan(starts[i], batches[i].Bags * tables[i].Dim).ToArray();
            var expected = new float[actual.Length];
            EmbeddingBagReference.Forward(tables[i], batches[i].Indices, batches[i].Offsets, expected, modes[i], i == 2 ? weights : default);
            if (modes[i] == PoolingMode.Mean) Assert.That(actual, Is.EqualTo(expected).Within(1e-5), "Mean");
            else PimTestSupport.AssertSumsMatch(tables[i], batches[i].Indices, batches[i].Offsets, actual, expected, tables[i].Name, i == 2 ? weights : default);
        }

        // The same table twice: a second launch, same sums.
        var twice = new float[2 * batches[0].Bags * a.Dim];
        launches = backend.Stats(a).Launches;
        backend.ForwardTables([lookups[0], lookups[0] with { OutputStart = batches[0].Bags * a.Dim }], twice);
        Assert.That(backend.Stats(a).Launches - launches, Is.EqualTo(2), "a launch names each table once");
        Assert.That(twice.AsSpan(batches[0].Bags * a.Dim).ToArray(), Is.EqualTo(twice.AsSpan(0, batches[0].Bags * a.Dim).ToArray()));
        Assert.That(twice.AsSpan(0, batches[0].Bags * a.Dim).ToArray(), Is.EqualTo(output.AsSpan(0, batches[0].Bags * a.Dim).ToArray()));

        // Bad input in the last lookup: refused before anything is sent or written.
        var badIndices = batches[2].Indices.ToArray();
        badIndices[^1] = c.Rows;
        var untouched = Enumerable.Repeat(7f, output.Length).ToArray();
        launches = backend.Stats(a).Launches;
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => backend.ForwardTables([lookups[0], lookups[1], lookups[2] with { Indices = badIndices }], untouched));
        Assert.That(error!.Message, Does.Contain("'c'"));
        Assert.That(untouched, Is.All.EqualTo(7f));
        Assert.That(backend.Stats(a).Launches, Is.EqualTo(launches));
        // Overlapping output ranges are refused too.
        Assert.Throws<ArgumentException>(() => backend.ForwardTables([lookups[0], lookups[1] with { OutputStart = 1 }], output));
    }

    /// <summary>Σ of the tables' fixed-point values, converted once: what the int32 kernel must return bit for bit.</summary>
    static float[] ExactIntegerSums(EmbeddingTable table, double scale, long[] indices, long[] offsets)
    {
        int dim = table.Dim;
        var row = new float[dim];
        var result = new float[(offsets.Length - 1) * dim];
        for (int bag = 0; bag < offsets.Length - 1; bag++)
        {
            var sum = new long[dim];
            for (long i = offsets[bag]; i < offsets[bag + 1]; i++)
            {
                table.ReadRow(indices[i], row);
                for (int d = 0; d < dim; d++) sum[d] += (long)Math.Round(row[d] / scale, MidpointRounding.ToEven);
            }
            for (int d = 0; d < dim; d++) result[bag * dim + d] = (float)(sum[d] * scale);
        }
        return result;
    }

    [Test]
    public void TheInt32KernelIsExactAndWithinHalfAStepPerLookupOfTheFp32Kernel([Values] PimStrategy strategy)
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("int", 3000, 20, seed: 9);
        var profile = Zipf(table.Rows, 4);
        var plan = strategy == PimStrategy.CacheAware
            ? PimPartitioner.CacheAware(profile, table.Dim, Dpus, new PimPlanOptions { CacheBytes = 64 * 20 * 4, MinPairCount = 1 })
            : PimPartitioner.Build(strategy, profile, table.Dim, Dpus);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, Precision = PimPrecision.Int32 });
        backend.Load(table, plan);
        double scale = backend.ScaleOf(table);
        Assert.That(scale, Is.EqualTo(2.0 * 1.0 / (1 << 23)).Within(1e-3 * scale), "2 max|w| maps to 2^23 (values are in [-1, 1))");
        foreach (var batch in new[] { profile.Batches[1], Zipf(table.Rows, 21).Batches[0] })
        {
            var actual = new float[batch.Bags * table.Dim];
            backend.Forward(table, batch.Indices, batch.Offsets, actual);
            // Exact: the integer sum, in any order and over any placement (pairs, cache, replicas), converted once.
            Assert.That(actual, Is.EqualTo(ExactIntegerSums(table, scale, batch.Indices, batch.Offsets)), $"{strategy}: int32 sums are exact");
            // Bounded against the fp32 CPU kernel: half a step per lookup, plus fp32 rounding of the CPU sum.
            var cpu = new float[actual.Length];
            EmbeddingBag.Forward(table, batch.Indices, batch.Offsets, cpu);
            for (int bag = 0; bag < batch.Bags; bag++)
            {
                long n = batch.Offsets[bag + 1] - batch.Offsets[bag];
                for (int d = 0; d < table.Dim; d++)
                {
                    double bound = n * scale / 2 + 1e-6 * n + 1e-30;
                    Assert.That(Math.Abs(actual[bag * table.Dim + d] - cpu[bag * table.Dim + d]), Is.LessThanOrEqualTo(bound), $"{strategy} bag {bag} col {d}");
                }
            }
        }
    }

    [Test]
    public void LongInt32BagsAreSplitSoNoDpuPartialOverflows()
    {
        PimTestSupport.RequireLibrary();
        // Every value at the top of the range: a 1,000-item bag on one DPU would need 2^33 in one int32 partial.
        var values = new float[64 * 4];
        Array.Fill(values, 0.75f);
        using var table = EmbeddingTable.FromFp32("long", values, 4, EmbeddingStorage.Fp32);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, Precision = PimPrecision.Int32, DpusPerTable = 2 });
        long[] indices = Enumerable.Repeat(3L, 1000).ToArray();
        var output = new float[4];
        backend.Forward(table, indices, [0, 1000], output);
        Assert.That(output, Is.EqualTo(ExactIntegerSums(table, backend.ScaleOf(table), indices, [0, 1000])));
        Assert.That(output[0], Is.EqualTo(750f).Within(1e-3));
        Assert.Throws<ArgumentException>(() => backend.Forward(table, [1, 2], [0, 2], output, PoolingMode.WeightedSum, [1f, 2f]),
                                         "weighted sums need an fp32 table");
    }

    [Test]
    public void BatchedAndPerSlotUpdatesLandTheSameAndBatchedIsOneLaunch([Values] PimPrecision precision)
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("upd", 4000, 24, seed: 12);
        var profile = Zipf(table.Rows, 6);
        var plan = PimPartitioner.CacheAware(profile, table.Dim, Dpus, new PimPlanOptions { CacheBytes = 64 * 24 * 4, MinPairCount = 1 });
        Assert.That(plan.Pairs, Is.Not.Empty);
        using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimTestSupport.Backend, Precision = precision });
        backend.Load(table, plan);
        var rng = new Random(3);
        var row = new float[table.Dim];
        foreach (bool perSlot in new[] { false, true })
        {
            // Change 1,500 rows (cached, paired, replicated ones included) and push them.
            var rows = Enumerable.Range(0, 1500).Select(_ => (long)rng.Next((int)table.Rows)).Concat(plan.CachedRows.Take(20)).Concat(plan.Pairs.Take(20).Select(p => p.A)).ToArray();
            foreach (long r in rows)
            {
                for (int d = 0; d < row.Length; d++) row[d] = (float)(rng.NextDouble() * 2 - 1);
                table.WriteRow(r, row);
            }
            var before = backend.Stats(table);
            backend.UpdateRows(table, rows, perSlot);
            var after = backend.Stats(table);
            Assert.That(after.UpdateLaunches - before.UpdateLaunches, Is.EqualTo(perSlot ? 0 : 1), perSlot ? "per slot: no launch" : "batched: one round");
            foreach (var batch in profile.Batches)
            {
                var actual = new float[batch.Bags * table.Dim];
                var expected = new float[actual.Length];
                backend.Forward(table, batch.Indices, batch.Offsets, actual);
                EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
                if (precision == PimPrecision.Fp32) PimTestSupport.AssertSumsMatch(table, batch.Indices, batch.Offsets, actual, expected, $"after {(perSlot ? "per-slot" : "batched")} update");
                else Assert.That(actual, Is.EqualTo(ExactIntegerSums(table, backend.ScaleOf(table), batch.Indices, batch.Offsets)));
            }
        }
    }

    [Test]
    public void AnInt32RowThatOutgrowsTheScaleReloadsTheTable()
    {
        PimTestSupport.RequireLibrary();
        using var table = PimTestSupport.RandomTable("grow", 256, 8, seed: 4);
        using var device = PimDevice.Open(4, PimTestSupport.Backend);
        var plan = PimPartitioner.UniformRowWise(table.Rows, table.Dim, 4);
        device.Load(0, table, plan, PimPrecision.Int32);
        double before = device.Scale(0);
        table.WriteRow(7, Enumerable.Repeat(40f, 8).ToArray());   // 40 x the old maximum
        device.UpdateRows(0, table, [7]);
        Assert.That(device.RangeReloads, Is.EqualTo(1));
        Assert.That(device.Scale(0), Is.GreaterThan(before * 30));
        var output = new float[8];
        device.LookupSum(0, [7, 7], [0, 2], output);
        Assert.That(output, Is.All.EqualTo(80f).Within(1e-3));
    }

    /// <summary>A push that fails after every DPU's buffer was prepared leaves them prepared (SDK semantics); the shim
    /// must clear them, or the next transfer fails with DPU_ERR_TRANSFER_ALREADY_SET instead of its own error.</summary>
    [Test]
    public void AFailedPushClearsThePreparedBuffers()
    {
        PimTestSupport.RequireEmulation();
        using var table = PimTestSupport.RandomTable("clear", 64, 8);
        // The DMA probe kernel has no pim_table: the table push fails after the buffers were prepared.
        using var device = PimDevice.Open(2, PimBackendKind.Emulated, Path.Combine(PimTestSupport.KernelDir, "livedlrm_pim_dma_probe.dpu"));
        var plan = PimPartitioner.UniformRowWise(64, 8, 2);
        for (int attempt = 0; attempt < 2; attempt++)
        {
            var e = Assert.Throws<PimException>(() => device.Load(table, plan))!;
            Assert.That(e.Message, Does.Contain("dpu_push_xfer (table)").And.Contain("unknown symbol").And.Contain("pim_table"), $"attempt {attempt}");
            Assert.That(e.Message, Does.Not.Contain("already prepared"));
        }
    }

    [Test]
    public void AutoOnTheEmulatedBuildIsTheEmulationAndSaysSo()
    {
        PimTestSupport.RequireEmulation();
        var log = new List<string>();
        using var device = PimDevice.Open(2, PimBackendKind.Auto, logger: new ListLogger(log));
        Assert.That(device.Backend, Is.EqualTo(PimBackendKind.Emulated));
        Assert.That(log, Has.Some.Contains("backend Emulated (auto)"));
    }

    [Test]
    public void TheRealKernelHasNoRaceUnderRandomisedTaskletInterleavings()
    {
        PimTestSupport.RequireEmulation();
        using var table = PimTestSupport.RandomTable("yield", 2000, 16, seed: 8);
        var profile = Zipf(table.Rows, 7);
        foreach (int seed in new[] { 3, 17 })
        {
            using var backend = new PimEmbeddingBackend(new PimBackendOptions { Backend = PimBackendKind.Emulated, Emulation = $"emuYield={seed}", DpusPerTable = 8 });
            backend.Load(table, PimPartitioner.Build(PimStrategy.CacheAware, profile, table.Dim, 8));
            var batch = profile.Batches[1];
            var actual = new float[batch.Bags * table.Dim];
            var expected = new float[actual.Length];
            backend.Forward(table, batch.Indices, batch.Offsets, actual);
            EmbeddingBagReference.Forward(table, batch.Indices, batch.Offsets, expected);
            PimTestSupport.AssertSumsMatch(table, batch.Indices, batch.Offsets, actual, expected, $"emuYield={seed}");
            backend.UpdateRows(table, Enumerable.Range(0, 300).Select(i => (long)i).ToArray());
        }
    }
}

/// <summary>The shim is one source for the SDK and the emulation: it compiles warning-free against the emulated
/// &lt;dpu.h&gt;, and the emulated host API keeps the SDK's transfer rules.</summary>
internal class PimOneCodePathTests
{
    static string? RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "native", "pim", "host", "pim_host.c"))) return dir.FullName;
        return null;
    }

    static (int Code, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(); Assert.Fail($"{file} did not finish"); }
        return (p.ExitCode, output);
    }

    [Test]
    public void TheShimCompilesAgainstTheEmulatedHeadersWithWerror()
    {
        string root = RepoRoot() ?? throw new IgnoreException("sources not found above the test binaries");
        string pim = Path.Combine(root, "native", "pim");
        var (code, output) = Run("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-DPIM_BUILD_KIND=0",
                                 "-I", Path.Combine(pim, "emu", "include"), "-I", Path.Combine(pim, "common"), Path.Combine(pim, "host", "pim_host.c"));
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Is.Empty);
    }

    [Test]
    public void PrepareAndPushFollowTheSdkRules()
    {
        PimTestSupport.RequireEmulation();
        string root = RepoRoot() ?? throw new IgnoreException("sources not found above the test binaries");
        string pim = Path.Combine(root, "native", "pim");
        string dir = Directory.CreateTempSubdirectory("pim-api-").FullName;
        try
        {
            string source = Path.Combine(dir, "api.c"), exe = Path.Combine(dir, "api");
            File.WriteAllText(source, $$"""
                #include <dpu.h>
                #include <stdio.h>
                int main(void)
                {
                    struct dpu_set_t set, dpu;
                    uint32_t i, n = 0;
                    if (dpu_alloc(3, NULL, &set) != DPU_OK) return 10;
                    if (dpu_load(set, "{{Path.Combine(PimTestSupport.KernelDir, "livedlrm_pim_dma_probe.dpu")}}", NULL) != DPU_OK) return 11;
                    if (set.kind != DPU_SET_RANKS || set.list.nr_ranks != 1) return 12;
                    DPU_FOREACH(set, dpu, i) { if (dpu.kind != DPU_SET_DPU || i != n) return 13; n++; }
                    uint64_t buf[3][2] = { { 1, 2 }, { 3, 4 }, { 5, 6 } };
                    DPU_FOREACH(set, dpu, i) if (dpu_prepare_xfer(dpu, buf[i]) != DPU_OK) return 14;
                    DPU_FOREACH(set, dpu, i) { printf("again=%d\n", (int)dpu_prepare_xfer(dpu, buf[i])); break; }
                    printf("push-unknown=%d\n", (int)dpu_push_xfer(set, DPU_XFER_TO_DPU, "no_such_symbol", 0, 16, DPU_XFER_DEFAULT));
                    DPU_FOREACH(set, dpu, i) { printf("still-set=%d\n", (int)dpu_prepare_xfer(dpu, buf[i])); break; }
                    if (dpu_prepare_xfer(set, NULL) != DPU_OK) return 15;
                    DPU_FOREACH(set, dpu, i) if (dpu_prepare_xfer(dpu, buf[i]) != DPU_OK) return 16;
                    printf("push=%d\n", (int)dpu_push_xfer(set, DPU_XFER_TO_DPU, "probe_wram", 0, 16, DPU_XFER_DEFAULT));
                    uint64_t back[2] = { 0, 0 };
                    DPU_FOREACH(set, dpu, i) if (i == 2) dpu_copy_from(dpu, "probe_wram", 0, back, sizeof back);
                    printf("dpu2=%llu,%llu\n", (unsigned long long)back[0], (unsigned long long)back[1]);
                    char *text = dpu_error_to_string(DPU_ERR_TRANSFER_ALREADY_SET);
                    printf("text=%s\n", text);
                    free(text);
                    return dpu_free(set) == DPU_OK ? 0 : 17;
                }
                """);
            var (cc, ccOut) = Run("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", Path.Combine(pim, "emu", "include"), source, "-o", exe,
                                  "-L", PimTestSupport.KernelDir, "-llivedlrm_pim", "-Wl,-rpath," + PimTestSupport.KernelDir);
            Assert.That(cc, Is.Zero, ccOut);
            var (code, output) = Run(exe);
            Assert.That(code, Is.Zero, output);
            Assert.That(output, Does.Contain("again=13\n"), "DPU_ERR_TRANSFER_ALREADY_SET is 13 in SDK 2025.1");
            Assert.That(output, Does.Contain("push-unknown=29\n"), "DPU_ERR_UNKNOWN_SYMBOL");
            Assert.That(output, Does.Contain("still-set=13\n"), "a failed push leaves the buffers prepared");
            Assert.That(output, Does.Contain("push=0\n").And.Contain("dpu2=5,6\n"));
            Assert.That(output, Does.Contain("text=a transfer buffer is already prepared"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
