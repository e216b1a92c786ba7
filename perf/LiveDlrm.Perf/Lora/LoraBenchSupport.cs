using System.Diagnostics;

namespace LiveDlrm.Perf.Lora;

/// <summary>Interleaved timing with medians and JSON output shared by the "lora" and "train" runs.</summary>
static class LoraBenchSupport
{
    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
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

    /// <summary>Writes a bench report to <paramref name="outPath"/> (default artifacts/bench/NAME.json under the repository).</summary>
    public static string WriteJson<T>(T record, string? outPath, string name, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo) =>
        Reports.ReportJson.Write(record, outPath ?? Path.Combine(BenchRun.RepoRoot(), "artifacts", "bench", name + ".json"), typeInfo);
}
