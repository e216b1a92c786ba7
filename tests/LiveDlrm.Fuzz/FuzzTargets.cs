using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Model;

namespace LiveDlrm.Fuzz;

/// <summary>One fuzzed parser: its seed inputs, the call under test, and the exception types its contract allows
/// to escape (anything else is a finding).</summary>
internal sealed class FuzzTarget(string name, string description, Type[] allowed, Func<string, (IReadOnlyList<byte[]> Seeds, Action<byte[]> Run)> setup)
{
    public string Name { get; } = name;
    public string Description { get; } = description;
    public IReadOnlyList<Type> Allowed { get; } = allowed;

    /// <summary>Builds the seeds and the call in <paramref name="scratch"/> (a private folder for files the call reads).</summary>
    public (IReadOnlyList<byte[]> Seeds, Action<byte[]> Run) Setup(string scratch) => setup(scratch);

    public bool IsAllowed(Exception e) => Allowed.Any(t => t.IsInstanceOfType(e));
}

internal static class FuzzTargets
{
    public static readonly IReadOnlyList<FuzzTarget> All =
    [
        new("tsv", "TSV line parser (every schema feature) and the file reader (BOM, CRLF, long lines, both bad-line policies)",
            [typeof(DataFormatException)], Tsv),
        new("schema", "stream schema JSON reader, then a parser built from the schema", [typeof(SchemaException)], Schema),
        new("config", "model config JSON reader, its JSON round trip and table size arithmetic", [typeof(DlrmConfigException)], Config),
        new("manifest", "checkpoint manifest reader, and a load of a small checkpoint under the mutated manifest", [typeof(CheckpointException)], Manifest),
        new("cache", "event cache header reader and group reader over a mutated cache file", [typeof(DataFormatException)], Cache),
    ];

