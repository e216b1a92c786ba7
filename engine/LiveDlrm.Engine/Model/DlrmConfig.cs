using System.Text.Json;
using System.Text.Json.Serialization;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;
using LiveDlrm.Files;

namespace LiveDlrm.Model;

/// <summary>Thrown for an invalid model config; the message names the offending field (e.g. <c>tables[2].dim</c>).</summary>
internal sealed class DlrmConfigException(string message) : Exception(message);

/// <summary>One embedding table of the model (feature i of an <see cref="EventBatch"/> feeds table i).</summary>
internal sealed record DlrmTableConfig(string Name, long Rows, int Dim, PoolingMode Pooling, EmbeddingStorage Storage);

/// <summary>
/// Shape of a DLRM (facebookresearch/dlrm): bottom MLP over the dense features → d; one embedding bag per sparse
/// feature, every table of dim d; dot interaction of [bottom, emb_1..emb_T] (strict upper triangle, or with the
/// diagonal when <see cref="SelfInteraction"/>), concatenated with the bottom output; top MLP → one logit.
/// JSON form (camelCase):
/// <code>
/// { "denseFeatures": 13, "bottomMlp": [64, 16], "topMlp": [64, 1],
///   "interaction": "dot", "selfInteraction": false,
///   "tables": [ { "name": "C1", "rows": 100000, "dim": 16, "pooling": "sum", "storage": "fp32" } ] }
/// </code>
/// <c>bottomMlp</c> lists layer output widths (its input is <c>denseFeatures</c>; the last width is d);
/// <c>topMlp</c> likewise (input = d + number of pairs; the last width must be 1). As in dlrm_s_pytorch.py every
/// bottom layer is followed by ReLU, every top layer but the last too (the last gives the logit).
/// <para>Id-only streams: <c>"denseFeatures": 0, "bottomMlp": []</c> is the model without a bottom MLP — the
/// interaction runs over the table vectors alone and the top MLP's input is just the pairs (d comes from the
/// tables' <c>dim</c>).</para>
/// </summary>
internal sealed class DlrmConfig
{
    public int DenseFeatures { get; }
    public IReadOnlyList<int> BottomMlp { get; }
    public IReadOnlyList<int> TopMlp { get; }
    public bool SelfInteraction { get; }
    public IReadOnlyList<DlrmTableConfig> Tables { get; }

    /// <summary>Embedding dim = bottom MLP output width (= every table's dim).</summary>
    public int Dim => Tables[0].Dim;
    /// <summary>False for the id-only shape: no dense features, no bottom MLP.</summary>
    public bool HasBottom => BottomMlp.Count > 0;
    /// <summary>Vectors entering the interaction: the bottom output (when there is one) plus one per table.</summary>
    public int InteractionVectors => Tables.Count + (HasBottom ? 1 : 0);
    public int InteractionPairs => SelfInteraction ? InteractionVectors * (InteractionVectors + 1) / 2 : InteractionVectors * (InteractionVectors - 1) / 2;
    /// <summary>Top MLP input: the bottom output (when there is one) followed by the pairs.</summary>
    public int TopInput => (HasBottom ? Dim : 0) + InteractionPairs;
    /// <summary>Widest layer (and embedding dim) accepted.</summary>
    public const int MaxWidth = 1 << 20;

    /// <summary>Bytes of all tables (validated by the constructor not to overflow).</summary>
    public long TableBytes => Tables.Sum(t => t.Rows * EmbeddingTable.StrideOf(t.Dim, t.Storage));

