using System.Globalization;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LiveDlrm.Files;

namespace LiveDlrm.Data;

/// <summary>How a dense column's raw number becomes the model's input.</summary>
internal enum DenseTransform
{
    /// <summary>The value as is.</summary>
    None,
    /// <summary><c>log(1 + max(x, 0))</c>: the Criteo/DLRM convention for count features (negatives clamp to 0).</summary>
    Log1p,
}

/// <summary>How a sparse token becomes a row of its table.</summary>
internal enum SparseMapping
{
    /// <summary><c>XxHash64(token UTF-8 bytes, seed) mod rows</c> (System.IO.Hashing.XxHash64, unsigned modulo).</summary>
    Hash,
    /// <summary>The token is a decimal integer used as the row itself; it must lie in [0, rows).</summary>
    Integer,
    /// <summary>Row = the token's 0-based line in a vocabulary file (one token a line); tokens not in it map to the
    /// out-of-vocabulary row = vocabulary size, so rows must exceed the vocabulary size.</summary>
    Vocabulary,
}

internal sealed record DenseColumn(string Name, DenseTransform Transform);

/// <summary>A sparse column. <paramref name="Separator"/> non-null makes it multi-valued (one index per token, the
/// bag's pooling factor = token count). <paramref name="VocabularyFile"/> is absolute once loaded.</summary>
internal sealed record SparseColumn(string Name, string Table, long Rows, SparseMapping Mapping,
                                  ulong HashSeed = 0, string? Separator = null, string? VocabularyFile = null);

/// <summary>Thrown for an invalid schema; the message names the offending field (e.g. <c>sparse[3].rows</c>).</summary>
internal sealed class SchemaException(string message) : Exception(message);

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
internal sealed class StreamSchema
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
        ArgumentNullException.ThrowIfNull(json);
        var doc = JsonFieldReader.Read(json.TrimStart('\uFEFF'), SchemaJsonContext.Default.StreamSchemaJson, "the schema", Error); // a byte order mark some editors write
        string name = doc.Name ?? "stream";
        string delimiterText = doc.Delimiter ?? "\t";
        if (delimiterText.Length != 1) throw new SchemaException($"delimiter: must be exactly one character (got '{delimiterText}')");
        bool outside = doc.FilesOutsideSchemaFolder ?? false;
        var columnsJson = doc.Columns ?? throw new SchemaException("columns: missing");
        var columns = columnsJson.Select((c, i) => c ?? throw new SchemaException($"columns[{i}]: must be a string")).ToArray();
        string label = doc.Label ?? throw new SchemaException("label: missing (the name of the 0/1 click column)");

        var dense = new List<DenseColumn>();
        for (int i = 0; i < (doc.Dense?.Count ?? 0); i++)
        {
            var d = doc.Dense![i];
            string at = $"dense[{i}]";
            if (d.ValueKind == JsonValueKind.String)
            {
                // A string the reader cannot transcode (a lone surrogate escape) is reported like any other bad field.
                try { dense.Add(new DenseColumn(d.GetString()!, DenseTransform.None)); }
                catch (InvalidOperationException) { throw new SchemaException($"{at}: must be a string of valid text"); }
                continue;
            }
            if (d.ValueKind != JsonValueKind.Object) throw new SchemaException($"{at}: must be a column name or an object");
            var column = JsonFieldReader.Read(d, SchemaJsonContext.Default.DenseColumnJson, at, "the schema", Error);
            string dn = column.Name ?? throw new SchemaException($"{at}.name: missing");
            string t = column.Transform ?? "none";
            var transform = t switch
            {
                "none" => DenseTransform.None,
                "log1p" => DenseTransform.Log1p,
                _ => throw new SchemaException($"{at}.transform: '{t}' is not one of none, log1p"),
            };
            dense.Add(new DenseColumn(dn, transform));
        }

        var sparse = new List<SparseColumn>();
        for (int i = 0; i < (doc.Sparse?.Count ?? 0); i++)
        {
            string at = $"sparse[{i}]";
            var s = doc.Sparse![i] ?? throw new SchemaException($"{at}: must be an object");
            string sn = s.Name ?? throw new SchemaException($"{at}.name: missing");
            string table = s.Table ?? sn;
            long rows = s.Rows ?? throw new SchemaException($"{at}.rows: missing (the table's row count)");
            string m = s.Mapping ?? "hash";
            var mapping = m switch
            {
                "hash" => SparseMapping.Hash,
                "integer" => SparseMapping.Integer,
                "vocabulary" => SparseMapping.Vocabulary,
                _ => throw new SchemaException($"{at}.mapping: '{m}' is not one of hash, integer, vocabulary"),
            };
            string? vocabulary = s.Vocabulary;
            if (vocabulary is not null && baseDirectory is not null)
            {
                if (vocabulary.Length == 0 || vocabulary.Contains('\0')) throw new SchemaException($"{at}.vocabulary: not a valid path");
                vocabulary = Path.GetFullPath(Path.Combine(baseDirectory, vocabulary));
                if (!outside && !Inside(baseDirectory, vocabulary))
                    throw new SchemaException($"{at}.vocabulary: '{vocabulary}' is outside the schema's folder {baseDirectory} (set \"filesOutsideSchemaFolder\": true to allow it)");
            }
            sparse.Add(new SparseColumn(sn, table, rows, mapping, s.HashSeed ?? 0, s.Separator, vocabulary));
        }
        return new StreamSchema(name, columns, label, dense, sparse, doc.Timestamp, doc.EventsPerSecond ?? 1000, doc.StartTime ?? 0,
                                doc.TrueProbability, delimiterText[0], doc.Header ?? false, doc.TimestampUnit ?? "s")
        {
            FilesOutsideSchemaFolder = outside,
        };
    }

    static SchemaException Error(string message) => new(message);

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
    public string ToJson(string? relativeTo = null) => JsonSerializer.Serialize(new StreamSchemaJson
    {
        Name = Name,
        Delimiter = Delimiter.ToString(),
        Header = Header,
        Columns = Columns.ToList()!,
        Label = Label,
        Timestamp = Timestamp,
        TimestampUnit = TimestampUnit == "s" ? null : TimestampUnit,
        EventsPerSecond = EventsPerSecond,
        StartTime = StartTime,
        TrueProbability = TrueProbability,
        Dense = Dense.Select(d => JsonSerializer.SerializeToElement(
            new DenseColumnJson { Name = d.Name, Transform = d.Transform.ToString().ToLowerInvariant() }, SchemaJsonContext.Default.DenseColumnJson)).ToList(),
        Sparse = Sparse.Select(s => (SparseColumnJson?)new SparseColumnJson
        {
            Name = s.Name,
            Table = s.Table,
            Rows = s.Rows,
            Mapping = s.Mapping.ToString().ToLowerInvariant(),
            HashSeed = s.Mapping == SparseMapping.Hash ? s.HashSeed : null,
            Separator = s.Separator,
            Vocabulary = s.VocabularyFile is null ? null : relativeTo is null ? s.VocabularyFile : Path.GetRelativePath(relativeTo, s.VocabularyFile),
        }).ToList(),
        FilesOutsideSchemaFolder = FilesOutsideSchemaFolder ? true : null,
    }, SchemaJsonContext.Default.StreamSchemaJson);

    public override string ToString() => $"{Name}: {Dense.Count} dense, {Sparse.Count} sparse, label '{Label}'" +
        (Timestamp is null ? $", time = line / {EventsPerSecond.ToString(CultureInfo.InvariantCulture)} per s" : $", timestamp '{Timestamp}'");
}

