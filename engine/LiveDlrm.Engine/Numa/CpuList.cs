using System.Globalization;
using System.Text;

namespace LiveDlrm.Numa;

/// <summary>The kernel's cpulist format ("0-3,8,10-11"), used by /sys, resctrl and our own output.</summary>
internal static class CpuList
{
    /// <summary>Parses a cpulist; empty or whitespace is the empty set. <paramref name="what"/> names the source in
    /// the FormatException a malformed list raises.</summary>
    public static List<int> Parse(string text, string what = "cpulist")
    {
        var result = new SortedSet<int>();
        foreach (var part in text.Trim().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-');
            if (dash < 0) result.Add(ParseInt(part, what, text));
            else
            {
                int lo = ParseInt(part[..dash], what, text), hi = ParseInt(part[(dash + 1)..], what, text);
                if (hi < lo) throw new FormatException($"{what}: range '{part}' is descending in '{text.Trim()}'");
                for (int i = lo; i <= hi; i++) result.Add(i);
            }
        }
        return result.ToList();
    }

    static int ParseInt(string s, string what, string text) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
        : throw new FormatException($"{what}: '{s}' is not a CPU number in '{text.Trim()}'");

    public static string Format(IEnumerable<int> ids)
    {
        var sorted = ids.Distinct().Order().ToList();
        var sb = new StringBuilder();
        for (int i = 0; i < sorted.Count;)
        {
            int j = i;
            while (j + 1 < sorted.Count && sorted[j + 1] == sorted[j] + 1) j++;
            if (sb.Length > 0) sb.Append(',');
            sb.Append(sorted[i].ToString(CultureInfo.InvariantCulture));
            if (j > i) sb.Append('-').Append(sorted[j].ToString(CultureInfo.InvariantCulture));
            i = j + 1;
        }
        return sb.ToString();
    }
}
