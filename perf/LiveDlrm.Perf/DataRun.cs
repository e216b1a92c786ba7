using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using LiveDlrm.Reports;
using LiveDlrm.Data;

namespace LiveDlrm.Perf;

/// <summary>
/// Data path throughput: synthetic generator (events/s), TSV parse (MB/s) vs binary cache read (MB/s of the same
/// TSV, i.e. the speed-up of a second pass), for the synthetic schema and a Criteo-shaped file. Every timed pass
/// is checked to yield the same events (content hash) before a number is reported.
/// </summary>
internal sealed class DataRun : BenchRun
{
    readonly Option<long> _events = Opt.Long("--events", "synthetic events per pass", 1_000_000, 1, int.MaxValue);
    readonly Option<int> _reps = Opt.Int("--reps", "timed passes per case", 3, 1, 1000);
    readonly Option<string?> _dir = Opt.Text("--dir", "work folder for the TSV and cache files", Path.Combine("artifacts", "bench", "data-work"), "DIR");

    public DataRun() : base("data", "generator events/s, TSV parse MB/s vs binary cache read MB/s (synthetic and Criteo-shaped)")
    {
        Add(_events); Add(_reps); Add(_dir);
    }

    protected override int Run(ParseResult result)
    {
        long events = result.GetValue(_events);
        int reps = result.GetValue(_reps);
        string dir = result.GetValue(_dir)!;
        Directory.CreateDirectory(dir);
        double generatorRate, generatorCpuRate;

        // 1. Generator straight into batches.
        var config = new SyntheticStreamConfig();
        using (var gen = new SyntheticEventSource(config, events))
        {
            var batch = new EventBatch(gen.Schema.Layout, 4096);
            var times = new List<double>();
            var cpuTimes = new List<double>();
            for (int r = 0; r < reps; r++)
            {
                gen.Reset();
                var cpu = CpuNow();
                var w = Stopwatch.StartNew();
                while (gen.Read(batch) > 0) { }
                times.Add(w.Elapsed.TotalSeconds);
                cpuTimes.Add(CpuNow() - cpu);
            }
            double median = Median(times), medianCpu = Median(cpuTimes);
            generatorRate = events / median;
            generatorCpuRate = events / medianCpu;
            Console.WriteLine($"generator         {events / median / 1e6,8:F2} M events/s   ({events / medianCpu / 1e6:F2} M per CPU-second; median of {reps}, {events:N0} events)");
        }

        // 2. TSV parse vs cache, on the synthetic stream and on a Criteo-shaped file.
        string synthTsv = Path.Combine(dir, "synthetic.tsv");
        SyntheticStreamFiles.Write(synthTsv, config, events);
        var synthetic = ParseVsCache("synthetic", synthTsv, StreamSchema.Load(SyntheticStreamFiles.SchemaPathFor(synthTsv)), reps);

        string criteoTsv = Path.Combine(dir, "criteo-shaped.tsv");
        WriteCriteoShaped(criteoTsv, events, seed: 7);
        var criteo = ParseVsCache("criteo", criteoTsv, StreamSchema.Criteo(), reps);

        string outPath = ReportJson.Write(new DataBenchReport(generatorRate, generatorCpuRate, synthetic, criteo, events, reps,
                $"{Environment.ProcessorCount} cpu, {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.FrameworkDescription}"),
            Path.Combine("artifacts", "bench", "data.json"), BenchJsonContext.Default.DataBenchReport);
        Directory.Delete(dir, recursive: true); // the generated inputs are hundreds of MB and cheap to regenerate
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    static Dictionary<string, double> ParseVsCache(string label, string tsv, StreamSchema schema, int reps)
    {
        long bytes = new FileInfo(tsv).Length;
        string cache = tsv + ".ldcache";
        File.Delete(cache);

        (double Seconds, double CpuSeconds, ulong Hash, long Events) Pass(TsvReaderOptions options, bool hashContent = false)
        {
            using var source = new TsvEventSource(tsv, schema, options);
            var batch = new EventBatch(schema.Layout, 4096);
            var hash = new XxHash3();
            long n = 0;
            var cpu = CpuNow();
            var w = Stopwatch.StartNew();
            while (source.Read(batch) > 0) { n += batch.Count; if (hashContent) HashBatch(hash, batch); }
            double s = w.Elapsed.TotalSeconds;
            double c = CpuNow() - cpu;
            if (source.Report.BadLines != 0) throw new InvalidOperationException($"{label}: {source.Report}");
            return (s, c, hash.GetCurrentHashAsUInt64(), n);
        }

        // Check first (untimed, hashing every field of every batch): the cache yields exactly the parsed events.
        var build = Pass(new TsvReaderOptions { Cache = CacheMode.Rebuild, CachePath = cache }, hashContent: true);
        var fromCache = Pass(new TsvReaderOptions { Cache = CacheMode.Auto, CachePath = cache }, hashContent: true);
        if (fromCache.Hash != build.Hash || fromCache.Events != build.Events)
            throw new InvalidOperationException($"{label}: the cache does not reproduce the parsed events");
        var parse = Enumerable.Range(0, reps).Select(_ => Pass(new TsvReaderOptions { Cache = CacheMode.Off })).ToList();
        var read = Enumerable.Range(0, reps).Select(_ => Pass(new TsvReaderOptions { Cache = CacheMode.Auto, CachePath = cache })).ToList();
        double parseS = Median(parse.Select(p => p.Seconds)), readS = Median(read.Select(p => p.Seconds));
        double parseCpu = Median(parse.Select(p => p.CpuSeconds)), readCpu = Median(read.Select(p => p.CpuSeconds));
        long cacheBytes = new FileInfo(cache).Length;
        var r = new Dictionary<string, double>
        {
            ["tsv_bytes"] = bytes,
            ["cache_bytes"] = cacheBytes,
            ["events"] = parse[0].Events,
            ["parse_mb_per_s"] = bytes / parseS / 1e6,
            ["parse_events_per_s"] = parse[0].Events / parseS,
            ["parse_and_build_cache_mb_per_s"] = bytes / build.Seconds / 1e6,
            ["cache_read_mb_per_s"] = cacheBytes / readS / 1e6,
            ["cache_read_tsv_equivalent_mb_per_s"] = bytes / readS / 1e6,
            ["cache_read_events_per_s"] = parse[0].Events / readS,
            ["cache_speedup"] = parseS / readS,
            // Process CPU seconds (all threads): robust to other processes competing for the cores.
            ["parse_mb_per_cpu_s"] = bytes / parseCpu / 1e6,
            ["cache_read_tsv_equivalent_mb_per_cpu_s"] = bytes / readCpu / 1e6,
            ["cache_speedup_cpu"] = parseCpu / readCpu,
        };
        Console.WriteLine($"{label,-10} parse {r["parse_mb_per_s"],7:F1} MB/s ({r["parse_events_per_s"] / 1e6:F2} M ev/s)   " +
                          $"cache read {r["cache_read_mb_per_s"],7:F1} MB/s of cache = {r["cache_read_tsv_equivalent_mb_per_s"],7:F1} MB/s of TSV " +
                          $"({r["cache_read_events_per_s"] / 1e6:F2} M ev/s)   speed-up {r["cache_speedup"]:F1}x   (TSV {bytes / 1e6:F0} MB, cache {cacheBytes / 1e6:F0} MB)");
        Console.WriteLine($"{"",-10} by CPU time: parse {r["parse_mb_per_cpu_s"],7:F1} MB/cpu-s, cache read {r["cache_read_tsv_equivalent_mb_per_cpu_s"],7:F1} MB/cpu-s of TSV, speed-up {r["cache_speedup_cpu"]:F1}x");
        return r;
    }

    static void HashBatch(XxHash3 hash, EventBatch b)
    {
        hash.Append(MemoryMarshal.AsBytes(b.Labels));
        hash.Append(MemoryMarshal.AsBytes(b.Timestamps));
        hash.Append(MemoryMarshal.AsBytes(b.RequestIds));
        hash.Append(MemoryMarshal.AsBytes(b.TrueProbabilities));
        hash.Append(MemoryMarshal.AsBytes(b.Dense));
        for (int f = 0; f < b.SparseCount; f++)
        {
            hash.Append(MemoryMarshal.AsBytes(b.Offsets(f)));
            hash.Append(MemoryMarshal.AsBytes(b.Indices(f)));
        }
    }

    /// <summary>Lines shaped like Criteo's: label, 13 small counts (some empty), 26 8-hex-digit tokens (some empty).</summary>
    static void WriteCriteoShaped(string path, long lines, ulong seed)
    {
        var rng = new Random((int)seed);
        using var w = new StreamWriter(path, false, new System.Text.UTF8Encoding(false), 1 << 16);
        var sb = new System.Text.StringBuilder(256);
        for (long i = 0; i < lines; i++)
        {
            sb.Clear();
            sb.Append(rng.NextDouble() < 0.25 ? '1' : '0');
            for (int d = 0; d < 13; d++)
            {
                sb.Append('\t');
                if (rng.NextDouble() > 0.2) sb.Append((int)Math.Floor(Math.Exp(rng.NextDouble() * 7)) - 1);
            }
            for (int c = 0; c < 26; c++)
            {
                sb.Append('\t');
                if (rng.NextDouble() > 0.1) sb.Append(((uint)(rng.Next() % (c < 5 ? 1000 : 1_000_000))).ToString("x8"));
            }
            w.Write(sb.Append('\n'));
        }
    }

    static double CpuNow() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    static double Median(IEnumerable<double> xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