    /// <summary>Throws <see cref="Files.ResourceLimitException"/> naming the largest table when the tables need more
    /// memory than is available; <paramref name="copies"/> models of this shape are to be held at once.</summary>
    public void CheckMemory(int copies = 1)
    {
        long bytes = TableBytes;
        long total = bytes > long.MaxValue / Math.Max(copies, 1) ? -1 : bytes * Math.Max(copies, 1);
        int largest = 0;
        for (int i = 1; i < Tables.Count; i++)
            if (Tables[i].Rows * EmbeddingTable.StrideOf(Tables[i].Dim, Tables[i].Storage) > Tables[largest].Rows * EmbeddingTable.StrideOf(Tables[largest].Dim, Tables[largest].Storage)) largest = i;
        var t = Tables[largest];
        Memory.MemoryBudget.Check($"the model's {Tables.Count} embedding tables{(copies > 1 ? $" × {copies} copies" : "")} (largest: tables[{largest}] '{t.Name}', {t.Rows} rows × {EmbeddingTable.StrideOf(t.Dim, t.Storage)} bytes)", total);
    }

    public DlrmConfig(int denseFeatures, IReadOnlyList<int> bottomMlp, IReadOnlyList<int> topMlp, IReadOnlyList<DlrmTableConfig> tables,
                      bool selfInteraction = false)
    {
        ArgumentNullException.ThrowIfNull(bottomMlp);
        ArgumentNullException.ThrowIfNull(topMlp);
        ArgumentNullException.ThrowIfNull(tables);
        if (denseFeatures < 0) throw new DlrmConfigException($"denseFeatures: {denseFeatures} must be at least 0");
        if (denseFeatures > 0 && bottomMlp.Count == 0) throw new DlrmConfigException("bottomMlp: needs at least one layer when there are dense features (its last width is the embedding dim)");
        if (denseFeatures == 0 && bottomMlp.Count > 0) throw new DlrmConfigException("bottomMlp: must be empty when denseFeatures is 0 (there is no dense input to feed it)");
        if (denseFeatures > MaxWidth) throw new DlrmConfigException($"denseFeatures: {denseFeatures} is more than {MaxWidth}");
        for (int i = 0; i < bottomMlp.Count; i++)
            if (bottomMlp[i] is < 1 or > MaxWidth) throw new DlrmConfigException($"bottomMlp[{i}]: width {bottomMlp[i]} must be in [1, {MaxWidth}]");
        if (topMlp.Count == 0) throw new DlrmConfigException("topMlp: needs at least one layer (the last, of width 1, gives the logit)");
        for (int i = 0; i < topMlp.Count; i++)
            if (topMlp[i] is < 1 or > MaxWidth) throw new DlrmConfigException($"topMlp[{i}]: width {topMlp[i]} must be in [1, {MaxWidth}]");
        if (topMlp[^1] != 1) throw new DlrmConfigException($"topMlp[{topMlp.Count - 1}]: the last layer gives the logit, so its width must be 1 (got {topMlp[^1]})");
        if (tables.Count == 0) throw new DlrmConfigException("tables: needs at least one embedding table");
        int d = bottomMlp.Count > 0 ? bottomMlp[^1] : tables[0]?.Dim ?? 0;
        if (d < 1) throw new DlrmConfigException($"tables[0].dim: {d} must be at least 1");
        int vectors = tables.Count + (bottomMlp.Count > 0 ? 1 : 0);
        if (vectors == 1 && !selfInteraction)
            throw new DlrmConfigException("tables: one table and no dense features leave the dot interaction no pair; set selfInteraction or add a table");
        if (tables.Count > 4096) throw new DlrmConfigException($"tables: {tables.Count} tables, more than the 4096 supported");
        var names = new HashSet<string>(StringComparer.Ordinal);
        long totalTableBytes = 0;
        for (int i = 0; i < tables.Count; i++)
        {
            var t = tables[i] ?? throw new DlrmConfigException($"tables[{i}]: is null");
            if (string.IsNullOrEmpty(t.Name)) throw new DlrmConfigException($"tables[{i}].name: missing or empty");
            if (t.Name.IndexOfAny(['/', '\\', '\0']) >= 0 || t.Name is "." or "..")
                throw new DlrmConfigException($"tables[{i}].name: '{t.Name}' cannot be used (it names the table's checkpoint file)");
            if (!names.Add(t.Name)) throw new DlrmConfigException($"tables[{i}].name: '{t.Name}' appears twice");
            if (t.Rows < 1) throw new DlrmConfigException($"tables[{i}].rows: {t.Rows} must be at least 1");
            if (t.Dim != d) throw new DlrmConfigException(bottomMlp.Count > 0
                ? $"tables[{i}].dim: {t.Dim} differs from the bottom MLP output width {d} (the dot interaction needs one dim for all)"
                : $"tables[{i}].dim: {t.Dim} differs from tables[0].dim {d} (the dot interaction needs one dim for all)");
            if (!Enum.IsDefined(t.Pooling)) throw new DlrmConfigException($"tables[{i}].pooling: unknown value {t.Pooling}");
            if (t.Pooling == PoolingMode.WeightedSum)
                throw new DlrmConfigException($"tables[{i}].pooling: weighted pooling needs per-index weights, which event batches do not carry; use sum or mean");
            if (!Enum.IsDefined(t.Storage)) throw new DlrmConfigException($"tables[{i}].storage: unknown value {t.Storage}");
            long tableBytes = (Int128)t.Rows * EmbeddingTable.StrideOf(t.Dim, t.Storage) is var b && b <= long.MaxValue / 2 ? (long)b : -1;
            if (tableBytes < 0 || (totalTableBytes += tableBytes) > long.MaxValue / 2)
                throw new DlrmConfigException($"tables[{i}].rows: {t.Rows} rows of dim {t.Dim} overflow a 64-bit byte count");
        }
        // The dense net is held in one array by a checkpoint: its parameters must fit one.
        Int128 parameters = 0;
        int width = denseFeatures;
        foreach (int w in bottomMlp) { parameters += (Int128)width * w + w; width = w; }
        int pairs = selfInteraction ? (tables.Count + 1) * (tables.Count + 2) / 2 : tables.Count * (tables.Count + 1) / 2;
        width = d + pairs;
        foreach (int w in topMlp) { parameters += (Int128)width * w + w; width = w; }
        if (parameters * sizeof(float) > Array.MaxLength)
            throw new DlrmConfigException($"bottomMlp/topMlp: {parameters} dense parameters, more than the {Array.MaxLength / sizeof(float)} a model may have");
        DenseFeatures = denseFeatures;
        BottomMlp = bottomMlp.ToArray();
        TopMlp = topMlp.ToArray();
        Tables = tables.ToArray();
        SelfInteraction = selfInteraction;
    }

