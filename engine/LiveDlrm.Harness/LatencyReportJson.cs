using System.Text.Json;
using System.Text.Json.Serialization;
using LiveDlrm.Reports;

namespace LiveDlrm.Harness;

/// <summary>latency.json: an array with one object per mode, snake_case (qps, mode, p50_ms, p99_ms, p999_ms,
/// trainer_samples_per_s, workload, ...); a figure that could not be measured (NaN) is null. Written to a
/// temporary file and renamed, so a reader never sees half.</summary>
internal static class LatencyReportJson
{
    public static string Serialize(LatencyReport report) => JsonSerializer.Serialize(report.Modes, LatencyJsonContext.Default.IReadOnlyListLatencyModeResult);

    public static void Write(LatencyReport report, string path) => ReportJson.Write(report.Modes, path, LatencyJsonContext.Default.IReadOnlyListLatencyModeResult);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
                             DefaultIgnoreCondition = JsonIgnoreCondition.Never, Converters = [typeof(NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(IReadOnlyList<LatencyModeResult>))]
internal sealed partial class LatencyJsonContext : JsonSerializerContext;
