using System.Globalization;
using LiveDlrm.Files;

namespace LiveDlrm.Memory;

/// <summary>
/// Memory this process may still allocate: the smaller of the kernel's MemAvailable and what the cgroup limit
/// leaves (v2 memory.max − memory.current, or v1 limit − usage). Checked before large allocations so a too-big
/// request fails at once with a message naming it, not minutes later with "Out of memory".
/// </summary>
internal static class MemoryBudget
{
    /// <summary>Available bytes, or null when neither /proc/meminfo nor a cgroup limit can be read.</summary>
    public static long? AvailableBytes()
    {
        long? available = MemInfoAvailable();
        long? cgroup = CgroupRemaining("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current")
                    ?? CgroupRemaining("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes");
        return available is null ? cgroup : cgroup is null ? available : Math.Min(available.Value, cgroup.Value);
    }

    /// <summary>Throws <see cref="ResourceLimitException"/> when <paramref name="bytes"/> (for <paramref name="what"/>,
    /// which names the field or option the size comes from) exceed the available memory.</summary>
    public static void Check(string what, long bytes)
    {
        if (bytes < 0) throw new ResourceLimitException($"{what}: the size overflows (more than {long.MaxValue} bytes)");
        if (AvailableBytes() is long available && bytes > available)
            throw new ResourceLimitException($"{what}: needs {Show(bytes)} ({bytes} bytes), more than the {Show(available)} of memory available");
    }

    public static string Show(long bytes) => bytes switch
    {
        >= 1L << 40 => (bytes / (double)(1L << 40)).ToString("F1", CultureInfo.InvariantCulture) + " TiB",
        >= 1L << 30 => (bytes / (double)(1L << 30)).ToString("F1", CultureInfo.InvariantCulture) + " GiB",
        >= 1L << 20 => (bytes / (double)(1L << 20)).ToString("F1", CultureInfo.InvariantCulture) + " MiB",
        _ => bytes.ToString(CultureInfo.InvariantCulture) + " bytes",
    };

    static long? MemInfoAvailable()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line[13..].Trim().Split(' ')[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out long kb))
                    return kb * 1024;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    static long? CgroupRemaining(string limitFile, string usageFile)
    {
        try
        {
            if (!File.Exists(limitFile)) return null;
            string limit = File.ReadAllText(limitFile).Trim();
            if (limit == "max" || !long.TryParse(limit, NumberStyles.Integer, CultureInfo.InvariantCulture, out long max) || max >= long.MaxValue / 2) return null;
            long used = File.Exists(usageFile) && long.TryParse(File.ReadAllText(usageFile).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long u) ? u : 0;
            return Math.Max(0, max - used);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