    /// <summary>Pairs (i, j) of the interaction in the output order of dlrm_s_pytorch.py: for i in 0..n, j &lt; i
    /// (j ≤ i with self-interaction). Vector 0 is the bottom output and vector 1 + t is table t; without a bottom
    /// MLP vector t is table t (see <see cref="TableVector"/>).</summary>
    public IReadOnlyList<(int I, int J)> PairOrder()
    {
        var pairs = new List<(int, int)>(InteractionPairs);
        int n = InteractionVectors, offset = SelfInteraction ? 1 : 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i + offset; j++) pairs.Add((i, j));
        return pairs;
    }

    /// <summary>Index of table <paramref name="table"/>'s vector in the interaction.</summary>
    public int TableVector(int table) => table + (HasBottom ? 1 : 0);

    /// <summary>Checks that batches of <paramref name="layout"/> fit this model: same dense width, one sparse
    /// feature per table with the table's name, feature rows within the table's rows.</summary>
    public void CheckLayout(EventBatchLayout layout)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (layout.DenseCount != DenseFeatures)
            throw new ArgumentException($"the batch has {layout.DenseCount} dense features, the model's denseFeatures is {DenseFeatures}");
        if (layout.SparseCount != Tables.Count)
            throw new ArgumentException($"the batch has {layout.SparseCount} sparse features, the model has {Tables.Count} tables");
        for (int i = 0; i < Tables.Count; i++)
        {
            var f = layout.Sparse[i];
            if (f.Table != Tables[i].Name)
                throw new ArgumentException($"sparse feature {i} ('{f.Name}') indexes table '{f.Table}', the model's table {i} is '{Tables[i].Name}'");
            if (f.Rows > Tables[i].Rows)
                throw new ArgumentException($"sparse feature {i} ('{f.Name}') emits rows up to {f.Rows}, table '{Tables[i].Name}' has {Tables[i].Rows}");
        }
    }

    /// <summary>A config whose tables follow a stream layout (names and rows), everything else given.</summary>
    public static DlrmConfig ForLayout(EventBatchLayout layout, IReadOnlyList<int> bottomMlp, IReadOnlyList<int> topMlp,
                                       PoolingMode pooling = PoolingMode.Sum, EmbeddingStorage storage = EmbeddingStorage.Fp32, bool selfInteraction = false,
                                       int dim = 0)
    {
        ArgumentNullException.ThrowIfNull(layout);
        // Without dense features there is no bottom MLP; the tables' dim is then given (or the bottom's last width),
        // and the interaction keeps the self-pairs ‖e_t‖²: with table × table pairs alone a per-id bias, the
        // strongest signal of most id-only logs, would have no input to come from.
        if (layout.DenseCount == 0) { dim = dim > 0 ? dim : bottomMlp.Count > 0 ? bottomMlp[^1] : 0; bottomMlp = []; selfInteraction = true; }
        int d = bottomMlp.Count > 0 ? bottomMlp[^1] : dim;
        var tables = layout.Sparse.Select(s => new DlrmTableConfig(s.Table, s.Rows, d, pooling, storage)).ToArray();
        return new DlrmConfig(layout.DenseCount, bottomMlp, topMlp, tables, selfInteraction);
    }

    // ---------------------------------------------------------------- JSON

    public static DlrmConfig Load(string path)
    {
        if (!Files.SmallFile.TryReadText(path, out string text, out string? error)) throw new DlrmConfigException($"{path}: cannot read model config: the file {error}");
        try { return Parse(text); }
        catch (DlrmConfigException e) { throw new DlrmConfigException($"{path}: {e.Message}"); }
    }

    public static DlrmConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        return FromDocument(JsonFieldReader.Read(json.TrimStart('\uFEFF'), ModelJsonContext.Default.DlrmConfigJson, "the model config", Error));
    }

    /// <summary>The config held in a larger document (a checkpoint's manifest).</summary>
    public static DlrmConfig FromJson(JsonElement root) =>
        FromDocument(JsonFieldReader.Read(root, ModelJsonContext.Default.DlrmConfigJson, "", "the model config", Error));

    static DlrmConfigException Error(string message) => new(message);

    static DlrmConfig FromDocument(DlrmConfigJson doc)
    {
        long dense = doc.DenseFeatures ?? throw new DlrmConfigException("denseFeatures: missing");
        if (dense is < int.MinValue or > int.MaxValue) throw new DlrmConfigException($"denseFeatures: {dense} is out of range");
        int[] bottom = doc.BottomMlp ?? throw new DlrmConfigException("bottomMlp: missing or not an array of layer widths");
        int[] top = doc.TopMlp ?? throw new DlrmConfigException("topMlp: missing or not an array of layer widths");
        string interaction = doc.Interaction ?? "dot";
        if (interaction != "dot") throw new DlrmConfigException($"interaction: '{interaction}' is not supported (only \"dot\")");
        var tablesJson = doc.Tables ?? throw new DlrmConfigException("tables: missing or not an array");
        var tables = new List<DlrmTableConfig>(tablesJson.Count);
        for (int i = 0; i < tablesJson.Count; i++)
        {
            string at = $"tables[{i}]";
            var t = tablesJson[i] ?? throw new DlrmConfigException($"{at}: must be an object");
            string name = t.Name ?? throw new DlrmConfigException($"{at}.name: missing");
            long rows = t.Rows ?? throw new DlrmConfigException($"{at}.rows: missing");
            long dim = t.Dim ?? (bottom.Length > 0 ? bottom[^1] : throw new DlrmConfigException($"{at}.dim: missing (there is no bottom MLP to take it from)"));
            if (dim is < int.MinValue or > int.MaxValue) throw new DlrmConfigException($"{at}.dim: {dim} is out of range");
            string p = t.Pooling ?? "sum";
            var pooling = p switch
            {
                "sum" => PoolingMode.Sum,
                "mean" => PoolingMode.Mean,
                "weighted" or "weightedSum" => PoolingMode.WeightedSum,
                _ => throw new DlrmConfigException($"{at}.pooling: '{p}' is not one of sum, mean"),
            };
            string s = t.Storage ?? "fp32";
            var storage = s switch
            {
                "fp32" => EmbeddingStorage.Fp32,
                "fp16" => EmbeddingStorage.Fp16,
                "int8" or "int8rowwise" => EmbeddingStorage.Int8Rowwise,
                _ => throw new DlrmConfigException($"{at}.storage: '{s}' is not one of fp32, fp16, int8"),
            };
            tables.Add(new DlrmTableConfig(name, rows, (int)dim, pooling, storage));
        }
        return new DlrmConfig((int)dense, bottom, top, tables, doc.SelfInteraction ?? false);
    }

    public string ToJson() => JsonSerializer.Serialize(ToDocument(), ModelJsonContext.Default.DlrmConfigJson);

    public void WriteJson(Utf8JsonWriter w) => JsonSerializer.Serialize(w, ToDocument(), ModelJsonContext.Default.DlrmConfigJson);

    DlrmConfigJson ToDocument() => new()
    {
        DenseFeatures = DenseFeatures,
        BottomMlp = BottomMlp.ToArray(),
        TopMlp = TopMlp.ToArray(),
        Interaction = "dot",
        SelfInteraction = SelfInteraction,
        Tables = Tables.Select(t => (DlrmTableJson?)new DlrmTableJson
        {
            Name = t.Name,
            Rows = t.Rows,
            Dim = t.Dim,
            Pooling = t.Pooling switch { PoolingMode.Sum => "sum", PoolingMode.Mean => "mean", _ => "weighted" },
            Storage = t.Storage switch { EmbeddingStorage.Fp32 => "fp32", EmbeddingStorage.Fp16 => "fp16", _ => "int8" },
        }).ToList(),
    };

    /// <summary>Two configs describe the same model shape (used to match a checkpoint against its files).</summary>
    public bool SameShape(DlrmConfig other) => ToJson() == other.ToJson();
}

/// <summary>The JSON form of <see cref="DlrmConfig"/> as the serializer sees it. Every field is optional here so that
/// a missing one gets its own message; the values are checked by <see cref="DlrmConfig"/>'s constructor.</summary>
internal sealed class DlrmConfigJson
{
    public long? DenseFeatures { get; set; }
    public int[]? BottomMlp { get; set; }
    public int[]? TopMlp { get; set; }
    public string? Interaction { get; set; }
    public bool? SelfInteraction { get; set; }
    public List<DlrmTableJson?>? Tables { get; set; }
}

internal sealed class DlrmTableJson
{
    public string? Name { get; set; }
    public long? Rows { get; set; }
    public long? Dim { get; set; }
    public string? Pooling { get; set; }
    public string? Storage { get; set; }
}

/// <summary>Source-generated reader and writer of the model config (camelCase; an unknown field is an error;
/// comments and trailing commas are allowed in a hand-written file).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, AllowTrailingCommas = true,
                             ReadCommentHandling = JsonCommentHandling.Skip, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(DlrmConfigJson))]
internal sealed partial class ModelJsonContext : JsonSerializerContext;
