using System.Globalization;

namespace LiveDlrm.Perf.Lookup;

/// <summary>Options of <c>./build.sh bench lookup</c>. Defaults are the reference configuration (fp32/fp16/int8,
/// dim 64, pooling 32, batch 2048, 100 k and 4 M rows, uniform and Zipf(1.05)); --quick shrinks everything for the
/// smoke test.</summary>
sealed record LookupOptions
{
    public int Threads { get; init; } = Environment.ProcessorCount;
    public int Runs { get; init; } = 5;
    public double RunSeconds { get; init; } = 0.3;
    public double WarmupSeconds { get; init; } = 0.15;
    public int Dim { get; init; } = 64;
    public int Pooling { get; init; } = 32;
    public int Batch { get; init; } = 2048;
    public long[] Rows { get; init; } = [100_000, 4L << 20];
    /// <summary>Distinct pre-generated batches cycled through (32 × 65 536 lookups touch ~512 MB of a 1 GiB table,
    /// far past the last-level cache, so repeating batches does not turn a DRAM case into a cache case).</summary>
    public int BatchCount { get; init; } = 32;
    public int[] Prefetch { get; init; } = [0, 4, 8, 16, 24, 32];
    /// <summary>Also time LiveDlrm's kernel at these prefetch distances (a tuning aid; the reported livedlrm figure
    /// is always the engine's default distance).</summary>
    public int[] LiveDlrmPrefetch { get; init; } = [];
    public string[] Cases { get; init; } = [];
    public bool Quick { get; init; }
    /// <summary>Also time the LoRA-augmented lookup (rank 16, adapter at its 1 % budget) on every case.</summary>
    public bool Lora { get; init; } = true;
    public string? Out { get; init; }

    public const string Usage =
        """
        usage: ./build.sh bench lookup [options]
          --threads N        worker threads for every contender (default: all cores)
          --runs N           timed runs per contender, median reported (default 5, at least 5)
          --seconds S        length of one timed run (default 0.3)
          --rows A,B         table sizes (default 100000,4194304)
          --dim N --pooling N --batch N     (defaults 64, 32, 2048)
          --prefetch A,B,..  native reference prefetch distances swept (default 0,4,8,16,24,32)
          --livedlrm-prefetch A,B   also time LiveDlrm at these prefetch distances (tuning aid; off by default)
          --cases A,B        only cases whose name contains one of these (e.g. fp32-4M-uniform, int8, zipf)
          --no-lora          skip the LoRA-augmented lookup (rank 16, adapter filled to its 1 % budget)
          --quick            small tables and short runs (smoke test; numbers are not meaningful)
          --out PATH         JSON output (default artifacts/bench/lookup.json under the repository root)
        """;

    public static LookupOptions Parse(IReadOnlyList<string> args)
    {
        bool quick = args.Contains("--quick");
        var o = quick
            ? new LookupOptions { Quick = true, Runs = 5, RunSeconds = 0.02, WarmupSeconds = 0.01, Batch = 256, Rows = [4096, 65_536], BatchCount = 2, Prefetch = [0, 16] }
            : new LookupOptions();
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"option {a} needs a value");
            o = a switch
            {
                "--quick" => o,
                "--threads" => o with { Threads = PositiveInt(a, Value()) },
                "--runs" => o with { Runs = PositiveInt(a, Value()) },
                "--seconds" => o with { RunSeconds = PositiveDouble(a, Value()) },
                "--rows" => o with { Rows = List(a, Value(), s => PositiveLong(a, s)) },
                "--dim" => o with { Dim = PositiveInt(a, Value()) },
                "--pooling" => o with { Pooling = PositiveInt(a, Value()) },
                "--batch" => o with { Batch = PositiveInt(a, Value()) },
                "--prefetch" => o with { Prefetch = List(a, Value(), s => NonNegativeInt(a, s)) },
                "--livedlrm-prefetch" => o with { LiveDlrmPrefetch = List(a, Value(), s => NonNegativeInt(a, s)) },
                "--cases" => o with { Cases = List(a, Value(), s => s) },
                "--out" => o with { Out = Value() },
                "--no-lora" => o with { Lora = false },
                _ => throw new ArgumentException($"unknown option '{a}'"),
            };
        }
        if (o.Runs < 5) throw new ArgumentException($"--runs {o.Runs}: medians need at least 5 runs");
        if ((long)o.Batch * o.Pooling > int.MaxValue / 2) throw new ArgumentException($"--batch {o.Batch} × --pooling {o.Pooling} is too many lookups per batch");
        return o;
    }

    static T[] List<T>(string option, string value, Func<string, T> parse)
    {
        var parts = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new ArgumentException($"option {option} needs a comma-separated list, got '{value}'");
        return parts.Select(parse).Distinct().ToArray();
    }

    static int PositiveInt(string option, string s) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new ArgumentException($"option {option}: '{s}' is not a positive integer");
    static int NonNegativeInt(string option, string s) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0 ? v : throw new ArgumentException($"option {option}: '{s}' is not a non-negative integer");
    static long PositiveLong(string option, string s) =>
        long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v > 0 ? v : throw new ArgumentException($"option {option}: '{s}' is not a positive integer");
    static double PositiveDouble(string option, string s) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0 && double.IsFinite(v) ? v : throw new ArgumentException($"option {option}: '{s}' is not a positive number");
}