/// <summary>The JSON form of <see cref="StreamSchema"/> as the serializer sees it: every field optional, so that a
/// missing one gets its own message. A dense entry is a column name or an object, hence read as an element.</summary>
internal sealed class StreamSchemaJson
{
    public string? Name { get; set; }
    public string? Delimiter { get; set; }
    public bool? Header { get; set; }
    public List<string?>? Columns { get; set; }
    public string? Label { get; set; }
    public string? Timestamp { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? TimestampUnit { get; set; }
    public double? EventsPerSecond { get; set; }
    public long? StartTime { get; set; }
    public string? TrueProbability { get; set; }
    public List<JsonElement>? Dense { get; set; }
    public List<SparseColumnJson?>? Sparse { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public bool? FilesOutsideSchemaFolder { get; set; }
}

internal sealed class DenseColumnJson
{
    public string? Name { get; set; }
    public string? Transform { get; set; }
}

internal sealed class SparseColumnJson
{
    public string? Name { get; set; }
    public string? Table { get; set; }
    public long? Rows { get; set; }
    public string? Mapping { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public ulong? HashSeed { get; set; }
    public string? Separator { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Vocabulary { get; set; }
}

/// <summary>Source-generated reader and writer of the schema (camelCase; an unknown field is an error; comments and
/// trailing commas are allowed in a hand-written file).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, AllowTrailingCommas = true,
                             ReadCommentHandling = JsonCommentHandling.Skip, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(StreamSchemaJson))]
[JsonSerializable(typeof(DenseColumnJson))]
internal sealed partial class SchemaJsonContext : JsonSerializerContext;
