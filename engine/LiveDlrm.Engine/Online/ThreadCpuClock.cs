using LiveDlrm.Interop;

namespace LiveDlrm.Online;

/// <summary>CPU time consumed by the calling thread (clock_gettime(CLOCK_THREAD_CPUTIME_ID)). Update costs in the
/// replay are measured with it around the work a trainer or a sync does on its own thread, so time the thread spent
/// waiting or descheduled (2 shared cores) is not billed as cost.</summary>
internal static unsafe class ThreadCpuClock
{
    const int ClockThreadCpuTime = 3;   // CLOCK_THREAD_CPUTIME_ID (linux/time.h)

    /// <summary>Seconds of CPU the calling thread has used. Falls back to the process's total processor time
    /// divided by nothing (an over-estimate) only where libc cannot be loaded.</summary>
    public static double Now()
    {
        if (!NativeLibraries.IsAvailable(Libraries.LibC))
            return System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        LibC.TimeSpec t;
        if (LibC.ClockGetTime(ClockThreadCpuTime, &t) != 0)
            throw new InvalidOperationException($"clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
        return t.Seconds + t.Nanoseconds * 1e-9;
    }
}
