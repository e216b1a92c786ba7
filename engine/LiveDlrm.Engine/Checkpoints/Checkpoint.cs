using System.Buffers.Binary;
using System.IO.Hashing;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using LiveDlrm.Embeddings;
using LiveDlrm.Files;
using LiveDlrm.Interop;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Checkpoints;

/// <summary>A checkpoint that cannot be written or read; <see cref="FilePath"/> (also in the message) is the file at fault.</summary>
internal sealed class CheckpointException(string filePath, string message, Exception? inner = null) : Exception($"{filePath}: {message}", inner)
{
    public string FilePath { get; } = filePath;
}

/// <summary>
/// A model checkpoint is a directory:
/// <code>
/// manifest.json        format, version, engine/TorchSharp versions, the model config, every file with size + XxHash3
/// manifest.xxh3        XxHash3 of manifest.json (so a damaged manifest is detected, not misread)
/// tables/NNN-NAME.bin  table NNN exactly as stored in memory: rows × rowStride bytes, little-endian, no header
///                      (fp32 / fp16 elements, or int8-rowwise [uint8 × d][fp32 scale][fp32 bias]); memory-mappable
/// dense.bin            the dense parameters as raw little-endian fp32, in state_dict order, offsets in the manifest
/// </code>
/// Saving is atomic: everything is written into a temporary sibling directory, each file and the directory are
/// fsynced, then the directory is renamed into place (an existing checkpoint is moved aside first and deleted after).
/// Loading checks the manifest's checksum, version and config, every file's size against the config and its XxHash3
/// (computed while the bytes stream into the new table, in large sequential reads), and builds an entirely new
/// <see cref="DlrmModel"/>: any failure throws a <see cref="CheckpointException"/> naming the file and frees what
/// was loaded, so a caller swapping models never sees a half-loaded one.
/// Not stored: the trainers' optimizer state (row-wise Adagrad accumulators, dense Adagrad/Adam moments); a
/// resumed trainer starts with fresh accumulators.
/// </summary>
internal static unsafe class Checkpoint
{
    public const string Format = "livedlrm-checkpoint";
    public const int Version = 1;
    public const string ManifestFile = "manifest.json";
    public const string ManifestChecksumFile = "manifest.xxh3";
    public const string DenseFile = "dense.bin";
    public const string TablesFolder = "tables";
    const int ChunkBytes = 64 << 20;

    static string TableFile(int index, string name) => $"{TablesFolder}/{index:D3}-{name}.bin";

    /// <summary>Writes <paramref name="model"/> to the directory <paramref name="path"/>, replacing the checkpoint there
    /// if there is one (see <see cref="CheckpointTarget"/> for what a command may replace; a non-empty directory that
    /// is not a checkpoint is refused unless <paramref name="replaceAnyDirectory"/>).
    /// <paramref name="metadata"/> is stored as strings in the manifest (e.g. events trained on, data source).</summary>
    public static void Save(DlrmModel model, string path, IReadOnlyDictionary<string, string>? metadata = null, bool replaceAnyDirectory = false) =>
        Save(model, path, metadata, replaceAnyDirectory, CheckpointFileSystem.Real);

