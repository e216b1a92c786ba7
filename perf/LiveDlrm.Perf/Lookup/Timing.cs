using System.Diagnostics;

namespace LiveDlrm.Perf.Lookup;

/// <summary>Timed runs of several contenders on the same batches.</summary>
static class Timing
{
    public sealed record Result(double[] Runs, int BatchesPerRun)
    {
        public double Median
        {
            get
            {
                var s = Runs.Order().ToArray();
                return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
            }
        }
    }

    /// <summary>Warms each contender up (at least one pass over every batch and <c>WarmupSeconds</c>), sizes one run to
    /// about <c>RunSeconds</c>, then does <c>Runs</c> rounds, each timing one run of every contender in turn.
    /// Returns M lookups/s per run, keyed by contender name.</summary>
    public static Dictionary<string, Result> Measure(IReadOnlyList<Contender> contenders, LookupBatches batches, LookupOptions o)
    {
        var batchesPerRun = new int[contenders.Count];
        var cursor = new int[contenders.Count];
        for (int c = 0; c < contenders.Count; c++)
        {
            long start = Stopwatch.GetTimestamp();
            int done = 0;
            while (done < batches.Count || Stopwatch.GetElapsedTime(start).TotalSeconds < o.WarmupSeconds)
                contenders[c].Forward(done++ % batches.Count);
            double perBatch = Stopwatch.GetElapsedTime(start).TotalSeconds / done;
            batchesPerRun[c] = Math.Max(batches.Count, (int)Math.Ceiling(o.RunSeconds / perBatch));
        }

        var runs = contenders.Select(_ => new double[o.Runs]).ToArray();
        for (int r = 0; r < o.Runs; r++)
            for (int c = 0; c < contenders.Count; c++)
            {
                var contender = contenders[c];
                int n = batchesPerRun[c], k = cursor[c];
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < n; i++) contender.Forward((k + i) % batches.Count);
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                cursor[c] = (k + n) % batches.Count;
                runs[c][r] = (double)n * batches.LookupsPerBatch / seconds / 1e6;
            }
        return contenders.Select((c, i) => (c.Name, Result: new Result(runs[i], batchesPerRun[i])))
                         .ToDictionary(x => x.Name, x => x.Result);
    }
}
