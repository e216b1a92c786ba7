using System.CommandLine;
using System.Diagnostics;
using LiveDlrm.CommandLine;
using LiveDlrm.Embeddings;
using LiveDlrm.Memory;

namespace LiveDlrm.Cli.Commands;

/// <summary>A short lookup demo (what <c>./build.sh run</c> does until the replay exists): builds tables, times
/// pooled lookups with uniform and Zipf ids, prints what it measured, and checks a batch against the scalar
/// reference. Also the prefetch-distance sweep used to tune the kernels (<c>--sweep-prefetch</c>).</summary>
internal sealed class DemoCommand : CliCommand
{
    readonly Option<long> _rows = Opt.Long("--rows", "table rows", 1_000_000, 1, 1L << 34);
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim", 64, 1, 4096);
    readonly Option<int> _pooling = Opt.Int("--pooling", "lookups per bag", 32, 0, 10_000);
    readonly Option<int> _batch = Opt.Int("--batch", "bags per lookup call", 2048, 1, 1 << 20);
    readonly Option<string?> _storage = Opt.Text("--storage", "comma list of fp32, fp16, int8", "fp32,fp16,int8", "LIST");
    readonly Option<string?> _dist = Opt.Text("--dist", "comma list of uniform, zipf", "uniform,zipf", "LIST");
    readonly Option<double> _zipf = Opt.Double("--zipf", "Zipf exponent", 1.05, 0.01, 10);
    readonly Option<double> _seconds = Opt.Double("--seconds", "timed seconds per case, split into 5 runs; the median run is reported", 1, 0.05, 3600);
    readonly Option<int> _threads = Opt.Int("--threads", "threads per lookup including the caller (default: processor count)", Environment.ProcessorCount, 1, 1024);
    readonly Option<int?> _prefetch = Opt.OptionalInt("--prefetch", "prefetch distance in rows (default: the tuned one, 0 = off)", 0, 1024);
    readonly Option<string?> _sweep = Opt.Text("--sweep-prefetch", "comma list of prefetch distances to time in turn (e.g. 0,4,8,16,32)", helpName: "LIST");
    readonly Option<bool> _noHugePages = Opt.Flag("--no-hugepages", "allocate large tables without the MADV_HUGEPAGE mapping (to measure its effect)");
    readonly Option<bool> _selfCheck = Opt.Flag("--self-check", "instead of timing: compare the kernels with the scalar reference over every row format, dims 1..256, every pooling, int/long indices, 1 and 2 threads; exit 1 on any mismatch");
    readonly Option<string?> _isa = Opt.Text("--isa", "scalar|vector128|vector256|vector512 (default: the widest supported)", helpName: "NAME");

    public DemoCommand() : base("demo", "time embedding-bag lookups (fp32/fp16/int8, uniform and Zipf ids) and check them against the reference")
    {
        Add(_rows); Add(_dim); Add(_pooling); Add(_batch); Add(_storage); Add(_dist); Add(_zipf); Add(_seconds); Add(_threads);
        Add(_prefetch); Add(_sweep); Add(_noHugePages); Add(_selfCheck); Add(_isa);
        _isa.CompletionSources.Add("scalar", "vector128", "vector256", "vector512");
    }

