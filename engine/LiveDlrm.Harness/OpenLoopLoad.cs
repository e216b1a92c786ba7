using System.Diagnostics;
using HdrHistogram;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>Result of one open-loop trial. Latencies in milliseconds, measured from each request's scheduled
/// arrival time to its completion.</summary>
internal sealed record TrialResult(double OfferedQps, double AchievedQps, long Requests, long Dropped, double P50Ms, double P99Ms,
                                 double P999Ms, double MaxMs, double FinalLagMs, TimeSpan Measured);

/// <summary>An open-loop Poisson load generator with one dispatch thread. Arrival times are drawn up front from
/// exponential gaps at the target rate and never move: when the dispatcher falls behind, the next request is
/// served at once and its latency still counts from its scheduled arrival — the queueing delay a real client
/// would see is in the numbers (no coordinated omission). Requests are served in arrival order, one at a time,
/// each fanned out by the workload over its worker pool: an M/G/1 queue whose server is the whole inference side.</summary>
internal static class OpenLoopLoad
{
    const long HighestTrackableMicros = 60_000_000;

    /// <param name="warmup">Requests scheduled in the first <paramref name="warmup"/> are served but not recorded.</param>
    /// <param name="drain">How long after the end the dispatcher may keep serving a backlog before it gives up and
    /// counts the rest as dropped (an overloaded trial must not run forever).</param>
    /// <param name="onDispatcherStart">Runs on the dispatch thread first (pinning).</param>
    /// <param name="onLatency">Called with every latency in Stopwatch ticks, warm-up included (the QoS controller).</param>
    public static TrialResult Run(IInferenceWorkload workload, double qps, TimeSpan duration, TimeSpan warmup, TimeSpan drain,
                                  int seed, Action? onDispatcherStart = null, Action<long>? onLatency = null)
    {
        if (!(qps > 0) || double.IsInfinity(qps)) throw new ArgumentOutOfRangeException(nameof(qps), qps, "target QPS must be positive");
        if (duration <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(duration), duration, "duration must be positive");
        var histogram = new LongHistogram(HighestTrackableMicros, 3);
        long requests = 0, dropped = 0, finalLag = 0;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                onDispatcherStart?.Invoke();
                var rng = new Random(seed);
                double freq = Stopwatch.Frequency;
                long start = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 100;
                long measureFrom = start + (long)(warmup.TotalSeconds * freq);
                long end = measureFrom + (long)(duration.TotalSeconds * freq);
                long giveUp = end + (long)(drain.TotalSeconds * freq);
                double next = start;
                long served = 0;
                while (true)
                {
                    next += -Math.Log(1 - rng.NextDouble()) / qps * freq;
                    long scheduled = (long)next;
                    if (scheduled >= end) break;
                    long now = Stopwatch.GetTimestamp();
                    if (now < scheduled) PreciseClock.SleepUntil(scheduled);
                    else if (now > giveUp)
                    {
                        // Overloaded past the drain allowance: the remaining scheduled requests are never served.
                        dropped = 1 + (long)((end - scheduled) / freq * qps);
                        break;
                    }
                    workload.Serve(served++);
                    long done = Stopwatch.GetTimestamp();
                    long latency = done - scheduled;
                    onLatency?.Invoke(latency);
                    finalLag = latency;
                    if (scheduled >= measureFrom)
                    {
                        histogram.RecordValue(Math.Clamp((long)(latency * 1e6 / freq), 1, HighestTrackableMicros));
                        requests++;
                    }
                }
            }
            catch (Exception e) { failure = e; }
        }) { Name = "livedlrm-load", IsBackground = true };
        thread.Start();
        thread.Join();
        if (failure is not null) throw new InvalidOperationException($"load trial at {qps:F0} QPS failed: {failure.Message}", failure);
        double Ms(double percentile) => requests == 0 ? double.NaN : histogram.GetValueAtPercentile(percentile) / 1000.0;
        return new TrialResult(qps, requests / duration.TotalSeconds, requests, dropped, Ms(50), Ms(99), Ms(99.9),
                               requests == 0 ? double.NaN : histogram.GetMaxValue() / 1000.0, finalLag * 1000.0 / Stopwatch.Frequency, duration);
    }

    /// <summary>Back-to-back requests for <paramref name="duration"/>: service times in milliseconds (sorted), the
    /// capacity bound for the open-loop search.</summary>
    public static double[] ClosedLoopServiceTimes(IInferenceWorkload workload, TimeSpan duration, Action? onDispatcherStart = null)
    {
        var times = new List<double>();
        Exception? failure = null;
        var thread = new Thread(() =>
        {
          try
          {
            onDispatcherStart?.Invoke();
            long end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            long i = 0;
            while (Stopwatch.GetTimestamp() < end || times.Count < 10)
            {
                long t0 = Stopwatch.GetTimestamp();
                workload.Serve(i++);
                times.Add((Stopwatch.GetTimestamp() - t0) * 1000.0 / Stopwatch.Frequency);
            }
          }
          catch (Exception e) { failure = e; }
        }) { Name = "livedlrm-load", IsBackground = true };
        thread.Start();
        thread.Join();
        if (failure is not null) throw new InvalidOperationException($"closed-loop run failed: {failure.Message}", failure);
        times.Sort();
        return times.ToArray();
    }
}
