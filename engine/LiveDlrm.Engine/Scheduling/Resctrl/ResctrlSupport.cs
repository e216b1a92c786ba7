using System.Globalization;
using System.Numerics;

namespace LiveDlrm.Scheduling.Resctrl;

/// <summary>L3 cache allocation as resctrl's <c>info/L3/</c> describes it: the full way mask, the fewest ways a
/// group may have, and how many classes of service (CLOSIDs) the hardware offers.</summary>
internal sealed record ResctrlL3Info(ulong CbmMask, int MinCbmBits, int NumClosids)
{
    public int Ways => BitOperations.PopCount(CbmMask);
}

/// <summary>Memory-bandwidth allocation (<c>info/MB/</c>). On Intel the schemata value is a percentage in steps of
/// <see cref="Granularity"/>; on AMD it is an absolute bandwidth whose maximum is what the default group holds, so
/// <see cref="MaxValue"/> is read from the root schemata (100 on Intel).</summary>
internal sealed record ResctrlMbInfo(int MinBandwidth, int Granularity, int NumClosids, int MaxValue);

/// <summary>What a resctrl mount offers, read from <c>info/</c> and the root group's <c>schemata</c>. Never throws for
/// a missing or foreign directory: <see cref="IsUsable"/> is false and <see cref="Reason"/> says why.</summary>
internal sealed record ResctrlSupport(string Root, bool IsUsable, string? Reason, ResctrlL3Info? L3, ResctrlMbInfo? Mb,
                                    IReadOnlyList<int> L3Domains, IReadOnlyList<int> MbDomains)
{
    public const string DefaultRoot = "/sys/fs/resctrl";

    /// <summary>Group directories that exist besides the default (root) group, each holding a CLOSID.</summary>
    public IReadOnlyList<string> ExistingGroups() => !Directory.Exists(Root) ? [] :
        Directory.GetDirectories(Root).Select(Path.GetFileName).Where(n => n is not ("info" or "mon_groups" or "mon_data")).Select(n => n!).Order().ToList();

    /// <summary>CLOSIDs usable by a group needing every detected resource: the smallest count among them.</summary>
    public int NumClosids => Math.Min(L3?.NumClosids ?? int.MaxValue, Mb?.NumClosids ?? int.MaxValue);

    public static ResctrlSupport Detect(string root = DefaultRoot)
    {
        ResctrlSupport No(string reason) => new(root, false, reason, null, null, [], []);
        if (!Directory.Exists(root)) return No($"not mounted ({root} does not exist; needs a CPU with RDT/PQoS and `mount -t resctrl resctrl {root}`)");
        string info = Path.Combine(root, "info");
        if (!Directory.Exists(info)) return No($"{root} has no info/ directory: not a resctrl mount");
        if (!File.Exists(Path.Combine(root, "schemata")) || !File.Exists(Path.Combine(root, "tasks")))
            return No($"{root} lacks schemata/tasks: not a resctrl mount");
        try
        {
            var (l3Domains, mbDomains, mbMax) = ParseRootSchemata(File.ReadAllText(Path.Combine(root, "schemata")), root);
            ResctrlL3Info? l3 = null;
            string l3Dir = Path.Combine(info, "L3");
            if (Directory.Exists(l3Dir))
                l3 = new ResctrlL3Info(ParseHex(Path.Combine(l3Dir, "cbm_mask")), ReadInt(Path.Combine(l3Dir, "min_cbm_bits")), ReadInt(Path.Combine(l3Dir, "num_closids")));
            ResctrlMbInfo? mb = null;
            string mbDir = Path.Combine(info, "MB");
            if (Directory.Exists(mbDir))
                mb = new ResctrlMbInfo(ReadInt(Path.Combine(mbDir, "min_bandwidth")), ReadInt(Path.Combine(mbDir, "bandwidth_gran")),
                                       ReadInt(Path.Combine(mbDir, "num_closids")), mbMax ?? 100);
            if (l3 is null && mb is null) return No($"{root}/info has neither L3 nor MB: no cache or bandwidth allocation to use");
            if (l3 is not null && l3Domains.Count == 0) return No($"{root}/schemata has no L3 line although info/L3 exists");
            if (mb is not null && mbDomains.Count == 0) return No($"{root}/schemata has no MB line although info/MB exists");
            return new ResctrlSupport(root, true, null, l3, mb, l3Domains, mbDomains);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return No($"{root} unreadable: {e.Message}");
        }
    }

    /// <summary>Domain ids of the L3 and MB lines ("L3:0=fff;1=fff", "MB:0=100;1=100"; the kernel indents them),
    /// and the MB value of the default group (the maximum, which tells percent from absolute units).</summary>
    static (List<int> L3, List<int> Mb, int? MbMax) ParseRootSchemata(string text, string root)
    {
        List<int> l3 = [], mb = [];
        int? mbMax = null;
        foreach (var rawLine in text.Split('\n'))
        {
            string line = rawLine.Trim();
            int colon = line.IndexOf(':');
            if (colon < 0) continue;
            string resource = line[..colon];
            if (resource is not ("L3" or "MB")) continue;
            foreach (var entry in line[(colon + 1)..].Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = entry.IndexOf('=');
                if (eq < 0 || !int.TryParse(entry[..eq], NumberStyles.None, CultureInfo.InvariantCulture, out int domain))
                    throw new FormatException($"{root}/schemata: malformed entry '{entry}' in line '{line}'");
                (resource == "L3" ? l3 : mb).Add(domain);
                if (resource == "MB" && int.TryParse(entry[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int v))
                    mbMax = Math.Max(mbMax ?? 0, v);
            }
        }
        return (l3, mb, mbMax);
    }

    static string ReadText(string path) => File.Exists(path) ? File.ReadAllText(path).Trim() : throw new IOException($"{path} is missing");

    static int ReadInt(string path)
    {
        string s = ReadText(path);
        return int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : throw new FormatException($"{path}: '{s}' is not an integer");
    }

    static ulong ParseHex(string path)
    {
        string s = ReadText(path);
        return ulong.TryParse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong v) && v != 0 ? v
            : throw new FormatException($"{path}: '{s}' is not a non-zero hex mask");
    }

    public string Describe()
    {
        if (!IsUsable) return $"unavailable: {Reason}";
        var parts = new List<string> { $"mounted at {Root}" };
        if (L3 is not null) parts.Add($"L3 CAT {L3.Ways} ways (cbm_mask {L3.CbmMask:x}, min {L3.MinCbmBits}) on domains [{string.Join(",", L3Domains)}]");
        if (Mb is not null) parts.Add($"MB min {Mb.MinBandwidth} step {Mb.Granularity} max {Mb.MaxValue} on domains [{string.Join(",", MbDomains)}]");
        parts.Add($"{NumClosids} CLOSIDs, {ExistingGroups().Count + 1} in use");
        return string.Join("; ", parts);
    }
}
