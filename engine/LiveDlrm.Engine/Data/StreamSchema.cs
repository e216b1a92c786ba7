using System.Globalization;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;

namespace LiveDlrm.Data;

/// <summary>How a dense column's raw number becomes the model's input.</summary>
public enum DenseTransform
{
    /// <summary>The value as is.</summary>
    None,
    /// <summary><c>log(1 + max(x, 0))</c>: the Criteo/DLRM convention for count features (negatives clamp to 0).</summary>
    Log1p,
}

/// <summary>How a sparse token becomes a row of its table.</summary>
public enum SparseMapping
{
    /// <summary><c>XxHash64(token UTF-8 bytes, seed) mod rows</c> (System.IO.Hashing.XxHash64, unsigned modulo).</summary>
    Hash,
    /// <summary>The token is a decimal integer used as the row itself; it must lie in [0, rows).</summary>
    Integer,
    /// <summary>Row = the token's 0-based line in a vocabulary file (one token a line); tokens not in it map to the
    /// out-of-vocabulary row = vocabulary size, so rows must exceed the vocabulary size.</summary>
    Vocabulary,
}

public sealed record DenseColumn(string Name, DenseTransform Transform);

/// <summary>A sparse column. <paramref name="Separator"/> non-null makes it multi-valued (one index per token, the
/// bag's pooling factor = token count). <paramref name="VocabularyFile"/> is absolute once loaded.</summary>
public sealed record SparseColumn(string Name, string Table, long Rows, SparseMapping Mapping,
                                  ulong HashSeed = 0, string? Separator = null, string? VocabularyFile = null);

/// <summary>Thrown for an invalid schema; the message names the offending field (e.g. <c>sparse[3].rows</c>).</summary>
public sealed class SchemaException(string message) : Exception(message);

/// <summary>
/// Names the columns of a delimited event stream and how each becomes part of an <see cref="EventBatch"/>.
/// JSON form (all keys camelCase):
/// <code>
/// { "name": "criteo", "delimiter": "\t", "header": false,
///   "columns": ["label", "I1", ..., "C26"],           // file column order; unreferenced columns are ignored
///   "label": "label", "timestamp": null,               // timestamp column: unix time (integer)
///   "timestampUnit": "s",                              // "s" | "ms" | "us": read as seconds (floored)
///   "eventsPerSecond": 1000, "startTime": 0,           // without a timestamp: time = startTime + line / eventsPerSecond
///   "trueProbability": null,                           // optional column with the generator's click probability
///   "dense":  [ { "name": "I1", "transform": "log1p" } ],
///   "sparse": [ { "name": "C1", "table": "C1", "rows": 1000000, "mapping": "hash", "hashSeed": 0,
///                 "separator": null, "vocabulary": null } ],
///   "filesOutsideSchemaFolder": false }                // vocabulary files must lie in the schema's folder unless true
/// </code>
/// </summary>
public sealed class StreamSchema
{
    public string Name { get; }
    public char Delimiter { get; }
    public bool Header { get; }
    public IReadOnlyList<string> Columns { get; }
    public string Label { get; }
    public string? Timestamp { get; }
    /// <summary>Unit of the timestamp column: "s", "ms" or "us"; values are converted to whole seconds on read.</summary>
    public string TimestampUnit { get; }
    /// <summary>Timestamp column values per second (1, 1 000 or 1 000 000).</summary>
    public long TimestampUnitsPerSecond => TimestampUnit switch { "ms" => 1_000, "us" => 1_000_000, _ => 1 };
    public double EventsPerSecond { get; }
    public long StartTime { get; }
    public string? TrueProbability { get; }
    public IReadOnlyList<DenseColumn> Dense { get; }
    public IReadOnlyList<SparseColumn> Sparse { get; }
    public EventBatchLayout Layout { get; }
    /// <summary>The schema allows vocabulary files outside its own folder (explicitly, <c>"filesOutsideSchemaFolder": true</c>).</summary>
    public bool FilesOutsideSchemaFolder { get; init; }