    protected override int Run(ParseResult result)
    {
        long rows = result.GetValue(_rows);
        int dim = result.GetValue(_dim);
        int pooling = result.GetValue(_pooling);
        int batch = result.GetValue(_batch);
        var storages = ParseList(result.GetValue(_storage)!, s => s switch
        {
            "fp32" => EmbeddingStorage.Fp32, "fp16" => EmbeddingStorage.Fp16, "int8" => EmbeddingStorage.Int8Rowwise,
            _ => throw new UsageException($"--storage: unknown '{s}' (fp32, fp16, int8)"),
        });
        var dists = ParseList(result.GetValue(_dist)!, s => s is "uniform" or "zipf" ? s : throw new UsageException($"--dist: unknown '{s}' (uniform, zipf)"));
        double zipfS = result.GetValue(_zipf);
        double seconds = result.GetValue(_seconds);
        int threads = result.GetValue(_threads);
        // -1 = the engine's per-storage default distance
        int prefetch = result.GetValue(_prefetch) ?? -1;
        var sweep = result.GetValue(_sweep) is { } list ? ParseList(list, s => int.TryParse(s, out int v) && v >= 0 ? v : throw new UsageException($"--sweep-prefetch: '{s}' is not a distance")) : [prefetch];
        string? isaName = result.GetValue(_isa);
        bool noHugePages = result.GetValue(_noHugePages);
        bool selfCheck = result.GetValue(_selfCheck);

        KernelIsa isa = EmbeddingKernels.SelectedIsa;
        if (isaName is not null && !Enum.TryParse(isaName, ignoreCase: true, out isa))
            throw new UsageException($"--isa: unknown '{isaName}' (scalar, vector128, vector256, vector512)");
        if (!EmbeddingKernels.IsSupported(isa)) throw new UsageException($"--isa: {isa} is not supported on this machine");
        using var forced = EmbeddingKernels.Force(isa);
        NativeBuffer.UseHugePages = !noHugePages;
        if (selfCheck)
        {
            var check = EmbeddingBagSelfCheck.Run();
            foreach (var f in check.Failures) Console.WriteLine($"MISMATCH {f}");
            Console.WriteLine($"self-check kernel={EmbeddingKernels.IsaName(check.Isa)} selected={EmbeddingKernels.IsaName(EmbeddingKernels.SelectedIsa)} cases={check.Cases} failures={check.Failures.Count}");
            return check.Failures.Count == 0 ? 0 : 1;
        }
        using var pool = new EmbeddingWorkerPool(threads - 1);

        Console.WriteLine($"livedlrm demo: {rows:N0} rows × dim {dim}, pooling {pooling}, batch {batch}, {threads} thread(s), kernel {EmbeddingKernels.IsaName(isa)}, timed {seconds:0.##} s per case (median of 5 runs)");
        // "per CPU-s" divides by the process's CPU time instead of wall time: on a machine shared with other jobs it
        // tracks the kernel's own cost when the wall-clock rate only shows how much CPU it was given.
        Console.WriteLine($"{"storage",-8} {"ids",-8} {"prefetch",8} {"M lookups/s",12} {"GB/s",8} {"ns/bag",8} {"M/CPU-s",8}  check");
        int failures = 0;
        var batches = new Dictionary<string, long[][]>();
        foreach (var dist in dists) batches[dist] = MakeBatches(rows, batch, pooling, dist, zipfS, count: 8, seed: 42);
        long[] offsets = new long[batch + 1];
        for (int b = 0; b <= batch; b++) offsets[b] = (long)b * pooling;
        var output = new float[batch * dim];

        foreach (var storage in storages)
        {
            var sw = Stopwatch.StartNew();
            using var table = BuildTable(rows, dim, storage);
            Console.WriteLine($"  built {table} in {sw.Elapsed.TotalSeconds:F1} s (huge pages advised: {table.HugePagesAdvised}, process AnonHugePages: {AnonHugePages()})");
            foreach (var dist in dists)
            {
                string check = Check(table, batches[dist][0], offsets, pool);
                if (check != "ok") failures++;
                // Distances are timed round-robin (one run of each per round, 5 rounds, median per distance) so
                // that load from other jobs on the machine spreads over all of them instead of favouring one.
                var wall = new double[sweep.Count][];
                var cpu = new double[sweep.Count][];
                for (int k = 0; k < sweep.Count; k++) { wall[k] = new double[5]; cpu[k] = new double[5]; }
                for (int round = 0; round < 5; round++)
                    for (int k = 0; k < sweep.Count; k++)
                    {
                        if (sweep[k] >= 0) EmbeddingKernels.PrefetchDistance = sweep[k];
                        else EmbeddingKernels.ResetPrefetchDistance();
                        (wall[k][round], cpu[k][round]) = TimeRun(table, batches[dist], offsets, output, pool, seconds / 5, warmUp: round == 0);
                    }
                for (int k = 0; k < sweep.Count; k++)
                {
                    double lookupsPerSecond = Median(wall[k]), perCpuSecond = Median(cpu[k]);
                    double gbs = lookupsPerSecond * table.RowStride / 1e9;
                    double nsPerBag = 1e9 / (lookupsPerSecond / Math.Max(1, pooling));
                    Console.WriteLine($"{Short(storage),-8} {dist,-8} {(sweep[k] >= 0 ? sweep[k] : table.PrefetchDistance),8} {lookupsPerSecond / 1e6,12:F1} {gbs,8:F2} {nsPerBag,8:F0} {perCpuSecond / 1e6,8:F1}  {check}");
                }
            }
        }
        EmbeddingKernels.ResetPrefetchDistance();
        return failures == 0 ? 0 : 1;
    }

