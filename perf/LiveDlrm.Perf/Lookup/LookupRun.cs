using System.CommandLine;
using LiveDlrm.CommandLine;
using LiveDlrm.Reports;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Runtime;
using TorchSharp;

namespace LiveDlrm.Perf.Lookup;

/// <summary><c>./build.sh bench lookup</c>: LiveDlrm's embedding-bag kernel against TorchSharp's EmbeddingBag and the
/// native C reference, in one process, on the same pre-generated batches, same thread count. Every contender's
/// output is checked against <see cref="EmbeddingBagReference"/> on a sample batch before it is timed; runs of all
/// contenders of a case are interleaved (so a burst of background load hits them alike) and the median of the runs
/// is reported. See docs/benchmarks.md.</summary>
internal sealed class LookupRun : BenchRun
{
    static readonly LookupOptions D = new();
    readonly Option<int> _threads = Opt.Int("--threads", "worker threads for every contender (default: all cores)", D.Threads, 1, 1024);
    readonly Option<int> _runs = Opt.Int("--runs", "timed runs per contender, median reported", D.Runs, 5, 10_000);
    readonly Option<double> _seconds = Opt.Double("--seconds", "length of one timed run (--quick: 0.02)", D.RunSeconds, 1e-3, 3600);
    readonly Option<string?> _rows = Opt.Text("--rows", "table sizes (--quick: 4096,65536)", string.Join(',', D.Rows), "A,B");
    readonly Option<int> _dim = Opt.Int("--dim", "embedding dim", D.Dim, 1, 4096);
    readonly Option<int> _pooling = Opt.Int("--pooling", "lookups per bag", D.Pooling, 1, 1 << 20);
    readonly Option<int> _batch = Opt.Int("--batch", "bags per batch (--quick: 256)", D.Batch, 1, 1 << 24);
    readonly Option<string?> _prefetch = Opt.Text("--prefetch", "native reference prefetch distances swept (--quick: 0,16)", string.Join(',', D.Prefetch), "A,B,..");
    readonly Option<string?> _liveDlrmPrefetch = Opt.Text("--livedlrm-prefetch", "also time LiveDlrm at these prefetch distances (tuning aid; off by default)", helpName: "A,B");
    readonly Option<string?> _cases = Opt.Text("--cases", "only cases whose name contains one of these (e.g. fp32-4M-uniform, int8, zipf)", helpName: "A,B");
    readonly Option<bool> _noLora = Opt.Flag("--no-lora", "skip the LoRA-augmented lookup (rank 16, adapter filled to its 1 % budget)");
    readonly Option<bool> _breakdown = Opt.Flag("--breakdown", "also time the pieces of a lookup outside the kernel loop alone (validation pass, shape check, pool hand-off), printed as µs a batch");
    readonly Option<bool> _quick = Opt.Flag("--quick", "small tables and short runs (smoke test; numbers are not meaningful)");
    readonly Option<string?> _out = Opt.Text("--out", "JSON output (default artifacts/bench/lookup.json under the repository root)", helpName: "PATH");

    public LookupRun() : base("lookup", "embedding-bag lookups: LiveDlrm vs TorchSharp vs native C reference (M lookups/s)")
    {
        foreach (var o in new Option[] { _threads, _runs, _seconds, _rows, _dim, _pooling, _batch, _prefetch, _liveDlrmPrefetch, _cases, _noLora, _breakdown, _quick, _out })
            Add(o);
    }