    public StreamSchema(string name, IReadOnlyList<string> columns, string label, IReadOnlyList<DenseColumn> dense,
                        IReadOnlyList<SparseColumn> sparse, string? timestamp = null, double eventsPerSecond = 1000,
                        long startTime = 0, string? trueProbability = null, char delimiter = '\t', bool header = false,
                        string timestampUnit = "s")
    {
        TimestampUnit = timestampUnit is "s" or "ms" or "us" ? timestampUnit
            : throw new SchemaException($"timestampUnit: '{timestampUnit}' is not one of s, ms, us");
        Name = string.IsNullOrWhiteSpace(name) ? throw new SchemaException("name: must not be empty") : name;
        Columns = columns?.ToArray() ?? throw new SchemaException("columns: missing");
        Label = label;
        Timestamp = timestamp;
        EventsPerSecond = eventsPerSecond;
        StartTime = startTime;
        TrueProbability = trueProbability;
        Dense = dense?.ToArray() ?? throw new SchemaException("dense: missing");
        Sparse = sparse?.ToArray() ?? throw new SchemaException("sparse: missing");
        Delimiter = delimiter;
        Header = header;
        Validate();
        Layout = new EventBatchLayout(Dense.Count, Sparse.Select(s => new SparseFeatureLayout(s.Name, s.Table, s.Rows)).ToArray(),
                                      hasTrueProbabilities: TrueProbability is not null);
    }

