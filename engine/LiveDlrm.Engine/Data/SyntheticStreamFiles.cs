using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using LiveDlrm.Metrics;

namespace LiveDlrm.Data;

/// <summary>What writing a synthetic stream produced, including its known optimum.</summary>
internal sealed record SyntheticStreamSummary(
    long Events, long Clicks, double MeanTrueProbability,
    /// <summary>AUC of the emitted true probabilities against the drawn labels: the best any model can score on this stream.</summary>
    double OptimumAuc,
    /// <summary>The same optimum in expectation over label draws (depends on the probabilities only).</summary>
    double ExpectedOptimumAuc,
    long FirstTimestamp, long LastTimestamp, int NewItemsBorn,
    /// <summary>Events whose item was born during the stream (ids the initial catalog did not have).</summary>
    long NewItemEvents, long TsvBytes, double Seconds,
    string TsvPath, string SchemaPath, string OptimumPath)
{
    public double ClickRate => Events == 0 ? double.NaN : (double)Clicks / Events;
}

/// <summary>Writes the synthetic stream as files: TSV, its schema (<c>NAME.schema.json</c>) and its optimum
/// (<c>NAME.optimum.json</c>). Each file goes to a temporary name first and is renamed into place, so an interrupted
/// run leaves no half-written stream under the final names.</summary>
internal static class SyntheticStreamFiles
{
    public static string SchemaPathFor(string tsvPath) => Path.ChangeExtension(tsvPath, ".schema.json");
    public static string OptimumPathFor(string tsvPath) => Path.ChangeExtension(tsvPath, ".optimum.json");

    /// <summary>Writes <paramref name="events"/> events as TSV with their schema and optimum files beside;
    /// <paramref name="progress"/> gets the events written so far after each batch.</summary>
    public static SyntheticStreamSummary Write(string tsvPath, SyntheticStreamConfig config, long events, int batchSize = 4096, Action<long>? progress = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(events, 1);
        string tsv = Path.GetFullPath(tsvPath);
        Directory.CreateDirectory(Path.GetDirectoryName(tsv)!);
        string schemaPath = SchemaPathFor(tsv), optimumPath = OptimumPathFor(tsv);
        string tmp = Path.Combine(Path.GetDirectoryName(tsv)!, Files.TempOwner.Name(Path.GetFileName(tsv), "tmp"));
        // The optimum AUC needs every event's true probability and label in memory.
        Memory.MemoryBudget.Check($"{events} events (their true probabilities and labels are kept for the optimum AUC)", Runtime.SaturatingMath.Multiply(events, 2 * sizeof(float)));
        if (events > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(events), events, $"at most {Array.MaxLength} events");
        var watch = Stopwatch.StartNew();
        using var source = new SyntheticEventSource(config, events);
        var batch = new EventBatch(source.Schema.Layout, batchSize);
        var probabilities = new float[events];
        var labels = new float[events];
        long n = 0, clicks = 0, first = 0, last = 0, newItemEvents = 0;
        int itemFeature = source.Schema.Layout.SparseIndexOf("item_id");
        double sumP = 0;
        try
        {
            using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                using (var writer = new SyntheticTsvWriter(file))
                    while (source.Read(batch, writer) > 0)
                    {
                        batch.TrueProbabilities.CopyTo(probabilities.AsSpan((int)n));
                        batch.Labels.CopyTo(labels.AsSpan((int)n));
                        foreach (float y in batch.Labels) clicks += (long)y;
                        foreach (long item in batch.Indices(itemFeature)) newItemEvents += item >= config.InitialItems ? 1 : 0;
                        foreach (float p in batch.TrueProbabilities) sumP += p;
                        if (n == 0) first = batch.Timestamps[0];
                        last = batch.Timestamps[^1];
                        n += batch.Count;
                        progress?.Invoke(n);
                    }
                file.Flush(flushToDisk: true);
            }
            long bytes = new FileInfo(tmp).Length;
            double auc = BinaryMetrics.Auc(probabilities, labels);
            double expected = BinaryMetrics.ExpectedAuc(probabilities);
            var summary = new SyntheticStreamSummary(n, clicks, sumP / n, auc, expected, first, last, source.NewItemsBorn, newItemEvents, bytes,
                                                     watch.Elapsed.TotalSeconds, tsv, schemaPath, optimumPath);
            source.Schema.Save(schemaPath);
            WriteOptimum(optimumPath, summary, config);
            File.Move(tmp, tsv, overwrite: true);
            return summary;
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    static void WriteOptimum(string path, SyntheticStreamSummary s, SyntheticStreamConfig c)
    {
        string tmp = Path.Combine(Path.GetDirectoryName(path)!, Files.TempOwner.Name(Path.GetFileName(path), "tmp"));
        // A stream too short for both labels has no AUC: written as null, not as an invalid JSON number.
        var optimum = new SyntheticOptimum(s.Events, c.Seed, c.Drift, s.OptimumAuc, s.ExpectedOptimumAuc, s.ClickRate, s.MeanTrueProbability,
            s.FirstTimestamp, s.LastTimestamp, s.NewItemsBorn, s.NewItemEvents,
            "optimum_auc = AUC of the generator's true click probabilities (column p_true) against the drawn labels");
        using (var f = File.Create(tmp)) JsonSerializer.Serialize(f, optimum, SyntheticJsonContext.Default.SyntheticOptimum);
        File.Move(tmp, path, overwrite: true);
    }
}

/// <summary>NAME.optimum.json: what a model can at best score on a written synthetic stream.</summary>
internal sealed record SyntheticOptimum(long Events, ulong Seed, double Drift, double OptimumAuc, double ExpectedOptimumAuc, double ClickRate,
                                        double MeanTrueProbability, long FirstTimestamp, long LastTimestamp, long NewItemsBorn, long NewItemEvents,
                                        string Note);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
                             Converters = [typeof(Reports.NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(SyntheticOptimum))]
internal sealed partial class SyntheticJsonContext : JsonSerializerContext;
