using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace LiveDlrm.Reports;

/// <summary>A metric that could not be computed (AUC of one class, a ratio over zero) is NaN in memory and null in
/// a report: JSON has no NaN, and a reader should see "no value", not a made-up number.</summary>
internal sealed class NonFiniteAsNullConverter : JsonConverter<double>
{
    public override bool HandleNull => true;

    public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.Null ? double.NaN : reader.GetDouble();

    public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
    {
        if (double.IsFinite(value)) writer.WriteNumberValue(value);
        else writer.WriteNullValue();
    }
}

/// <summary>Report files (replay, eval, benchmarks), written through source-generated serializers (snake_case, NaN
/// as null): each writer declares a <c>JsonSerializerContext</c> with <see cref="NonFiniteAsNullConverter"/>.</summary>
internal static class ReportJson
{
    /// <summary>Writes <paramref name="value"/> to a temporary file beside <paramref name="path"/>, then renames it
    /// over the target, so a reader never sees a half-written report. Returns the full path.</summary>
    public static string Write<T>(T value, string path, JsonTypeInfo<T> typeInfo)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string tmp = full + $".tmp-{Environment.ProcessId}";
        try
        {
            using (var stream = File.Create(tmp)) JsonSerializer.Serialize(stream, value, typeInfo);
            File.Move(tmp, full, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
        return full;
    }
}