    public static FuzzTarget Get(string name) => All.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"unknown fuzz target '{name}' (known: {string.Join(", ", All.Select(t => t.Name))})");

    // ------------------------------------------------------------------ tsv

    /// <summary>A schema using every feature: timestamp, true probability, both transforms, hash / integer /
    /// vocabulary mappings, a multi-valued column, an ignored column.</summary>
    static StreamSchema RichSchema(string folder)
    {
        File.WriteAllText(Path.Combine(folder, "vocab.txt"), "red\ngreen\nblue\n");
        string json = """
        { "name": "rich", "columns": ["label", "ts", "p", "d1", "d2", "skip", "c_hash", "c_int", "c_vocab", "c_multi"],
          "label": "label", "timestamp": "ts", "trueProbability": "p",
          "dense": [ { "name": "d1", "transform": "log1p" }, "d2" ],
          "sparse": [ { "name": "c_hash", "rows": 1000 }, { "name": "c_int", "rows": 100, "mapping": "integer" },
                      { "name": "c_vocab", "rows": 10, "mapping": "vocabulary", "vocabulary": "vocab.txt" },
                      { "name": "c_multi", "rows": 50, "separator": "|" } ] }
        """;
        File.WriteAllText(Path.Combine(folder, "rich.schema.json"), json);
        return StreamSchema.Load(Path.Combine(folder, "rich.schema.json"));
    }

    static (IReadOnlyList<byte[]>, Action<byte[]>) Tsv(string scratch)
    {
        var rich = RichSchema(scratch);
        var criteo = StreamSchema.Criteo(1000);
        var richParser = new TsvLineParser(rich);
        var criteoParser = new TsvLineParser(criteo);
        var richBatch = new EventBatch(rich.Layout, 64, 2);
        var criteoBatch = new EventBatch(criteo.Layout, 64, 2);
        var seeds = new List<byte[]>
        {
            "1\t1700000000\t0.25\t3\t-1.5\tx\tab12\t42\tgreen\ta|b|c\n0\t1700000001\t0.5\t\t2e3\t\tzz\t0\tpurple\t\n"u8.ToArray(),
            "\uFEFF1\t1700000000\t0.25\t3\t-1.5\tx\tab12\t42\tgreen\ta|b||c\r\n"u8.ToArray(),
            Encoding.UTF8.GetBytes("1\t" + string.Join('\t', Enumerable.Range(1, 13)) + "\t" + string.Join('\t', Enumerable.Range(1, 26).Select(i => (i * 7919).ToString("x8"))) + "\n"),
            Encoding.UTF8.GetBytes("0\t\t\t\t\t\t\t\t\t\t\t\t\t\t" + string.Join('\t', Enumerable.Range(1, 26).Select(_ => "")) + "\n"),
        };
        string file = Path.Combine(scratch, "fuzz.tsv");
        long calls = 0;
        void Run(byte[] input)
        {
            bool isRich = input.Length == 0 || input[0] != (byte)'C';
            var parser = isRich ? richParser : criteoParser;
            var batch = isRich ? richBatch : criteoBatch;
            long ordinal = 0;
            foreach (var line in Lines(input))
            {
                if (batch.IsFull) batch.Clear();
                int before = batch.Count;
                string? error = parser.TryAppend(line, ordinal++, batch);
                if (batch.Count != before + (error is null ? 1 : 0))
                    throw new InvalidOperationException($"TryAppend left the batch at {batch.Count} events (was {before}, error {(error is null ? "none" : "'" + error + "'")})");
            }
            // The file reader over the same bytes, in one call of eight (a file per call is slow).
            if (++calls % 8 != 0) return;
            File.WriteAllBytes(file, input);
            foreach (var policy in new[] { BadLinePolicy.Skip, BadLinePolicy.Fail })
            {
                using var source = new TsvEventSource(file, isRich ? rich : criteo, new TsvReaderOptions { OnBadLine = policy, ReadBufferBytes = 4096, MaxLineBytes = 16384 });
                var b = new EventBatch(source.Schema.Layout, 16, 2);
                while (source.Read(b) > 0) { }
            }
        }
        return (seeds, Run);
    }

    static IEnumerable<byte[]> Lines(byte[] input)
    {
        int start = 0;
        for (int i = 0; i <= input.Length; i++)
            if (i == input.Length || input[i] == (byte)'\n')
            {
                if (i > start || i < input.Length) yield return input[start..i];
                start = i + 1;
            }
    }

    // ------------------------------------------------------------------ schema

    static (IReadOnlyList<byte[]>, Action<byte[]>) Schema(string scratch)
    {
        RichSchema(scratch);
        var seeds = new List<byte[]>
        {
            File.ReadAllBytes(Path.Combine(scratch, "rich.schema.json")),
            Encoding.UTF8.GetBytes(StreamSchema.Criteo(1000).ToJson()),
            Encoding.UTF8.GetBytes(new SyntheticStreamConfig().Schema().ToJson()),
        };
        void Run(byte[] input)
        {
            var schema = StreamSchema.Parse(Encoding.UTF8.GetString(input), scratch);
            _ = new TsvLineParser(schema);
            _ = schema.ContentHash();
            // The JSON form must read back as the same schema.
            string json = schema.ToJson(scratch);
            string again = StreamSchema.Parse(json, scratch).ToJson(scratch);
            if (json != again) throw new InvalidOperationException("schema JSON does not round-trip");
        }
        return (seeds, Run);
    }

    // ------------------------------------------------------------------ config

    static (IReadOnlyList<byte[]>, Action<byte[]>) Config(string scratch)
    {
        var layout = new SyntheticStreamConfig().Schema().Layout;
        var seeds = new List<byte[]>
        {
            Encoding.UTF8.GetBytes(DlrmConfig.ForLayout(layout, [64, 16], [64, 32, 1]).ToJson()),
            Encoding.UTF8.GetBytes(DlrmConfig.ForLayout(StreamSchema.Criteo(1000).Layout, [8], [4, 1], Embeddings.PoolingMode.Mean, Embeddings.EmbeddingStorage.Int8Rowwise).ToJson()),
        };
        void Run(byte[] input)
        {
            var config = DlrmConfig.Parse(Encoding.UTF8.GetString(input));
            if (config.TableBytes <= 0) throw new InvalidOperationException($"TableBytes {config.TableBytes} for a valid config");
            _ = config.TopInput;
            string json = config.ToJson();
            if (DlrmConfig.Parse(json).ToJson() != json) throw new InvalidOperationException("config JSON does not round-trip");
            try { config.CheckLayout(layout); }
            catch (ArgumentException) { /* documented: the config does not fit this layout */ }
        }
        return (seeds, Run);
    }

    // ------------------------------------------------------------------ manifest

    static (IReadOnlyList<byte[]>, Action<byte[]>) Manifest(string scratch)
    {
        Runtime.TorchRuntime.EnsureInitialised();
        var config = new DlrmConfig(2, [8, 4], [8, 1], [new DlrmTableConfig("a", 16, 4, Embeddings.PoolingMode.Sum, Embeddings.EmbeddingStorage.Fp32),
                                                        new DlrmTableConfig("b", 8, 4, Embeddings.PoolingMode.Mean, Embeddings.EmbeddingStorage.Fp16)]);
        string good = Path.Combine(scratch, "good");
        using (var model = DlrmModel.Create(config, 1)) Checkpoint.Save(model, good, new Dictionary<string, string> { ["events"] = "1" });
        string work = Path.Combine(scratch, "work");
        CopyDirectory(good, work);
        string manifestPath = Path.Combine(work, Checkpoint.ManifestFile);
        var seeds = new List<byte[]> { File.ReadAllBytes(Path.Combine(good, Checkpoint.ManifestFile)) };
        long calls = 0;
        void Run(byte[] input)
        {
            // Mostly with a matching checksum (else every input stops there); sometimes the checksum file is fuzzed too.
            byte[] checksum = input.Length > 0 && input[^1] == (byte)'#'
                ? input[..Math.Min(input.Length, 40)]
                : Encoding.ASCII.GetBytes(XxHash3.HashToUInt64(input).ToString("x16") + "\n");
            using (var doc = Checkpoint.ParseManifest(input, checksum, manifestPath))
                Checkpoint.ManifestOf(doc.RootElement, manifestPath);
            if (++calls % 4 != 0) return;
            File.WriteAllBytes(manifestPath, input);
            File.WriteAllBytes(Path.Combine(work, Checkpoint.ManifestChecksumFile), checksum);
            using var loaded = Checkpoint.Load(work);
        }
        return (seeds, Run);
    }

    static void CopyDirectory(string from, string to)
    {
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }

    // ------------------------------------------------------------------ cache

    static (IReadOnlyList<byte[]>, Action<byte[]>) Cache(string scratch)
    {
        var world = new SyntheticStreamConfig { Users = 50, InitialItems = 20, MaxNewItems = 10 };
        string tsv = Path.Combine(scratch, "data.tsv");
        SyntheticStreamFiles.Write(tsv, world, 300);
        var schema = StreamSchema.Load(SyntheticStreamFiles.SchemaPathFor(tsv));
        string cachePath = tsv + ".ldcache";
        using (var source = new TsvEventSource(tsv, schema, new TsvReaderOptions { Cache = CacheMode.Rebuild }))
        {
            var b = new EventBatch(schema.Layout, 64, 2);
            while (source.Read(b) > 0) { }
        }
        var key = EventCacheKey.For(schema, tsv);
        var seeds = new List<byte[]> { File.ReadAllBytes(cachePath) };
        string work = Path.Combine(scratch, "work.ldcache");
        void Run(byte[] input)
        {
            // Checksums are recomputed (header always, groups when their header is intact) so the fields behind
            // them are reached; a trailing byte 0x00 leaves the input exactly as mutated.
            byte[] data = input.Length > 0 && input[^1] == 0 ? input : WithChecksums(input);
            using (var ms = new MemoryStream(data))
                if (EventCache.ReadHeader(ms, work, out var header) is null) header.Mismatch(key, schema.Layout, data.Length);
            File.WriteAllBytes(work, data);
            if (EventCache.CheckUsable(work, key, schema.Layout) is not null) return;
            using var reader = new EventCacheReader(work, schema.Layout, key);
            var batch = new EventBatch(schema.Layout, 100, 2);
            while (reader.Read(batch) > 0) { }
        }
        return (seeds, Run);
    }

    static byte[] WithChecksums(byte[] input)
    {
        var data = (byte[])input.Clone();
        if (data.Length < EventCache.HeaderSize) return data;
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(88), data.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(120), XxHash3.HashToUInt64(data.AsSpan(0, 120)));
        long at = EventCache.HeaderSize;
        while (at + EventCache.GroupHeaderSize <= data.Length)
        {
            long length = BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan((int)at + 8));
            if (length < 0 || length > data.Length - at - EventCache.GroupHeaderSize) break;
            var payload = data.AsSpan((int)(at + EventCache.GroupHeaderSize), (int)length);
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan((int)at + 16), XxHash3.HashToUInt64(payload));
            at += EventCache.GroupHeaderSize + length;
        }
        return data;
    }
}