    protected override int Run(ParseResult r)
    {
        bool quick = r.GetValue(_quick);
        var q = new LookupOptions { Quick = true, Runs = 5, RunSeconds = 0.02, WarmupSeconds = 0.01, Batch = 256, Rows = [4096, 65_536], BatchCount = 2, Prefetch = [0, 16] };
        var o = (quick ? q : D) with
        {
            Threads = r.GetValue(_threads),
            Runs = r.GetValue(_runs),
            RunSeconds = Pick(r, _seconds, quick, q.RunSeconds),
            Rows = quick && !Given(r, _rows) ? q.Rows : List("--rows", r.GetValue(_rows)!, PositiveLong, "a positive integer"),
            Dim = r.GetValue(_dim),
            Pooling = r.GetValue(_pooling),
            Batch = Pick(r, _batch, quick, q.Batch),
            Prefetch = quick && !Given(r, _prefetch) ? q.Prefetch : List("--prefetch", r.GetValue(_prefetch)!, NonNegativeInt, "a non-negative integer"),
            LiveDlrmPrefetch = r.GetValue(_liveDlrmPrefetch) is { } lp ? List("--livedlrm-prefetch", lp, NonNegativeInt, "a non-negative integer") : [],
            Cases = r.GetValue(_cases) is { } c ? c.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [],
            Lora = !r.GetValue(_noLora),
            Breakdown = r.GetValue(_breakdown),
            Out = r.GetValue(_out),
        };
        if ((long)o.Batch * o.Pooling > int.MaxValue / 2) throw new UsageException($"--batch {o.Batch} × --pooling {o.Pooling} is too many lookups per batch");
        return Execute(o);
    }

    static readonly EmbeddingStorage[] Dtypes = [EmbeddingStorage.Fp32, EmbeddingStorage.Fp16, EmbeddingStorage.Int8Rowwise];
    static readonly IdDistribution[] Distributions = [IdDistribution.Uniform, IdDistribution.Zipf];

    internal static int Execute(LookupOptions o)
    {
        TorchRuntime.EnsureInitialised(o.Threads);
        torch.set_num_threads(o.Threads);
        bool nativeAvailable = NativeLibraries.IsAvailable(Libraries.KernelRef);
        string nativeIsa = nativeAvailable ? KernelRef.BestIsa().ToString() : "unavailable";
        using var kernel = new LiveDlrmKernel(o.Threads);
        using var noGrad = torch.no_grad();

        Console.WriteLine($"lookup: dim {o.Dim}, pooling {o.Pooling}, batch {o.Batch}, {o.Threads} threads, {o.Runs} runs × {o.RunSeconds:0.###} s (median), " +
                          $"{o.BatchCount} distinct batches{(o.Quick ? ", QUICK (not meaningful)" : "")}");
        Console.WriteLine($"  livedlrm:   {kernel.Description}");
        Console.WriteLine($"  torchsharp: {TorchRuntime.TorchSharpVersion} (libtorch {torch.__version__}), {torch.get_num_threads()} intra-op threads");
        Console.WriteLine($"  native_ref: {(nativeAvailable ? $"{NativeLibraries.LoadedFrom(Libraries.KernelRef)} ({nativeIsa}), prefetch swept over {string.Join(",", o.Prefetch)}" : "liblivedlrm_ref.so not found — column left empty")}");

        var records = new List<LookupRecord>();
        var failures = new List<string>();
        foreach (long rows in o.Rows)
        {
            var wanted = (from d in Dtypes from dist in Distributions
                          let name = CaseName(d, rows, dist)
                          where o.Cases.Length == 0 || o.Cases.Any(c => name.Contains(c, StringComparison.OrdinalIgnoreCase))
                          select (Dtype: d, Dist: dist, Name: name)).ToList();
            if (wanted.Count == 0) continue;

            var sw = Stopwatch.StartNew();
            torch.manual_seed(rows);
            using var weights = torch.rand(rows, o.Dim).mul_(2).sub_(1);
            // fp32 is always built: TorchSharp's weights and the source the fp16/int8 tables are quantised from.
            var tables = new Dictionary<EmbeddingStorage, EmbeddingTable> { [EmbeddingStorage.Fp32] = BenchTables.Fp32($"bench-fp32-{rows}", weights) };
            foreach (var d in wanted.Select(w => w.Dtype).Distinct().Where(d => d != EmbeddingStorage.Fp32))
                tables[d] = BenchTables.Quantised($"bench-{DtypeName(d)}-{rows}", tables[EmbeddingStorage.Fp32], d);
            Console.WriteLine($"\n{RowsLabel(rows)} rows: tables built in {sw.Elapsed.TotalSeconds:F1} s ({string.Join(", ", tables.Values)})");
            try
            {
                foreach (var dist in Distributions)
                {
                    var cases = wanted.Where(w => w.Dist == dist).ToList();
                    if (cases.Count == 0) continue;
                    var batches = new LookupBatches(rows, o.Batch, o.Pooling, o.BatchCount, dist, seed: (int)(rows % 100_003) * 2 + (int)dist);
                    foreach (var c in cases)
                    {
                        var table = tables[c.Dtype];
                        var record = MeasureCase(o, c.Name, table, weights, batches, kernel, nativeAvailable, failures);
                        record.NativeRefIsa = nativeIsa;
                        record.LivedlrmKernel = kernel.Description;
                        records.Add(record);
                        PrintRecord(record);
                    }
                }
            }
            finally
            {
                foreach (var t in tables.Values) t.Dispose();
            }
        }

        foreach (var r in records.Where(r => r.Dtype != "fp32"))
        {
            var fp32 = records.FirstOrDefault(x => x.Dtype == "fp32" && x.Rows == r.Rows && x.Dist == r.Dist);
            r.LivedlrmVsFp32 = Ratio(r.LivedlrmMlookups, fp32?.LivedlrmMlookups);
        }
        PrintTable(records);
        string path = WriteJson(records, o.Out);
        Console.WriteLine($"\nwrote {path}");
        if (failures.Count > 0)
        {
            Console.Error.WriteLine($"bench lookup: {failures.Count} contender(s) failed or disagreed with the reference and were not reported:");
            foreach (var f in failures) Console.Error.WriteLine($"  {f}");
            return 1;
        }
        return 0;
    }

