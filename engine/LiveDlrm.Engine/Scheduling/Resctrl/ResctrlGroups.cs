using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Scheduling.Resctrl;

/// <summary>How the hardware resources are split: the inference group gets <see cref="InferenceL3Share"/> of the
/// L3 ways (the trainer the rest, never overlapping) and full memory bandwidth; the trainer's bandwidth is capped at
/// <see cref="TrainerBandwidthPercent"/> of the maximum.</summary>
internal sealed record ResctrlAllocation(double InferenceL3Share = 0.75, int TrainerBandwidthPercent = 30, int InferenceBandwidthPercent = 100);

/// <summary>Thrown when resctrl refuses or cannot hold what was asked; nothing this library created is left behind.</summary>
internal sealed class ResctrlException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>The file operations of the resctrl protocol. The kernel's resctrl needs each value in one write() and
/// removes a group's files itself on rmdir; a plain directory (tests) needs them deleted. Overridable so tests can
/// make the "kernel" refuse.</summary>
internal class ResctrlFileSystem
{
    public virtual void CreateDirectory(string path)
    {
        if (Directory.Exists(path) || File.Exists(path)) throw new IOException($"{path} already exists");
        Directory.CreateDirectory(path);
    }

    /// <summary>One write of the whole text at offset 0, no truncation (kernfs files cannot be truncated).</summary>
    public virtual void Write(string path, string text)
    {
        using var f = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
        byte[] bytes = Encoding.ASCII.GetBytes(text);
        f.Write(bytes);
    }

    /// <summary>Appends (tasks: the kernel takes one TID per write).</summary>
    public virtual void Append(string path, string text)
    {
        using var f = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
        f.Write(Encoding.ASCII.GetBytes(text));
    }

    public virtual string? TryRead(string path) => File.Exists(path) ? File.ReadAllText(path) : null;

    public virtual void RemoveDirectory(string path)
    {
        try { Directory.Delete(path, recursive: false); }
        catch (IOException) when (Directory.Exists(path) && !IsKernelResctrl(path))
        {
            Directory.Delete(path, recursive: true);   // a plain directory standing in for resctrl
        }
    }

    static bool IsKernelResctrl(string path)
    {
        try
        {
            string full = Path.GetFullPath(path);
            return File.ReadLines("/proc/mounts").Select(l => l.Split(' ')).Any(f => f.Length > 2 && f[2] == "resctrl" && full.StartsWith(f[1], StringComparison.Ordinal));
        }
        catch (IOException) { return false; }
    }
}

/// <summary>One resctrl group for inference and one for the trainer: created with their schemata written, TIDs
/// moved in on request, both removed on <see cref="Dispose"/> (the kernel moves their tasks back to the default
/// group). Creation is all or nothing.</summary>
internal sealed class ResctrlGroups : IDisposable
{
    readonly ResctrlFileSystem _fs;
    bool _disposed;

    public ResctrlSupport Support { get; }
    public string InferenceGroup { get; }
    public string TrainerGroup { get; }
    public string InferenceSchemata { get; }
    public string TrainerSchemata { get; }

    ResctrlGroups(ResctrlFileSystem fs, ResctrlSupport support, string inference, string trainer, string inferenceSchemata, string trainerSchemata)
    {
        _fs = fs; Support = support; InferenceGroup = inference; TrainerGroup = trainer;
        InferenceSchemata = inferenceSchemata; TrainerSchemata = trainerSchemata;
    }

    static int _reportedAbsent;

    /// <summary>Creates the groups where resctrl is usable; otherwise reports why through <paramref name="log"/> once
    /// per process and returns null so the caller continues with software QoS only.</summary>
    public static ResctrlGroups? TryCreate(ResctrlSupport support, ResctrlAllocation allocation, ILogger logger, string prefix = "livedlrm")
    {
        if (!support.IsUsable)
        {
            if (Interlocked.Exchange(ref _reportedAbsent, 1) == 0) logger.LogInformation("resctrl: {Reason}; hardware QoS off, software QoS only", support.Reason);
            return null;
        }
        return Create(support, allocation, prefix);
    }

