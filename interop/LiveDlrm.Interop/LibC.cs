using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>glibc: thread affinity, thread ids, precise sleeps and the mbind system call. Always present on Linux,
/// but still resolved through <see cref="NativeLibraries"/> so a test can hide it like any other library.</summary>
internal static unsafe partial class LibC
{
    /// <summary>Bits in glibc's fixed-size <c>cpu_set_t</c> (1024 CPUs, 128 bytes). Masks passed to the affinity
    /// calls are this size so the kernel never sees a shorter mask than it expects.</summary>
    internal const int CpuSetBits = 1024;
    internal const int CpuSetWords = CpuSetBits / 64;

    // int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask);
    // pid 0 = the calling *thread* (affinity is per thread on Linux), which is how threads pin themselves.
    [LibraryImport(Libraries.LibC, EntryPoint = "sched_setaffinity", SetLastError = true)]
    internal static partial int SchedSetAffinity(int pid, nuint cpuSetSize, ulong* mask);

    // int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t *mask);
    [LibraryImport(Libraries.LibC, EntryPoint = "sched_getaffinity", SetLastError = true)]
    internal static partial int SchedGetAffinity(int pid, nuint cpuSetSize, ulong* mask);

    // pid_t gettid(void);   (glibc >= 2.30; Debian 12 has 2.36)
    [LibraryImport(Libraries.LibC, EntryPoint = "gettid")]
    internal static partial int GetTid();

    // void _exit(int status);   ends the process now: no atexit handlers, no static destructors of loaded libraries.
    [LibraryImport(Libraries.LibC, EntryPoint = "_exit")]
    internal static partial void Exit(int status);

    // int sched_getcpu(void);
    [LibraryImport(Libraries.LibC, EntryPoint = "sched_getcpu", SetLastError = true)]
    internal static partial int SchedGetCpu();

    internal const int ClockMonotonic = 1;
    internal const int TimerAbsTime = 1;

    [StructLayout(LayoutKind.Sequential)]
    internal struct TimeSpec { public long Seconds; public long Nanoseconds; }

    // int clock_nanosleep(clockid_t clockid, int flags, const struct timespec *request, struct timespec *remain);
    // Returns the error number directly (not -1/errno). With TIMER_ABSTIME on CLOCK_MONOTONIC it sleeps until an
    // absolute point of the clock Stopwatch reads on Linux, so a wake-up is never late by a rounding of ours.
    [LibraryImport(Libraries.LibC, EntryPoint = "clock_nanosleep")]
    internal static partial int ClockNanoSleep(int clockId, int flags, TimeSpec* request, TimeSpec* remain);

    // int clock_gettime(clockid_t clockid, struct timespec *tp);
    [LibraryImport(Libraries.LibC, EntryPoint = "clock_gettime", SetLastError = true)]
    internal static partial int ClockGetTime(int clockId, TimeSpec* time);

    // long syscall(long number, ...);   glibc has no mbind wrapper (libnuma provides one); the raw call is used so
    // page migration (MPOL_MF_MOVE) works without libnuma. x86-64 numbers.
    internal const long SysMbind = 237;
    internal const int MpolDefault = 0, MpolPreferred = 1, MpolBind = 2, MpolInterleave = 3;
    internal const uint MpolMfStrict = 1, MpolMfMove = 2;

    [LibraryImport(Libraries.LibC, EntryPoint = "syscall", SetLastError = true)]
    internal static partial long Syscall6(long number, nint a1, nint a2, nint a3, nint a4, nint a5, nint a6);

    /// <summary>long mbind(void *addr, unsigned long len, int mode, const unsigned long *nodemask,
    /// unsigned long maxnode, unsigned flags); addr must be page aligned.</summary>
    internal static long Mbind(nint address, nuint length, int mode, ulong* nodeMask, nuint maxNode, uint flags) =>
        Syscall6(SysMbind, address, (nint)length, mode, (nint)nodeMask, (nint)maxNode, (nint)flags);

    internal const int PrioProcess = 0;

    // int setpriority(int which, id_t who, int prio);   on Linux PRIO_PROCESS with a TID sets that one thread's nice
    // value (threads are tasks); lowering it below the current value needs CAP_SYS_NICE (EACCES/EPERM otherwise).
    [LibraryImport(Libraries.LibC, EntryPoint = "setpriority", SetLastError = true)]
    internal static partial int SetPriority(int which, uint who, int prio);

    // int getpriority(int which, id_t who);   -1 is a valid nice value: check errno (the generated stub clears it first)
    [LibraryImport(Libraries.LibC, EntryPoint = "getpriority", SetLastError = true)]
    internal static partial int GetPriority(int which, uint who);

    internal const int SchedOther = 0, SchedIdle = 5;

    [StructLayout(LayoutKind.Sequential)]
    internal struct SchedParam { public int Priority; }

    // int sched_setscheduler(pid_t pid, int policy, const struct sched_param *param);   pid 0 = the calling thread
    // (the policy is per task on Linux). SCHED_IDLE needs sched_priority 0 and no privilege to enter.
    [LibraryImport(Libraries.LibC, EntryPoint = "sched_setscheduler", SetLastError = true)]
    internal static partial int SchedSetScheduler(int pid, int policy, SchedParam* param);

    // int sched_getscheduler(pid_t pid);   the policy of task pid (a TID names one thread)
    [LibraryImport(Libraries.LibC, EntryPoint = "sched_getscheduler", SetLastError = true)]
    internal static partial int SchedGetScheduler(int pid);

    // long sysconf(int name);   _SC_PAGESIZE = 30 on glibc
    [LibraryImport(Libraries.LibC, EntryPoint = "sysconf")]
    internal static partial long SysConf(int name);
    internal const int ScPageSize = 30;
}
