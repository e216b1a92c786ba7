using System.Diagnostics;
using LiveDlrm.Interop;

namespace LiveDlrm.Scheduling;

/// <summary>Sleeping until an absolute Stopwatch timestamp with sub-millisecond precision and no busy wait (a
/// spinning load generator would steal the very core whose latency it measures). On Linux, Stopwatch reads
/// CLOCK_MONOTONIC in nanoseconds, so clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) wakes at the timestamp itself
/// (plus the kernel's timer slack, ~50 µs); the check at first use confirms the clocks agree. Elsewhere: Thread.Sleep
/// to within 1 ms, then yield.</summary>
internal static unsafe class PreciseClock
{
    static readonly bool UseAbsoluteSleep = ProbeAbsoluteSleep();

    public static bool IsPrecise => UseAbsoluteSleep;

    static bool ProbeAbsoluteSleep()
    {
        if (Stopwatch.Frequency != 1_000_000_000 || !NativeLibraries.IsAvailable(Libraries.LibC)) return false;
        LibC.TimeSpec ts;
        if (LibC.ClockGetTime(LibC.ClockMonotonic, &ts) != 0) return false;
        long mono = ts.Seconds * 1_000_000_000 + ts.Nanoseconds;
        return Math.Abs(Stopwatch.GetTimestamp() - mono) < 1_000_000;
    }

    public static void SleepUntil(long stopwatchTimestamp)
    {
        if (UseAbsoluteSleep)
        {
            var ts = new LibC.TimeSpec { Seconds = stopwatchTimestamp / 1_000_000_000, Nanoseconds = stopwatchTimestamp % 1_000_000_000 };
            while (LibC.ClockNanoSleep(LibC.ClockMonotonic, LibC.TimerAbsTime, &ts, null) == 4 /* EINTR */) { }
            return;
        }
        long oneMs = Stopwatch.Frequency / 1000;
        long remaining;
        while ((remaining = stopwatchTimestamp - Stopwatch.GetTimestamp()) > 2 * oneMs)
            Thread.Sleep(TimeSpan.FromTicks((remaining - oneMs) * TimeSpan.TicksPerSecond / Stopwatch.Frequency));
        while (Stopwatch.GetTimestamp() < stopwatchTimestamp) Thread.Yield();
    }
}