    static LookupRecord MeasureCase(LookupOptions o, string name, EmbeddingTable table, torch.Tensor weights, LookupBatches batches,
                                    LiveDlrmKernel kernel, bool nativeAvailable, List<string> failures)
    {
        var contenders = new List<Contender> { new LiveDlrmContender(table, batches, kernel) };
        foreach (int pf in o.LiveDlrmPrefetch) contenders.Add(new LiveDlrmContender(table, batches, kernel, pf));
        // The code the engine does not pick for this storage type, timed beside it: the measurement behind the choice.
        var other = EmbeddingKernels.ImplementationFor(table.Storage) == KernelImplementation.Native ? KernelImplementation.Managed : KernelImplementation.Native;
        if (other == KernelImplementation.Managed || EmbeddingKernels.IsNativeSupported(EmbeddingKernels.SelectedIsa))
            contenders.Add(new LiveDlrmContender(table, batches, kernel, implementation: other));
        if (table.Storage == EmbeddingStorage.Fp32) contenders.Add(new TorchSharpContender(weights, batches));
        LoraContender? lora = null;
        if (o.Lora)
        {
            // A table too small for B plus one adapter row within 1 % (the --quick tables) has no LoRA figure.
            try { lora = new LoraContender(table, batches, kernel); }
            catch (ArgumentException e) { Console.WriteLine($"  {name}: no LoRA contender ({e.Message})"); }
        }
        if (lora is not null) contenders.Add(lora);
        if (nativeAvailable)
            foreach (int pf in o.Prefetch) contenders.Add(new NativeRefContender(table, batches, kernel.Pool, pf));
        if (o.Breakdown)
            foreach (var piece in Enum.GetValues<PieceContender.Piece>()) contenders.Add(new PieceContender(table, batches, kernel.Pool, piece));
        try
        {
            // The oracle on batch 0 (fp16/int8: the dequantised rows, exactly what each kernel should sum).
            var expected = new float[batches.Bags * table.Dim];
            EmbeddingBagReference.Forward(table, batches.Indices[0], batches.Offsets, expected);
            var verified = new List<Contender>();
            foreach (var c in contenders)
            {
                string? problem;
                try
                {
                    c.Forward(0);
                    problem = c.Verify(expected);
                }
                catch (Exception e) when (e is InvalidOperationException or ArgumentException or ExternalException)
                {
                    problem = $"{e.GetType().Name}: {e.Message}";
                }
                if (problem is not null) failures.Add($"{name} {c.Name}: {problem}");
                else verified.Add(c);
            }

            var results = Timing.Measure(verified, batches, o);
            double? Median(string n) => results.TryGetValue(n, out var r) ? r.Median : null;
            var sweep = o.Prefetch.ToDictionary(pf => pf.ToString(CultureInfo.InvariantCulture), pf => Median($"native_ref_pf{pf}"));
            var best = sweep.Where(kv => kv.Value is not null).OrderByDescending(kv => kv.Value).FirstOrDefault();
            int rowBytes = table.RowStride;
            string otherName = $"livedlrm_{other.ToString().ToLowerInvariant()}";
            if (o.Breakdown)
                Console.WriteLine($"  {name} µs a batch: " + string.Join("  ", results.OrderBy(kv => kv.Key, StringComparer.Ordinal)
                    .Select(kv => $"{kv.Key} {batches.LookupsPerBatch / kv.Value.Median:F1}")));
            double? livedlrm = Median("livedlrm"), torchsharp = Median("torchsharp"), native = best.Value, loraRate = Median("livedlrm_lora");
            return new LookupRecord
            {
                Case = name, Rows = table.Rows, Dim = table.Dim, Pooling = batches.Pooling, Batch = batches.Bags,
                Dtype = DtypeName(table.Storage), Dist = batches.Distribution == IdDistribution.Zipf ? "zipf1.05" : "uniform",
                Threads = o.Threads, Runs = o.Runs, RunSeconds = o.RunSeconds, Quick = o.Quick, RowBytes = rowBytes,
                LivedlrmMlookups = livedlrm, TorchsharpMlookups = torchsharp, NativeRefMlookups = native,
                NativeRefBestPrefetch = best.Value is null ? null : int.Parse(best.Key, CultureInfo.InvariantCulture),
                NativeRefSweep = nativeAvailable ? sweep : null,
                NativeRefAtLivedlrmPrefetch = Median($"native_ref_pf{table.PrefetchDistance}"),
                LivedlrmSweep = o.LiveDlrmPrefetch.Length == 0 ? null
                    : o.LiveDlrmPrefetch.ToDictionary(pf => pf.ToString(CultureInfo.InvariantCulture), pf => Median($"livedlrm_pf{pf}")),
                LivedlrmPrefetch = table.PrefetchDistance,
                LivedlrmTunerScores = PrefetchTuner.Candidates.Select((pf, i) => (pf, i)).ToDictionary(
                    x => x.pf.ToString(CultureInfo.InvariantCulture), x => double.IsNaN(table.Prefetch.LastScores[x.i]) ? (double?)null : table.Prefetch.LastScores[x.i]),
                LivedlrmGbps = Gbps(livedlrm, rowBytes), TorchsharpGbps = Gbps(torchsharp, rowBytes), NativeRefGbps = Gbps(native, rowBytes),
                LivedlrmVsNativeRef = Ratio(livedlrm, native), LivedlrmVsTorchsharp = Ratio(livedlrm, torchsharp),
                LivedlrmVsNativeRefPerRound = best.Value is null ? null : PerRoundRatio(results, "livedlrm", $"native_ref_pf{best.Key}"),
                LivedlrmVsNativeRefPerRoundQuartiles = best.Value is null ? null : PerRoundQuartiles(results, "livedlrm", $"native_ref_pf{best.Key}"),
                NativeRefRunSpread = best.Value is null ? null : RunSpread(results[$"native_ref_pf{best.Key}"].Runs),
                LivedlrmVsTorchsharpPerRound = PerRoundRatio(results, "livedlrm", "torchsharp"),
                LivedlrmVsNativeRefSamePrefetchPerRound = PerRoundRatio(results, "livedlrm", $"native_ref_pf{table.PrefetchDistance}"),
                LivedlrmImplementation = EmbeddingKernels.ImplementationFor(table.Storage).ToString().ToLowerInvariant(),
                OtherImplementationMlookups = Median(otherName),
                OtherImplementationVsNativeRefPerRound = best.Value is null ? null : PerRoundRatio(results, otherName, $"native_ref_pf{best.Key}"),
                LivedlrmLoraMlookups = loraRate, LoraTimeRatio = Ratio(livedlrm, loraRate), LoraTimeRatioPerRound = PerRoundRatio(results, "livedlrm", "livedlrm_lora"),
                LoraRank = lora is null ? null : LoraContender.Rank, LoraActiveRows = lora?.ActiveRows, LoraMemoryPct = lora?.MemoryPercent, LoraHitFraction = lora?.HitFraction,
                RunMlookups = results.ToDictionary(kv => kv.Key, kv => kv.Value.Runs),
            };
        }
        finally
        {
            foreach (var c in contenders) c.Dispose();
        }
    }

