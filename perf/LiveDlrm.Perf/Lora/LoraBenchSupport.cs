using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace LiveDlrm.Perf.Lora;

/// <summary>Argument parsing, interleaved timing with medians and JSON output shared by the "lora" and "train" runs.</summary>
static class LoraBenchSupport
{
    public sealed class Args
    {
        readonly Dictionary<string, string?> _values = new();
        readonly HashSet<string> _used = new();
        readonly string _run;

        public Args(string run, string[] args)
        {
            _run = run;
            for (int i = 0; i < args.Length; i++)
            {
                if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"bench {run}: unexpected argument '{args[i]}'");
                string key = args[i][2..];
                string? value = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
                _values[key] = value;
            }
        }

        public bool Flag(string name) { _used.Add(name); return _values.ContainsKey(name); }

        public string String(string name, string fallback) { _used.Add(name); return _values.TryGetValue(name, out var v) && v is not null ? v : fallback; }

        public double Double(string name, double fallback, double min)
        {
            string s = String(name, fallback.ToString(CultureInfo.InvariantCulture));
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || v < min)
                throw new ArgumentException($"bench {_run}: --{name} must be a number ≥ {min}, got '{s}'");
            return v;
        }

        public long Long(string name, long fallback, long min)
        {
            string s = String(name, fallback.ToString(CultureInfo.InvariantCulture));
            if (!long.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) || v < min)
                throw new ArgumentException($"bench {_run}: --{name} must be an integer ≥ {min}, got '{s}'");
            return v;
        }

        public int Int(string name, int fallback, int min) => checked((int)Long(name, fallback, min));

        public void EnsureAllUsed()
        {
            var unknown = _values.Keys.Where(k => !_used.Contains(k)).ToList();
            if (unknown.Count > 0) throw new ArgumentException($"bench {_run}: unknown option(s) {string.Join(", ", unknown.Select(k => "--" + k))}");
        }
    }

    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>The shared entry of the adapter benchmarks: <c>--help</c> prints <paramref name="usage"/>; a bad option
    /// prints its message and the usage and returns 2.</summary>
    public static int RunCommand(string run, string[] args, string usage, Func<Args, int> execute)
    {
        if (args.Contains("--help")) { Console.WriteLine(usage); return 0; }
        try { return execute(new Args(run, args)); }
        catch (ArgumentException e) { Console.Error.WriteLine(e.Message); Console.Error.WriteLine(usage); return 2; }
    }

    /// <summary>Warms every contender up for <paramref name="warmupSeconds"/>, sizes a run to about
    /// <paramref name="runSeconds"/>, then <paramref name="runs"/> rounds each timing one run of every contender in
    /// turn (interleaved, so background load hits all alike). Returns work units per second per run.</summary>
    public static double[][] Interleaved(IReadOnlyList<Action<int>> contenders, int distinctInputs, double unitsPerCall,
                                         int runs, double runSeconds, double warmupSeconds)
    {
        var callsPerRun = new int[contenders.Count];
        for (int c = 0; c < contenders.Count; c++)
        {
            long start = Stopwatch.GetTimestamp();
            int done = 0;
            while (done < distinctInputs || Stopwatch.GetElapsedTime(start).TotalSeconds < warmupSeconds) contenders[c](done++ % distinctInputs);
            callsPerRun[c] = Math.Max(1, (int)Math.Ceiling(runSeconds / (Stopwatch.GetElapsedTime(start).TotalSeconds / done)));
        }
        var result = contenders.Select(_ => new double[runs]).ToArray();
        for (int r = 0; r < runs; r++)
            for (int c = 0; c < contenders.Count; c++)
            {
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < callsPerRun[c]; i++) contenders[c]((r * callsPerRun[c] + i) % distinctInputs);
                result[c][r] = callsPerRun[c] * unitsPerCall / Stopwatch.GetElapsedTime(start).TotalSeconds;
            }
        return result;
    }

    public static string WriteJson(object record, string? outPath, string name)
    {
        string path = Path.GetFullPath(outPath ?? Path.Combine(RepoRoot(), "artifacts", "bench", name + ".json"));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    /// <summary>The folder holding LiveDlrm.slnx above the working directory or the binary, else the working directory.</summary>
    static string RepoRoot()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "LiveDlrm.slnx"))) return d.FullName;
        return Directory.GetCurrentDirectory();
    }
}