    internal static void Save(DlrmModel model, string path, IReadOnlyDictionary<string, string>? metadata, bool replaceAnyDirectory, CheckpointFileSystem fs)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        // A symlink is written through: the checkpoint replaces its target, and the link keeps pointing at it.
        if (FileStatusInterop.Stat(full, followLinks: false).Kind == FileKind.Symlink)
            full = OutputTarget.RealPath(full) ?? full;
        string parent = Path.GetDirectoryName(full) ?? throw new ArgumentException($"{path}: a checkpoint cannot be the root directory");
        string name = Path.GetFileName(full);
        fs.CreateDirectory(parent);
        CheckpointRecovery.Recover(full, fs, TempOwner.OwnerAlive, logger: null);
        if (File.Exists(full)) throw new CheckpointException(full, "exists and is a file, not a checkpoint directory");
        if (Directory.Exists(full) && !replaceAnyDirectory && CheckpointTarget.WhyNotCheckpoint(full) is { } why)
            throw new CheckpointException(full, $"is not a checkpoint ({why}); refusing to replace it");
        string temp = Path.Combine(parent, TempOwner.Name(name, CheckpointRecovery.TempKind));
        string? aside = null;
        bool published = false;
        try
        {
            fs.CreateDirectory(Path.Combine(temp, TablesFolder));
            var tableEntries = new List<(string File, ulong Hash, long Bytes)>();
            for (int i = 0; i < model.Tables.Count; i++)
            {
                var table = model.Tables[i];
                string file = TableFile(i, table.Name);
                tableEntries.Add((file, WriteRaw(fs, Path.Combine(temp, file), table.DataPointer, table.ByteSize), table.ByteSize));
            }
            var (denseBytes, tensors) = DenseBytes(model.Dense);
            ulong denseHash;
            fixed (byte* p = denseBytes) denseHash = WriteRaw(fs, Path.Combine(temp, DenseFile), p, denseBytes.Length);

            byte[] manifest = ManifestJson(model, tableEntries, denseHash, denseBytes.Length, tensors, metadata);
            fixed (byte* p = manifest) WriteRaw(fs, Path.Combine(temp, ManifestFile), p, manifest.Length);
            byte[] manifestHash = Encoding.ASCII.GetBytes(Hex(XxHash3.HashToUInt64(manifest)) + "\n");
            fixed (byte* p = manifestHash) WriteRaw(fs, Path.Combine(temp, ManifestChecksumFile), p, manifestHash.Length);
            fs.SyncDirectory(Path.Combine(temp, TablesFolder));
            fs.SyncDirectory(temp);

            // Publish. Preferred: swap the complete new directory with the old one in one step (renameat2
            // RENAME_EXCHANGE), so the path always holds a complete checkpoint. Without it: move the old one aside,
            // then the new one in; a crash between the two leaves both complete, and CheckpointRecovery rolls forward.
            if (Directory.Exists(full))
            {
                if (fs.TryExchange(temp, full)) { published = true; aside = temp; }
                else
                {
                    aside = Path.Combine(parent, TempOwner.Name(name, CheckpointRecovery.OldKind));
                    fs.Move(full, aside);
                    fs.Move(temp, full);
                    published = true;
                }
            }
            else
            {
                fs.Move(temp, full);
                published = true;
            }
            fs.SyncDirectory(parent);
            if (aside is not null) fs.DeleteDirectory(aside);
        }
        catch
        {
            // Best effort, and each step on its own: after a failed rename the old checkpoint goes back in place;
            // the unpublished temporary goes. What cannot be undone here, CheckpointRecovery does at the next use.
            try
            {
                if (!published && aside is not null && !Directory.Exists(full) && Directory.Exists(aside)) fs.Move(aside, full);
            }
            catch (Exception) { /* left for recovery */ }
            try
            {
                if (!published && Directory.Exists(temp)) fs.DeleteDirectory(temp);
                if (published && aside is not null && Directory.Exists(aside)) fs.DeleteDirectory(aside);
            }
            catch (Exception) { /* left for recovery */ }
            throw;
        }
    }

    static ulong WriteRaw(CheckpointFileSystem fs, string file, byte* data, long length)
    {
        var hash = new XxHash3();
        using (var stream = fs.CreateFile(file))
        {
            for (long offset = 0; offset < length; offset += ChunkBytes)
            {
                var chunk = new ReadOnlySpan<byte>(data + offset, (int)Math.Min(ChunkBytes, length - offset));
                hash.Append(chunk);
                stream.Write(chunk);
            }
            fs.SyncFile(stream);
        }
        return hash.GetCurrentHashAsUInt64();
    }

    static (byte[] Bytes, List<(string Name, long[] Shape, long Offset)> Tensors) DenseBytes(DlrmDenseNet dense)
    {
        var tensors = new List<(string, long[], long)>();
        var parameters = dense.NamedParameters();
        long total = parameters.Sum(p => p.Parameter.numel()) * sizeof(float);
        var bytes = new byte[total];
        long offset = 0;
        using var scope = NewDisposeScope();
        foreach (var (name, p) in parameters)
        {
            var values = p.detach().contiguous().data<float>().ToArray();
            for (int i = 0; i < values.Length; i++)
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)offset + i * 4, 4), values[i]);
            tensors.Add((name, p.shape.ToArray(), offset));
            offset += values.Length * sizeof(float);
        }
        return (bytes, tensors);
    }

    static byte[] ManifestJson(DlrmModel model, List<(string File, ulong Hash, long Bytes)> tables, ulong denseHash, long denseLength,
                               List<(string Name, long[] Shape, long Offset)> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", Format);
            w.WriteNumber("version", Version);
            w.WriteString("created", DateTime.UtcNow.ToString("O"));
            w.WriteString("engine", typeof(Checkpoint).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown");
            w.WriteString("torchsharp", TorchRuntime.TorchSharpVersion);
            w.WriteString("checksum", "xxh3-64");
            w.WritePropertyName("config");
            model.Config.WriteJson(w);
            w.WriteStartArray("tables");
            for (int i = 0; i < tables.Count; i++)
            {
                var t = model.Tables[i];
                w.WriteStartObject();
                w.WriteString("name", t.Name);
                w.WriteString("file", tables[i].File);
                w.WriteNumber("rows", t.Rows);
                w.WriteNumber("rowStride", t.RowStride);
                w.WriteNumber("bytes", tables[i].Bytes);
                w.WriteString("xxh3", Hex(tables[i].Hash));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("dense");
            w.WriteString("file", DenseFile);
            w.WriteNumber("bytes", denseLength);
            w.WriteString("xxh3", Hex(denseHash));
            w.WriteStartArray("tensors");
            foreach (var (name, shape, offset) in tensors)
            {
                w.WriteStartObject();
                w.WriteString("name", name);
                w.WriteStartArray("shape"); foreach (long s in shape) w.WriteNumberValue(s); w.WriteEndArray();
                w.WriteNumber("offset", offset);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartObject("metadata");
            if (metadata is not null) foreach (var (k, v) in metadata) w.WriteString(k, v);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    static string Hex(ulong hash) => hash.ToString("x16");

    // ---------------------------------------------------------------- load

    /// <summary>What a checkpoint's manifest says, read and checked without loading the tables.</summary>
    public sealed record Manifest(DlrmConfig Config, IReadOnlyDictionary<string, string> Metadata, string Engine, DateTime Created);

    /// <summary>Reads and checks the manifest at <paramref name="path"/>. With <paramref name="recover"/>, an
    /// interrupted save is first resolved (see <see cref="CheckpointRecovery"/>) and what was done goes to <paramref name="logger"/>.</summary>
    public static Manifest ReadManifest(string path, bool recover = true, ILogger? logger = null)
    {
        string dir = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        if (recover) CheckpointRecovery.Recover(dir, CheckpointFileSystem.Real, TempOwner.OwnerAlive, logger);
        if (!Directory.Exists(dir)) throw new CheckpointException(dir, "checkpoint directory does not exist");
        using var doc = ParseManifest(dir);
        return ManifestOf(doc.RootElement, Path.Combine(dir, ManifestFile));
    }

    /// <summary>Loads the checkpoint at <paramref name="path"/> into a new model (see the class remarks for the checks).
    /// An interrupted save is resolved first (see <see cref="CheckpointRecovery"/>); what was recovered goes to
    /// <paramref name="logger"/>.</summary>
    public static DlrmModel Load(string path, IEmbeddingBackend? backend = null, bool ownsBackend = true, ILogger? logger = null)
    {
        TorchRuntime.EnsureInitialised();
        string dir = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        CheckpointRecovery.Recover(dir, CheckpointFileSystem.Real, TempOwner.OwnerAlive, logger);
        if (!Directory.Exists(dir)) throw new CheckpointException(dir, "checkpoint directory does not exist");
        using var doc = ParseManifest(dir);
        var root = doc.RootElement;
        string manifestPath = Path.Combine(dir, ManifestFile);
        var manifest = ManifestOf(root, manifestPath);
        var config = manifest.Config;

        var tablesEl = Prop(root, "tables", manifestPath);
        if (tablesEl.ValueKind != JsonValueKind.Array || tablesEl.GetArrayLength() != config.Tables.Count)
            throw new CheckpointException(manifestPath, $"'tables' must list the config's {config.Tables.Count} tables");
        var tables = new List<EmbeddingTable>();
        DlrmDenseNet? dense = null;
        try
        {
            int i = 0;
            foreach (var entry in tablesEl.EnumerateArray())
            {
                var tc = config.Tables[i];
                string file = Str(entry, "file", manifestPath);
                string expectedFile = TableFile(i, tc.Name);
                if (Str(entry, "name", manifestPath) != tc.Name || file != expectedFile)
                    throw new CheckpointException(manifestPath, $"tables[{i}] names '{Str(entry, "name", manifestPath)}' / {file}, the config's table {i} is '{tc.Name}' ({expectedFile})");
                int stride = EmbeddingTable.StrideOf(tc.Dim, tc.Storage);
                long bytes = tc.Rows * stride;
                if (Long(entry, "bytes", manifestPath) != bytes || Long(entry, "rowStride", manifestPath) != stride || Long(entry, "rows", manifestPath) != tc.Rows)
                    throw new CheckpointException(manifestPath, $"tables[{i}] sizes do not match the config ({tc.Rows} rows × {stride} bytes)");
                // Sizes first, memory second, allocation last: a manifest claiming a huge table is refused before
                // anything is allocated for it.
                string tablePath = Path.Combine(dir, file);
                if (!File.Exists(tablePath)) throw new CheckpointException(tablePath, "missing");
                long actualBytes = new FileInfo(tablePath).Length;
                if (actualBytes != bytes)
                    throw new CheckpointException(tablePath, actualBytes < bytes ? $"truncated: {actualBytes} bytes, the config needs {bytes}" : $"{actualBytes} bytes, the config needs {bytes} (file does not match the model config)");
                if (i == 0)
                {
                    try { config.CheckMemory(); }
                    catch (ResourceLimitException e) { throw new CheckpointException(manifestPath, e.Message, e); }
                }
                var table = EmbeddingTable.Create(tc.Name, tc.Rows, tc.Dim, tc.Storage);
                tables.Add(table);
                ReadVerified(Path.Combine(dir, file), table.DataPointer, bytes, Str(entry, "xxh3", manifestPath));
                i++;
            }

            var denseEl = Prop(root, "dense", manifestPath);
            if (Str(denseEl, "file", manifestPath) != DenseFile) throw new CheckpointException(manifestPath, $"dense.file must be '{DenseFile}'");
            string densePath = Path.Combine(dir, DenseFile);
            long denseLength = Long(denseEl, "bytes", manifestPath);
            dense = new DlrmDenseNet(config);
            // The parameter wrappers are freed here, not left to the finalizer thread.
            using var parameterScope = NewDisposeScope();
            var parameters = dense.NamedParameters();
            long expectedDense = parameters.Sum(p => p.Parameter.numel()) * sizeof(float);
            if (denseLength != expectedDense)
                throw new CheckpointException(manifestPath, $"dense.bytes is {denseLength}, the config's dense net has {expectedDense} bytes of parameters");
            var denseBytes = new byte[denseLength];
            fixed (byte* p = denseBytes) ReadVerified(densePath, p, denseLength, Str(denseEl, "xxh3", manifestPath));
            var tensorsEl = Prop(denseEl, "tensors", manifestPath);
            if (tensorsEl.ValueKind != JsonValueKind.Array || tensorsEl.GetArrayLength() != parameters.Count)
                throw new CheckpointException(manifestPath, $"dense.tensors must list the {parameters.Count} dense parameters");
            int k = 0;
            using (no_grad())
            {
                foreach (var t in tensorsEl.EnumerateArray())
                {
                    var (name, param) = parameters[k++];
                    var shapeEl = Prop(t, "shape", manifestPath);
                    if (shapeEl.ValueKind != JsonValueKind.Array || shapeEl.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out _)))
                        throw new CheckpointException(manifestPath, $"dense tensor {k - 1}: 'shape' must be an array of integers");
                    long[] shape = shapeEl.EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    long offset = Long(t, "offset", manifestPath);
                    if (Str(t, "name", manifestPath) != name || !shape.SequenceEqual(param.shape))
                        throw new CheckpointException(manifestPath, $"dense tensor {k - 1} is '{Str(t, "name", manifestPath)}' [{string.Join(", ", shape)}], the config's is '{name}' [{string.Join(", ", param.shape)}]");
                    long count = param.numel();
                    if (offset < 0 || offset > denseLength - count * sizeof(float))
                        throw new CheckpointException(manifestPath, $"dense tensor '{name}' offset {offset} is outside dense.bin");
                    var values = new float[count];
                    for (int e = 0; e < values.Length; e++)
                        values[e] = BinaryPrimitives.ReadSingleLittleEndian(denseBytes.AsSpan((int)offset + e * 4, 4));
                    using var source = tensor(values).reshape(param.shape);
                    param.copy_(source);
                }
            }
            return new DlrmModel(config, tables, dense, backend, ownsBackend);
        }
        catch (Exception e)
        {
            foreach (var t in tables) t.Dispose();
            dense?.Dispose();
            // A manifest string System.Text.Json cannot transcode (a lone surrogate escape) surfaces as this type.
            if (e is InvalidOperationException && e.Source == "System.Text.Json") throw new CheckpointException(manifestPath, $"invalid text in the JSON: {e.Message}", e);
            throw;
        }
    }

    internal static JsonDocument ParseManifestOf(string dir) => ParseManifest(dir);

    static JsonDocument ParseManifest(string dir)
    {
        string manifestPath = Path.Combine(dir, ManifestFile);
        string checksumPath = Path.Combine(dir, ManifestChecksumFile);
        if (!File.Exists(manifestPath)) throw new CheckpointException(manifestPath, "missing (not a checkpoint directory, or an incomplete one)");
        if (!File.Exists(checksumPath)) throw new CheckpointException(checksumPath, "missing: the manifest cannot be verified");
        byte[] bytes = ReadBounded(manifestPath, MaxManifestBytes);
        return ParseManifest(bytes, ReadBounded(checksumPath, 1024), manifestPath);
    }

    /// <summary>A manifest is a few KB; a larger one is not ours (and is not read into memory whole).</summary>
    const int MaxManifestBytes = 16 << 20;

    static byte[] ReadBounded(string path, int max)
    {
        try
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
            var buffer = new byte[max + 1];
            int n = f.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            if (n > max) throw new CheckpointException(path, $"larger than {max} bytes: not a checkpoint manifest");
            return buffer[..n];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CheckpointException(path, $"cannot read: {e.Message}", e); }
    }

    /// <summary>Checks and parses manifest bytes against the checksum file's bytes; every problem is a
    /// <see cref="CheckpointException"/> naming <paramref name="manifestPath"/>.</summary>
    internal static JsonDocument ParseManifest(byte[] bytes, byte[] checksumBytes, string manifestPath)
    {
        string checksumPath = Path.Combine(Path.GetDirectoryName(manifestPath) ?? "", ManifestChecksumFile);
        string expected = Encoding.ASCII.GetString(checksumBytes).Trim();
        string actual = Hex(XxHash3.HashToUInt64(bytes));
        if (!string.Equals(expected, actual, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointException(manifestPath, $"checksum mismatch (xxh3 {actual}, {checksumPath} says '{Truncate(expected)}'): the manifest is corrupted");
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new CheckpointException(manifestPath, "not valid UTF-8 text");
        try { return JsonDocument.Parse(bytes); }
        catch (JsonException e) { throw new CheckpointException(manifestPath, $"not valid JSON: {e.Message}", e); }
    }

    static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";

    internal static Manifest ManifestOf(JsonElement root, string manifestPath)
    {
        // System.Text.Json reports a string it cannot transcode (invalid UTF-8, a lone surrogate escape) this way.
        try { return ManifestOfChecked(root, manifestPath); }
        catch (InvalidOperationException e) { throw new CheckpointException(manifestPath, $"invalid text in the JSON: {e.Message}", e); }
    }

    static Manifest ManifestOfChecked(JsonElement root, string manifestPath)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new CheckpointException(manifestPath, "must be a JSON object");
        string format = Str(root, "format", manifestPath);
        if (format != Format) throw new CheckpointException(manifestPath, $"format '{format}' is not '{Format}'");
        long version = Long(root, "version", manifestPath);
        if (version != Version) throw new CheckpointException(manifestPath, $"checkpoint version {version} is not supported (this engine reads version {Version})");
        DlrmConfig config;
        try { config = DlrmConfig.FromJson(Prop(root, "config", manifestPath)); }
        catch (DlrmConfigException ce) { throw new CheckpointException(manifestPath, $"config: {ce.Message}", ce); }
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        if (root.TryGetProperty("metadata", out var m) && m.ValueKind == JsonValueKind.Object)
            foreach (var p in m.EnumerateObject()) metadata[p.Name] = p.Value.ToString();
        string engine = root.TryGetProperty("engine", out var e) ? e.ToString() : "unknown";
        DateTime created = root.TryGetProperty("created", out var c) && c.TryGetDateTime(out var dt) ? dt : default;
        return new Manifest(config, metadata, engine, created);
    }

    /// <summary>Streams <paramref name="file"/> into <paramref name="destination"/> in large sequential reads,
    /// hashing as it goes; size or checksum mismatch → <see cref="CheckpointException"/> naming the file.</summary>
    static void ReadVerified(string file, byte* destination, long length, string expectedHash)
    {
        if (!File.Exists(file)) throw new CheckpointException(file, "missing");
        var hash = new XxHash3();
        using (var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan))
        {
            if (stream.Length != length)
                throw new CheckpointException(file, stream.Length < length
                    ? $"truncated: {stream.Length} bytes, the config needs {length}"
                    : $"{stream.Length} bytes, the config needs {length} (file does not match the model config)");
            for (long offset = 0; offset < length; offset += ChunkBytes)
            {
                var chunk = new Span<byte>(destination + offset, (int)Math.Min(ChunkBytes, length - offset));
                stream.ReadExactly(chunk);
                hash.Append(chunk);
            }
        }
        string actual = Hex(hash.GetCurrentHashAsUInt64());
        if (!string.Equals(actual, expectedHash, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointException(file, $"checksum mismatch (xxh3 {actual}, manifest says {expectedHash}): the file is corrupted");
    }

    static JsonElement Prop(JsonElement obj, string name, string file) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) ? v : throw new CheckpointException(file, $"'{name}' is missing");

    static string Str(JsonElement obj, string name, string file)
    {
        var v = Prop(obj, name, file);
        return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new CheckpointException(file, $"'{name}' must be a string");
    }

    static long Long(JsonElement obj, string name, string file)
    {
        var v = Prop(obj, name, file);
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long x) ? x : throw new CheckpointException(file, $"'{name}' must be an integer");
    }
}