    /// <summary>Null when equal within fp32 summation-order tolerance, else a description of the first mismatch.</summary>
    internal static string? Compare(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length < expected.Length) return $"output has {actual.Length} values, expected {expected.Length}";
        for (int i = 0; i < expected.Length; i++)
            if (!(MathF.Abs(actual[i] - expected[i]) <= 1e-4f * (1f + MathF.Abs(expected[i]))))
                return $"value {i} is {actual[i]}, reference {expected[i]}";
        return null;
    }

    static double? Gbps(double? mlookups, int rowBytes) => mlookups * rowBytes / 1000.0;
    static double? Ratio(double? a, double? b) => a is null || b is null || b == 0 ? null : a / b;

    /// <summary>Median over the interleaved rounds of <paramref name="numerator"/>'s rate / <paramref name="denominator"/>'s.</summary>
    static double? PerRoundRatio(IReadOnlyDictionary<string, Timing.Result> results, string numerator, string denominator)
    {
        if (!results.TryGetValue(numerator, out var a) || !results.TryGetValue(denominator, out var b)) return null;
        var ratios = a.Runs.Zip(b.Runs, (x, y) => y > 0 ? x / y : double.NaN).Where(double.IsFinite).Order().ToArray();
        return ratios.Length == 0 ? null : ratios.Length % 2 == 1 ? ratios[ratios.Length / 2] : (ratios[ratios.Length / 2 - 1] + ratios[ratios.Length / 2]) / 2;
    }

    /// <summary>First and third quartile over the rounds of the same-round ratio: the spread behind
    /// <see cref="PerRoundRatio"/>.</summary>
    static double[]? PerRoundQuartiles(IReadOnlyDictionary<string, Timing.Result> results, string numerator, string denominator)
    {
        if (!results.TryGetValue(numerator, out var a) || !results.TryGetValue(denominator, out var b)) return null;
        var ratios = a.Runs.Zip(b.Runs, (x, y) => y > 0 ? x / y : double.NaN).Where(double.IsFinite).Order().ToArray();
        return ratios.Length == 0 ? null : [Quantile(ratios, 0.25), Quantile(ratios, 0.75)];
    }

    /// <summary>(third quartile − first quartile) / median of one contender's runs: how much the contender varies
    /// from round to round on its own.</summary>
    static double? RunSpread(double[] runs)
    {
        var sorted = runs.Order().ToArray();
        double median = Quantile(sorted, 0.5);
        return sorted.Length == 0 || median <= 0 ? null : (Quantile(sorted, 0.75) - Quantile(sorted, 0.25)) / median;
    }

    /// <summary>Linear interpolation between closest ranks of an ascending array.</summary>
    static double Quantile(double[] sorted, double q)
    {
        if (sorted.Length == 0) return double.NaN;
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    internal static string DtypeName(EmbeddingStorage s) => s switch
    {
        EmbeddingStorage.Fp32 => "fp32",
        EmbeddingStorage.Fp16 => "fp16",
        EmbeddingStorage.Int8Rowwise => "int8",
        _ => s.ToString(),
    };

    internal static string RowsLabel(long rows) =>
        rows % (1 << 20) == 0 ? $"{rows >> 20}M" : rows % 1000 == 0 ? $"{rows / 1000}k" : rows.ToString(CultureInfo.InvariantCulture);

    static string CaseName(EmbeddingStorage d, long rows, IdDistribution dist) =>
        $"{DtypeName(d)}-{RowsLabel(rows)}-{(dist == IdDistribution.Zipf ? "zipf" : "uniform")}";

    static string Range(double[]? q) => q is [var lo, var hi] ? $"{F(lo, "F2")}-{F(hi, "F2")}" : "—";

    static string F(double? v, string format = "F1") => v?.ToString(format, CultureInfo.InvariantCulture) ?? "—";

    static void PrintRecord(LookupRecord r)
    {
        string sweep = r.NativeRefSweep is null ? "" : "  native sweep: " + string.Join(" ", r.NativeRefSweep.Select(kv => $"pf{kv.Key}={F(kv.Value)}"));
        if (r.LivedlrmSweep is not null) sweep += "  livedlrm sweep: " + string.Join(" ", r.LivedlrmSweep.Select(kv => $"pf{kv.Key}={F(kv.Value)}"));
        if (r.LivedlrmTunerScores is not null) sweep += $"  tuner chose {r.LivedlrmPrefetch}, scores: " + string.Join(" ", r.LivedlrmTunerScores.Select(kv => $"pf{kv.Key}={F(kv.Value, "F2")}"));
        Console.WriteLine($"  {r.Case,-18} livedlrm {F(r.LivedlrmMlookups),7}  lora {F(r.LivedlrmLoraMlookups),7}{(r.LoraHitFraction is double hf ? $" ({hf:P1} hits)" : "")}  torchsharp {F(r.TorchsharpMlookups),7}  native {F(r.NativeRefMlookups),7}{sweep}");
    }

    static void PrintTable(List<LookupRecord> records)
    {
        Console.WriteLine();
        Console.WriteLine("M lookups/s, median of runs (GB/s = rows gathered × row bytes)");
        Console.WriteLine("LD = the engine's default code for the storage type (code column); 'other' = the other code; /native and /torch");
        Console.WriteLine("columns marked 'rnd' are medians over rounds of same-round ratios (native at its best prefetch distance), 'q1-q3' their quartiles; '@LD pf': the same against native at LiveDlrm's own distance");
        Console.WriteLine("'nat IQR': the native gather's own spread over its runs at its best distance, (q3 - q1) / median");
        Console.WriteLine($"{"case",-18} {"code",7} {"livedlrm",9} {"torchsharp",10} {"native_ref",10} {"best pf",7} {"LD pf",5} {"LD/native",9} {"rnd",5} {"q1-q3",9} {"nat IQR",7} {"@LD pf",6} {"other/nat",9} {"LD/torch",8} {"rnd",5} {"LD/fp32",7} {"LD GB/s",7} {"ref GB/s",8} {"lora",7} {"lora t/t",8} {"per-round",9}");
        foreach (var r in records)
            Console.WriteLine($"{r.Case,-18} {r.LivedlrmImplementation,7} {F(r.LivedlrmMlookups),9} {F(r.TorchsharpMlookups),10} {F(r.NativeRefMlookups),10} {r.NativeRefBestPrefetch?.ToString(CultureInfo.InvariantCulture) ?? "—",7} {r.LivedlrmPrefetch,5} " +
                              $"{F(r.LivedlrmVsNativeRef, "F2"),9} {F(r.LivedlrmVsNativeRefPerRound, "F2"),5} {Range(r.LivedlrmVsNativeRefPerRoundQuartiles),9} {F(r.NativeRefRunSpread * 100, "F0") + (r.NativeRefRunSpread is null ? "" : "%"),7} {F(r.LivedlrmVsNativeRefSamePrefetchPerRound, "F2"),6} {F(r.OtherImplementationVsNativeRefPerRound, "F2"),9} {F(r.LivedlrmVsTorchsharp, "F2"),8} {F(r.LivedlrmVsTorchsharpPerRound, "F2"),5} {F(r.LivedlrmVsFp32, "F2"),7} {F(r.LivedlrmGbps),7} {F(r.NativeRefGbps),8} {F(r.LivedlrmLoraMlookups),7} {F(r.LoraTimeRatio, "F2"),8} {F(r.LoraTimeRatioPerRound, "F2"),9}");
    }

    static string WriteJson(List<LookupRecord> records, string? outPath)
        => ReportJson.Write(records, outPath ?? Path.Combine(RepoRoot(), "artifacts", "bench", "lookup.json"), BenchJsonContext.Default.ListLookupRecord);
}

