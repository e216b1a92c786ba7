using System.Runtime.InteropServices;
using LiveDlrm.Interop;

namespace LiveDlrm.Numa;

/// <summary>Per-thread CPU affinity through sched_setaffinity/sched_getaffinity with pid 0, i.e. the calling thread.
/// Threads must pin themselves: CoreCLR gives a new thread the affinity the process started with, not the one a
/// parent thread set, and there is no managed way to name another thread's TID at creation.</summary>
internal static unsafe class ThreadAffinity
{
    public static bool IsAvailable => NativeLibraries.IsAvailable(Libraries.LibC);

    /// <summary>Restricts the calling thread to <paramref name="pus"/>. Throws ArgumentException for an empty set or
    /// an id outside [0, 1024), InvalidOperationException with errno when the kernel refuses (e.g. PUs not in the
    /// process's cpuset).</summary>
    public static void PinCurrentThread(IReadOnlyCollection<int> pus)
    {
        if (pus.Count == 0) throw new ArgumentException("cannot pin a thread to an empty PU set", nameof(pus));
        RequireLibC();
        ulong* mask = stackalloc ulong[LibC.CpuSetWords];
        new Span<ulong>(mask, LibC.CpuSetWords).Clear();
        foreach (int pu in pus)
        {
            if ((uint)pu >= LibC.CpuSetBits)
                throw new ArgumentOutOfRangeException(nameof(pus), pu, $"PU id must be in [0, {LibC.CpuSetBits})");
            mask[pu >> 6] |= 1UL << (pu & 63);
        }
        if (LibC.SchedSetAffinity(0, (nuint)(LibC.CpuSetWords * sizeof(ulong)), mask) != 0)
            throw new InvalidOperationException($"sched_setaffinity(thread {CurrentThreadId()}, [{CpuList.Format(pus)}]) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>The PUs the calling thread may run on, as the kernel has them.</summary>
    public static IReadOnlyList<int> GetCurrentThreadAffinity() => GetAffinity(0);

    /// <summary>The PUs thread (or process) <paramref name="tid"/> may run on.</summary>
    public static IReadOnlyList<int> GetAffinity(int tid)
    {
        RequireLibC();
        ulong* mask = stackalloc ulong[LibC.CpuSetWords];
        if (LibC.SchedGetAffinity(tid, (nuint)(LibC.CpuSetWords * sizeof(ulong)), mask) != 0)
            throw new InvalidOperationException($"sched_getaffinity({tid}) failed: errno {Marshal.GetLastPInvokeError()}");
        var result = new List<int>();
        for (int w = 0; w < LibC.CpuSetWords; w++)
            for (ulong bits = mask[w]; bits != 0; bits &= bits - 1)
                result.Add(w * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits));
        return result;
    }

    /// <summary>The Linux TID of the calling thread (what resctrl's <c>tasks</c> file and sched_* calls take).</summary>
    public static int CurrentThreadId() { RequireLibC(); return LibC.GetTid(); }

    /// <summary>The PU the calling thread is running on right now.</summary>
    public static int CurrentPu() { RequireLibC(); return LibC.SchedGetCpu(); }

    /// <summary>Sets the calling thread's nice value (−20 … 19; lower runs first). Returns false, changing nothing,
    /// when the process lacks the privilege to lower it (CAP_SYS_NICE); throws for other failures.</summary>
    public static bool TrySetCurrentThreadNice(int nice)
    {
        if (nice is < -20 or > 19) throw new ArgumentOutOfRangeException(nameof(nice), nice, "nice must be in [-20, 19]");
        RequireLibC();
        int tid = LibC.GetTid();
        if (LibC.SetPriority(LibC.PrioProcess, (uint)tid, nice) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is 1 or 13) return false;   // EPERM, EACCES
        throw new InvalidOperationException($"setpriority(thread {tid}, {nice}) failed: errno {errno}");
    }

    /// <summary>The nice value of thread <paramref name="tid"/>.</summary>
    public static int GetNice(int tid)
    {
        RequireLibC();
        int nice = LibC.GetPriority(LibC.PrioProcess, (uint)tid);
        int errno = Marshal.GetLastPInvokeError();
        if (nice == -1 && errno != 0) throw new InvalidOperationException($"getpriority({tid}) failed: errno {errno}");
        return nice;
    }

    /// <summary>Puts the calling thread under the kernel's SCHED_IDLE policy: it runs only on CPU time no normal
    /// thread wants (weight 3 against a nice-0 thread's 1024), and a waking normal thread preempts it at once instead
    /// of waiting out its slice as it would behind a niced thread. Returns false, changing nothing, when the kernel
    /// refuses (EPERM: a seccomp or container policy); throws for other failures.</summary>
    public static bool TrySetCurrentThreadIdlePolicy()
    {
        RequireLibC();
        var param = new LibC.SchedParam { Priority = 0 };
        if (LibC.SchedSetScheduler(0, LibC.SchedIdle, &param) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is 1 or 13 or 22) return false;   // EPERM, EACCES, EINVAL (a kernel without SCHED_IDLE)
        throw new InvalidOperationException($"sched_setscheduler(thread {LibC.GetTid()}, SCHED_IDLE) failed: errno {errno}");
    }

    /// <summary>Whether thread <paramref name="tid"/> runs under SCHED_IDLE.</summary>
    public static bool IsIdlePolicy(int tid)
    {
        RequireLibC();
        int policy = LibC.SchedGetScheduler(tid);
        if (policy < 0) throw new InvalidOperationException($"sched_getscheduler({tid}) failed: errno {Marshal.GetLastPInvokeError()}");
        return (policy & 0xff) == LibC.SchedIdle;   // the low byte: SCHED_RESET_ON_FORK may be or-ed in
    }

    static void RequireLibC()
    {
        if (!IsAvailable) throw new PlatformNotSupportedException("libc.so.6 is unavailable: thread affinity cannot be set on this platform");
    }
}