    public static ResctrlGroups Create(ResctrlSupport support, ResctrlAllocation allocation, string prefix = "livedlrm", ResctrlFileSystem? fs = null)
    {
        if (!support.IsUsable) throw new ResctrlException($"resctrl at {support.Root} is not usable: {support.Reason}");
        ArgumentException.ThrowIfNullOrEmpty(prefix);
        if (prefix.Contains('/')) throw new ArgumentException($"group prefix '{prefix}' must not contain '/'", nameof(prefix));
        fs ??= new ResctrlFileSystem();
        var (inferenceSchemata, trainerSchemata) = ComputeSchemata(support, allocation);

        var existing = support.ExistingGroups();
        string inference = Path.Combine(support.Root, $"{prefix}-inference"), trainer = Path.Combine(support.Root, $"{prefix}-trainer");
        foreach (var g in new[] { inference, trainer })
            if (existing.Contains(Path.GetFileName(g)))
                throw new ResctrlException($"resctrl group {g} already exists (left by an earlier run?); remove it with rmdir and retry");
        int inUse = existing.Count + 1;   // + the default group
        if (inUse + 2 > support.NumClosids)
            throw new ResctrlException($"no free CLOSID for 2 groups: the hardware has {support.NumClosids}, {inUse} in use " +
                                       $"(default group{(existing.Count > 0 ? ", " + string.Join(", ", existing) : "")})");

        var created = new List<string>();
        try
        {
            foreach (var (group, schemata) in new[] { (inference, inferenceSchemata), (trainer, trainerSchemata) })
            {
                Step($"create group {group}", () => fs.CreateDirectory(group));
                created.Add(group);
                Step($"write schemata '{schemata.TrimEnd().Replace("\n", "; ")}' to {group}/schemata", () => fs.Write(Path.Combine(group, "schemata"), schemata));
            }
            return new ResctrlGroups(fs, support, inference, trainer, inferenceSchemata, trainerSchemata);
        }
        catch
        {
            for (int i = created.Count - 1; i >= 0; i--)
                try { fs.RemoveDirectory(created[i]); } catch (IOException) { /* the original error matters more */ }
            throw;
        }

        void Step(string what, Action action)
        {
            try { action(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The kernel explains a refused write in info/last_cmd_status.
                string? status = fs.TryRead(Path.Combine(support.Root, "info", "last_cmd_status"))?.Trim();
                throw new ResctrlException($"resctrl refused to {what}: {e.Message}{(string.IsNullOrEmpty(status) || status == "ok" ? "" : $" (last_cmd_status: {status})")}", e);
            }
        }
    }

    /// <summary>The two schemata texts. L3: the trainer gets the low ways, inference the high ones, disjoint and each
    /// at least min_cbm_bits wide (masks stay contiguous as Intel requires). MB: percent rounded up to the step
    /// (never under min_bandwidth), or scaled to the absolute maximum on AMD.</summary>
    public static (string Inference, string Trainer) ComputeSchemata(ResctrlSupport support, ResctrlAllocation allocation)
    {
        if (!(allocation.InferenceL3Share is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(allocation), allocation.InferenceL3Share, "InferenceL3Share must be in (0, 1)");
        if (allocation.TrainerBandwidthPercent is < 1 or > 100) throw new ArgumentOutOfRangeException(nameof(allocation), allocation.TrainerBandwidthPercent, "TrainerBandwidthPercent must be in [1, 100]");
        if (allocation.InferenceBandwidthPercent is < 1 or > 100) throw new ArgumentOutOfRangeException(nameof(allocation), allocation.InferenceBandwidthPercent, "InferenceBandwidthPercent must be in [1, 100]");
        var inference = new StringBuilder();
        var trainer = new StringBuilder();
        if (support.L3 is { } l3)
        {
            int ways = l3.Ways, min = Math.Max(1, l3.MinCbmBits);
            if (ways < 2 * min)
                throw new ResctrlException($"L3 has {ways} ways and groups need at least {min} each: cannot give inference and trainer disjoint ways");
            int trainerWays = Math.Clamp((int)Math.Round(ways * (1 - allocation.InferenceL3Share)), min, ways - min);
            int shift = System.Numerics.BitOperations.TrailingZeroCount(l3.CbmMask);
            ulong trainerMask = ((1UL << trainerWays) - 1) << shift;
            ulong inferenceMask = l3.CbmMask & ~trainerMask;
            inference.Append("L3:").AppendJoin(';', support.L3Domains.Select(d => $"{d}={inferenceMask:x}")).Append('\n');
            trainer.Append("L3:").AppendJoin(';', support.L3Domains.Select(d => $"{d}={trainerMask:x}")).Append('\n');
        }
        if (support.Mb is { } mb)
        {
            int Value(int percent)
            {
                if (mb.MaxValue != 100) return Math.Max(1, (int)Math.Round(mb.MaxValue * percent / 100.0));   // AMD: absolute units
                int step = Math.Max(1, mb.Granularity);
                return Math.Min(100, Math.Max(mb.MinBandwidth, (percent + step - 1) / step * step));
            }
            string I(int v) => v.ToString(CultureInfo.InvariantCulture);
            inference.Append("MB:").AppendJoin(';', support.MbDomains.Select(d => $"{d}={I(Value(allocation.InferenceBandwidthPercent))}")).Append('\n');
            trainer.Append("MB:").AppendJoin(';', support.MbDomains.Select(d => $"{d}={I(Value(allocation.TrainerBandwidthPercent))}")).Append('\n');
        }
        return (inference.ToString(), trainer.ToString());
    }

    public void AssignInference(IEnumerable<int> tids) => Assign(InferenceGroup, tids);
    public void AssignTrainer(IEnumerable<int> tids) => Assign(TrainerGroup, tids);

    void Assign(string group, IEnumerable<int> tids)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (int tid in tids)
        {
            if (tid <= 0) throw new ArgumentOutOfRangeException(nameof(tids), tid, "TIDs are positive");
            try { _fs.Append(Path.Combine(group, "tasks"), tid.ToString(CultureInfo.InvariantCulture) + "\n"); }
            catch (IOException e)
            {
                throw new ResctrlException($"resctrl refused to move TID {tid} into {group}/tasks: {e.Message} (has the thread exited?)", e);
            }
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        var errors = new List<string>();
        foreach (var g in new[] { TrainerGroup, InferenceGroup })
            try { _fs.RemoveDirectory(g); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { errors.Add($"{g}: {e.Message}"); }
        if (errors.Count > 0) throw new ResctrlException("could not remove resctrl group(s): " + string.Join("; ", errors));
    }
}