/// <summary>One line of artifacts/bench/lookup.json (snake_case names; null = not applicable or not measured).</summary>
sealed class LookupRecord
{
    public required string Case { get; init; }
    public long Rows { get; init; }
    public int Dim { get; init; }
    public int Pooling { get; init; }
    public int Batch { get; init; }
    public required string Dtype { get; init; }
    public required string Dist { get; init; }
    public int Threads { get; init; }
    public double? LivedlrmMlookups { get; init; }
    public double? TorchsharpMlookups { get; init; }
    public double? NativeRefMlookups { get; init; }
    /// <summary>LiveDlrm's LoRA-augmented lookup at rank 16 (adapter filled to the 1 % budget), same inputs.</summary>
    public double? LivedlrmLoraMlookups { get; init; }
    /// <summary>LoRA lookup time over plain lookup time (target: ≤ 1.15).</summary>
    public double? LoraTimeRatio { get; init; }
    /// <summary>Median over rounds of (plain rate / LoRA rate) within the round: the host's speed drifts between
    /// minutes, and a ratio taken inside one round cancels most of that drift.</summary>
    public double? LoraTimeRatioPerRound { get; init; }
    public int? LoraRank { get; init; }
    public int? LoraActiveRows { get; init; }
    public double? LoraMemoryPct { get; init; }
    /// <summary>Share of the timed lookups that hit an adapted row.</summary>
    public double? LoraHitFraction { get; init; }
    public int? NativeRefBestPrefetch { get; init; }
    public Dictionary<string, double?>? NativeRefSweep { get; init; }
    /// <summary>The native reference at LiveDlrm's own prefetch distance (null if not in the sweep): a like-for-like
    /// comparison free of the upward bias of picking the best of several noisy medians.</summary>
    public double? NativeRefAtLivedlrmPrefetch { get; init; }
    public string NativeRefIsa { get; set; } = "";
    /// <summary>The prefetch distance the table's tuner had chosen at the end of the timed runs (docs/kernels.md).</summary>
    public int LivedlrmPrefetch { get; init; }
    /// <summary>The table's prefetch tuner at the end of the timed runs: each candidate distance's score in its last
    /// exploration (median time over its round's fastest, 1 = fastest in every round).</summary>
    public Dictionary<string, double?>? LivedlrmTunerScores { get; init; }
    /// <summary>--livedlrm-prefetch: LiveDlrm at other distances (null when not asked for).</summary>
    public Dictionary<string, double?>? LivedlrmSweep { get; init; }
    public string LivedlrmKernel { get; set; } = "";
    public double? LivedlrmVsNativeRef { get; init; }
    public double? LivedlrmVsTorchsharp { get; init; }
    /// <summary>Median over the interleaved rounds of LiveDlrm's rate / the native reference's at its best prefetch
    /// distance (best by median) in the same round: the figure the kernel targets are stated in.</summary>
    public double? LivedlrmVsNativeRefPerRound { get; init; }
    public double? LivedlrmVsTorchsharpPerRound { get; init; }
    /// <summary>First and third quartile over rounds of the same-round ratio behind
    /// <see cref="LivedlrmVsNativeRefPerRound"/>.</summary>
    public double[]? LivedlrmVsNativeRefPerRoundQuartiles { get; init; }
    /// <summary>The native reference's own spread at its best distance: (q3 − q1) / median of its runs. A gap to
    /// 0.95 smaller than this is inside the baseline's round-to-round variation.</summary>
    public double? NativeRefRunSpread { get; init; }
    /// <summary>Per-round median of LiveDlrm / the native reference at LiveDlrm's own prefetch distance: like for like,
    /// without the upward bias of taking the best of several noisy medians.</summary>
    public double? LivedlrmVsNativeRefSamePrefetchPerRound { get; init; }
    /// <summary>The code behind livedlrm_mlookups ("native" or "managed", <c>EmbeddingKernels.ImplementationFor</c>).</summary>
    public string LivedlrmImplementation { get; init; } = "";
    /// <summary>The other code (the one not chosen for this storage type) on the same batches, and its per-round ratio.</summary>
    public double? OtherImplementationMlookups { get; init; }
    public double? OtherImplementationVsNativeRefPerRound { get; init; }
    /// <summary>fp16/int8 rows: LiveDlrm's figure over its own fp32 figure on the same table size and ids.</summary>
    public double? LivedlrmVsFp32 { get; set; }
    public int RowBytes { get; init; }
    public double? LivedlrmGbps { get; init; }
    public double? TorchsharpGbps { get; init; }
    public double? NativeRefGbps { get; init; }
    public int Runs { get; init; }
    public double RunSeconds { get; init; }
    public bool Quick { get; init; }
    /// <summary>Every timed run of every contender (M lookups/s), for the spread behind each median.</summary>
    public Dictionary<string, double[]> RunMlookups { get; init; } = new();
}
