using System.Text.Json;
using System.Text.Json.Serialization;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>latency.json: an array with one object per mode, snake_case (qps, mode, p50_ms, p99_ms, p999_ms,
/// trainer_samples_per_s, workload, ...). Written to a temporary file and renamed, so a reader never sees half.</summary>
public static class LatencyReportJson
{
    static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Serialize(LatencyReport report) => JsonSerializer.Serialize(report.Modes, Options);

    public static void Write(LatencyReport report, string path)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string tmp = full + ".tmp";
        File.WriteAllText(tmp, Serialize(report));
        File.Move(tmp, full, overwrite: true);
    }
}