    void Validate()
    {
        if (Columns.Count == 0) throw new SchemaException("columns: must list the file's columns in order");
        var positions = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < Columns.Count; i++)
        {
            if (string.IsNullOrEmpty(Columns[i])) throw new SchemaException($"columns[{i}]: empty column name");
            if (!positions.TryAdd(Columns[i], i)) throw new SchemaException($"columns[{i}]: column '{Columns[i]}' listed twice");
        }
        var usedBy = new Dictionary<string, string>(StringComparer.Ordinal);
        void Use(string? column, string field)
        {
            if (column is null) return;
            if (!positions.ContainsKey(column)) throw new SchemaException($"{field}: column '{column}' is not in columns");
            if (!usedBy.TryAdd(column, field)) throw new SchemaException($"{field}: column '{column}' is already used by {usedBy[column]}");
        }
        if (string.IsNullOrEmpty(Label)) throw new SchemaException("label: missing (the name of the 0/1 click column)");
        Use(Label, "label");
        Use(Timestamp, "timestamp");
        Use(TrueProbability, "trueProbability");
        if (Timestamp is null && !(EventsPerSecond > 0 && double.IsFinite(EventsPerSecond)))
            throw new SchemaException($"eventsPerSecond: must be a positive number when there is no timestamp column (got {EventsPerSecond})");
        if (Delimiter is '\r' or '\n') throw new SchemaException("delimiter: must not be a line break");
        for (int i = 0; i < Dense.Count; i++)
        {
            if (Dense[i] is null) throw new SchemaException($"dense[{i}]: null");
            Use(Dense[i].Name, $"dense[{i}].name");
        }
        var tables = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < Sparse.Count; i++)
        {
            var s = Sparse[i] ?? throw new SchemaException($"sparse[{i}]: null");
            Use(s.Name, $"sparse[{i}].name");
            if (string.IsNullOrEmpty(s.Table)) throw new SchemaException($"sparse[{i}].table: empty table name");
            if (!tables.Add(s.Table)) throw new SchemaException($"sparse[{i}].table: table '{s.Table}' is used by two sparse columns (one table per feature)");
            if (s.Rows <= 0) throw new SchemaException($"sparse[{i}].rows: must be > 0 (got {s.Rows})");
            if (s.Separator is not null && (s.Separator.Length != 1 || s.Separator[0] == Delimiter || s.Separator[0] is '\r' or '\n'))
                throw new SchemaException($"sparse[{i}].separator: must be one character other than the delimiter and line breaks (got '{s.Separator}')");
            if (s.Mapping == SparseMapping.Vocabulary && string.IsNullOrEmpty(s.VocabularyFile))
                throw new SchemaException($"sparse[{i}].vocabulary: mapping 'vocabulary' needs a vocabulary file");
            if (s.Mapping != SparseMapping.Vocabulary && s.VocabularyFile is not null)
                throw new SchemaException($"sparse[{i}].vocabulary: only allowed with mapping 'vocabulary' (mapping is '{s.Mapping.ToString().ToLowerInvariant()}')");
        }
        if (Dense.Count == 0 && Sparse.Count == 0) throw new SchemaException("dense/sparse: the schema has no features");
    }

    public int ColumnIndex(string column)
    {
        for (int i = 0; i < Columns.Count; i++) if (Columns[i] == column) return i;
        return -1;
    }

    /// <summary>The Criteo display-advertising layout: label, I1–I13 (counts, log1p), C1–C26 (hex, hashed), no
    /// timestamp. <paramref name="rowsPerTable"/> bounds each hashed table (the DLRM "max-ind-range").</summary>
    public static StreamSchema Criteo(long rowsPerTable = 1_000_000, double eventsPerSecond = 1000, long startTime = 0, ulong hashSeed = 0)
    {
        var dense = Enumerable.Range(1, 13).Select(i => new DenseColumn($"I{i}", DenseTransform.Log1p)).ToArray();
        var sparse = Enumerable.Range(1, 26).Select(i => new SparseColumn($"C{i}", $"C{i}", rowsPerTable, SparseMapping.Hash, hashSeed)).ToArray();
        var columns = new[] { "label" }.Concat(dense.Select(d => d.Name)).Concat(sparse.Select(s => s.Name)).ToArray();
        return new StreamSchema("criteo", columns, "label", dense, sparse, timestamp: null, eventsPerSecond, startTime);
    }

    /// <summary>Hash of everything that determines the parsed content (the JSON form plus vocabulary file
    /// contents); a binary cache built under another hash is stale.</summary>
    public ulong ContentHash()
    {
        var h = new XxHash64(0x5EED_CAC4E);
        h.Append(Encoding.UTF8.GetBytes(ToJson(relativeTo: null)));
        foreach (var s in Sparse)
            if (s.VocabularyFile is not null && Interop.FileStatusInterop.Stat(s.VocabularyFile).Kind == Interop.FileKind.Regular)
                using (var f = File.OpenRead(s.VocabularyFile)) h.Append(f);
        return h.GetCurrentHashAsUInt64();
    }

    // ---------------------------------------------------------------- JSON

    public static StreamSchema Load(string path)
    {
        if (!Files.SmallFile.TryReadText(path, out string text, out string? error)) throw new SchemaException($"{path}: cannot read schema: the file {error}");
        try { return Parse(text, Path.GetDirectoryName(Path.GetFullPath(path))); }
        catch (SchemaException e) { throw new SchemaException($"{path}: {e.Message}"); }
    }

    /// <summary>Parses the JSON form; vocabulary paths are resolved against <paramref name="baseDirectory"/>.</summary>
    public static StreamSchema Parse(string json, string? baseDirectory = null)
    {
        // System.Text.Json reports a string it cannot transcode (a lone surrogate escape) this way.
        try { return ParseChecked(json, baseDirectory); }
        catch (InvalidOperationException e) { throw new SchemaException($"invalid text in the JSON: {e.Message}"); }
    }

    static StreamSchema ParseChecked(string json, string? baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(json);
        json = json.TrimStart('\uFEFF'); // a byte order mark some editors write
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new SchemaException($"not valid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new SchemaException("the schema must be a JSON object");
            var known = new HashSet<string> { "name", "delimiter", "header", "columns", "label", "timestamp", "timestampUnit", "eventsPerSecond", "startTime", "trueProbability", "dense", "sparse", "filesOutsideSchemaFolder" };
            RejectUnknown(root, known, "");

            string name = OptString(root, "name", "name") ?? "stream";
            string delimiterText = OptString(root, "delimiter", "delimiter") ?? "\t";
            if (delimiterText.Length != 1) throw new SchemaException($"delimiter: must be exactly one character (got '{delimiterText}')");
            bool header = OptBool(root, "header", "header") ?? false;
            bool outside = OptBool(root, "filesOutsideSchemaFolder", "filesOutsideSchemaFolder") ?? false;
            var columns = ReqArray(root, "columns", "columns").Select((c, i) => c.ValueKind == JsonValueKind.String ? c.GetString()! : throw new SchemaException($"columns[{i}]: must be a string")).ToArray();
            string label = OptString(root, "label", "label") ?? throw new SchemaException("label: missing (the name of the 0/1 click column)");
            string? timestamp = OptString(root, "timestamp", "timestamp");
            string timestampUnit = OptString(root, "timestampUnit", "timestampUnit") ?? "s";
            double eps = OptNumber(root, "eventsPerSecond", "eventsPerSecond") ?? 1000;
            long startTime = OptLong(root, "startTime", "startTime") ?? 0;
            string? trueProbability = OptString(root, "trueProbability", "trueProbability");

            var dense = new List<DenseColumn>();
            int di = 0;
            foreach (var d in OptArray(root, "dense", "dense"))
            {
                string at = $"dense[{di++}]";
                if (d.ValueKind == JsonValueKind.String) { dense.Add(new DenseColumn(d.GetString()!, DenseTransform.None)); continue; }
                if (d.ValueKind != JsonValueKind.Object) throw new SchemaException($"{at}: must be a column name or an object");
                RejectUnknown(d, ["name", "transform"], at + ".");
                string dn = OptString(d, "name", at + ".name") ?? throw new SchemaException($"{at}.name: missing");
                string t = OptString(d, "transform", at + ".transform") ?? "none";
                var transform = t switch
                {
                    "none" => DenseTransform.None,
                    "log1p" => DenseTransform.Log1p,
                    _ => throw new SchemaException($"{at}.transform: '{t}' is not one of none, log1p"),
                };
                dense.Add(new DenseColumn(dn, transform));
            }

            var sparse = new List<SparseColumn>();
            int si = 0;
            foreach (var s in OptArray(root, "sparse", "sparse"))
            {
                string at = $"sparse[{si++}]";
                if (s.ValueKind != JsonValueKind.Object) throw new SchemaException($"{at}: must be an object");
                RejectUnknown(s, ["name", "table", "rows", "mapping", "hashSeed", "separator", "vocabulary"], at + ".");
                string sn = OptString(s, "name", at + ".name") ?? throw new SchemaException($"{at}.name: missing");
                string table = OptString(s, "table", at + ".table") ?? sn;
                long rows = OptLong(s, "rows", at + ".rows") ?? throw new SchemaException($"{at}.rows: missing (the table's row count)");
                string m = OptString(s, "mapping", at + ".mapping") ?? "hash";
                var mapping = m switch
                {
                    "hash" => SparseMapping.Hash,
                    "integer" => SparseMapping.Integer,
                    "vocabulary" => SparseMapping.Vocabulary,
                    _ => throw new SchemaException($"{at}.mapping: '{m}' is not one of hash, integer, vocabulary"),
                };
                ulong seed = 0;
                if (s.TryGetProperty("hashSeed", out var seedEl) && seedEl.ValueKind != JsonValueKind.Null)
                    if (seedEl.ValueKind != JsonValueKind.Number || !seedEl.TryGetUInt64(out seed))
                        throw new SchemaException($"{at}.hashSeed: must be a non-negative integer");
                string? separator = OptString(s, "separator", at + ".separator");
                string? vocabulary = OptString(s, "vocabulary", at + ".vocabulary");
                if (vocabulary is not null && baseDirectory is not null)
                {
                    if (vocabulary.Length == 0 || vocabulary.Contains('\0')) throw new SchemaException($"{at}.vocabulary: not a valid path");
                    vocabulary = Path.GetFullPath(Path.Combine(baseDirectory, vocabulary));
                    if (!outside && !Inside(baseDirectory, vocabulary))
                        throw new SchemaException($"{at}.vocabulary: '{vocabulary}' is outside the schema's folder {baseDirectory} (set \"filesOutsideSchemaFolder\": true to allow it)");
                }
                sparse.Add(new SparseColumn(sn, table, rows, mapping, seed, separator, vocabulary));
            }
            return new StreamSchema(name, columns, label, dense, sparse, timestamp, eps, startTime, trueProbability, delimiterText[0], header, timestampUnit)
            {
                FilesOutsideSchemaFolder = outside,
            };
        }
    }

    /// <summary>Whether <paramref name="path"/> lies under <paramref name="folder"/> once symlinks are resolved
    /// (a link inside the folder pointing out of it is outside).</summary>
    static bool Inside(string folder, string path)
    {
        string f = Files.OutputTarget.RealPath(folder) ?? folder;
        string p = Files.OutputTarget.RealPath(path) ?? path;
        return p.StartsWith(f.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    public void Save(string path)
    {
        string full = Path.GetFullPath(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, Files.TempOwner.Name(Path.GetFileName(full), "tmp"));
        File.WriteAllText(tmp, ToJson(Path.GetDirectoryName(full)));
        File.Move(tmp, full, overwrite: true);
    }

    /// <summary>The JSON form; vocabulary paths are written relative to <paramref name="relativeTo"/> when given.</summary>
    public string ToJson(string? relativeTo = null)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", Name);
            w.WriteString("delimiter", Delimiter.ToString());
            w.WriteBoolean("header", Header);
            w.WriteStartArray("columns");
            foreach (var c in Columns) w.WriteStringValue(c);
            w.WriteEndArray();
            w.WriteString("label", Label);
            if (Timestamp is null) w.WriteNull("timestamp"); else w.WriteString("timestamp", Timestamp);
            if (TimestampUnit != "s") w.WriteString("timestampUnit", TimestampUnit);
            w.WriteNumber("eventsPerSecond", EventsPerSecond);
            w.WriteNumber("startTime", StartTime);
            if (TrueProbability is null) w.WriteNull("trueProbability"); else w.WriteString("trueProbability", TrueProbability);
            w.WriteStartArray("dense");
            foreach (var d in Dense)
            {
                w.WriteStartObject();
                w.WriteString("name", d.Name);
                w.WriteString("transform", d.Transform.ToString().ToLowerInvariant());
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("sparse");
            foreach (var s in Sparse)
            {
                w.WriteStartObject();
                w.WriteString("name", s.Name);
                w.WriteString("table", s.Table);
                w.WriteNumber("rows", s.Rows);
                w.WriteString("mapping", s.Mapping.ToString().ToLowerInvariant());
                if (s.Mapping == SparseMapping.Hash) w.WriteNumber("hashSeed", s.HashSeed);
                if (s.Separator is null) w.WriteNull("separator"); else w.WriteString("separator", s.Separator);
                if (s.VocabularyFile is not null)
                    w.WriteString("vocabulary", relativeTo is null ? s.VocabularyFile : Path.GetRelativePath(relativeTo, s.VocabularyFile));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (FilesOutsideSchemaFolder) w.WriteBoolean("filesOutsideSchemaFolder", true);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    static void RejectUnknown(JsonElement obj, IReadOnlyCollection<string> known, string prefix)
    {
        foreach (var p in obj.EnumerateObject())
            if (!known.Contains(p.Name)) throw new SchemaException($"{prefix}{p.Name}: unknown field (known: {string.Join(", ", known)})");
    }

    static string? OptString(JsonElement obj, string key, string field) =>
        !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw new SchemaException($"{field}: must be a string (got {v.ValueKind})");

    static bool? OptBool(JsonElement obj, string key, string field) =>
        !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new SchemaException($"{field}: must be true or false");

    static double? OptNumber(JsonElement obj, string key, string field) =>
        !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new SchemaException($"{field}: must be a number");

    static long? OptLong(JsonElement obj, string key, string field) =>
        !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long l) ? l
        : throw new SchemaException($"{field}: must be an integer (got {v.GetRawText()})");

    static List<JsonElement> ReqArray(JsonElement obj, string key, string field) =>
        obj.TryGetProperty(key, out var v) ? v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : throw new SchemaException($"{field}: must be an array")
        : throw new SchemaException($"{field}: missing");

    static List<JsonElement> OptArray(JsonElement obj, string key, string field) =>
        !obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? []
        : v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : throw new SchemaException($"{field}: must be an array");

    public override string ToString() => $"{Name}: {Dense.Count} dense, {Sparse.Count} sparse, label '{Label}'" +
        (Timestamp is null ? $", time = line / {EventsPerSecond.ToString(CultureInfo.InvariantCulture)} per s" : $", timestamp '{Timestamp}'");
}