    /// <summary>How much of the process is backed by transparent huge pages (from /proc/self/smaps_rollup).</summary>
    static string AnonHugePages()
    {
        try
        {
            var line = File.ReadLines("/proc/self/smaps_rollup").FirstOrDefault(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal));
            return line is null ? "n/a" : line["AnonHugePages:".Length..].Trim();
        }
        catch (IOException) { return "n/a"; }
    }

    static string Short(EmbeddingStorage s) => s switch { EmbeddingStorage.Fp32 => "fp32", EmbeddingStorage.Fp16 => "fp16", _ => "int8" };

    static List<T> ParseList<T>(string list, Func<string, T> parse) =>
        list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse).ToList();

    /// <summary>Random values in [-1, 1), written through WriteRow (so fp16/int8 rows are really quantised).</summary>
    static EmbeddingTable BuildTable(long rows, int dim, EmbeddingStorage storage)
    {
        var table = EmbeddingTable.Create($"demo-{Short(storage)}", rows, dim, storage);
        var rng = new Random(7);
        var row = new float[dim];
        for (long r = 0; r < rows; r++)
        {
            for (int d = 0; d < dim; d++) row[d] = (float)(rng.NextDouble() * 2 - 1);
            table.WriteRow(r, row);
        }
        return table;
    }

    /// <summary>Index batches generated before any timing. Zipf ranks come from the inverse CDF (binary search over
    /// the cumulative weights of the first min(rows, 2^24) ranks) and are scattered over the table by a fixed odd
    /// multiplier, so hot rows are not neighbours.</summary>
    static long[][] MakeBatches(long rows, int batch, int pooling, string dist, double s, int count, int seed)
    {
        var rng = new Random(seed);
        long n = (long)batch * pooling;
        double[]? cdf = null;
        if (dist == "zipf")
        {
            int ranks = (int)Math.Min(rows, 1 << 24);
            cdf = new double[ranks];
            double acc = 0;
            for (int k = 0; k < ranks; k++) { acc += Math.Pow(k + 1, -s); cdf[k] = acc; }
            for (int k = 0; k < ranks; k++) cdf[k] /= acc;
        }
        var result = new long[count][];
        for (int c = 0; c < count; c++)
        {
            var ids = new long[n];
            for (long i = 0; i < n; i++)
            {
                if (cdf is null) { ids[i] = rng.NextInt64(rows); continue; }
                int k = Array.BinarySearch(cdf, rng.NextDouble());
                if (k < 0) k = Math.Min(~k, cdf.Length - 1);
                ids[i] = (long)((ulong)k * 0x9E3779B97F4A7C15UL % (ulong)rows);
            }
            result[c] = ids;
        }
        return result;
    }

    static string Check(EmbeddingTable table, long[] indices, long[] offsets, EmbeddingWorkerPool pool)
    {
        int bags = offsets.Length - 1, dim = table.Dim;
        var got = new float[bags * dim];
        var expected = new float[bags * dim];
        EmbeddingBag.Forward(table, indices, offsets, got, PoolingMode.Sum, default, pool);
        EmbeddingBagReference.Forward(table, indices, offsets, expected);
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
            worst = Math.Max(worst, Math.Abs(got[i] - expected[i]) / Math.Max(1.0, Math.Abs(expected[i])));
        // Rows are in [-1, 1], so a bag's terms are bounded by its length: an absolute 1e-5·pooling bound is the
        // relative one with respect to the sum of magnitudes.
        double bound = 1e-5 * Math.Max(1, indices.Length / Math.Max(1, bags));
        return worst <= bound ? "ok" : $"MISMATCH (max error {worst:G3} > {bound:G3})";
    }

    static double Median(double[] values)
    {
        var sorted = values.ToArray();
        Array.Sort(sorted);
        return sorted[sorted.Length / 2];
    }

    /// <summary>One timed run: lookups per wall second and per CPU second of the process.</summary>
    static (double Wall, double Cpu) TimeRun(EmbeddingTable table, long[][] batches, long[] offsets, float[] output, EmbeddingWorkerPool pool, double seconds, bool warmUp)
    {
        if (warmUp)
            for (int i = 0; i < 3; i++) EmbeddingBag.Forward(table, batches[i % batches.Length], offsets, output, PoolingMode.Sum, default, pool);
        long perRun = (long)(Stopwatch.Frequency * seconds);
        var cpuStart = Environment.CpuUsage.TotalTime;
        long lookups = 0, start = Stopwatch.GetTimestamp(), now;
        int k = 0;
        do
        {
            var ids = batches[k++ % batches.Length];
            EmbeddingBag.Forward(table, ids, offsets, output, PoolingMode.Sum, default, pool);
            lookups += ids.Length;
            now = Stopwatch.GetTimestamp();
        } while (now - start < perRun);
        double cpuSeconds = Math.Max(1e-9, (Environment.CpuUsage.TotalTime - cpuStart).TotalSeconds);
        return (lookups * (double)Stopwatch.Frequency / (now - start), lookups / cpuSeconds);
    }
}
