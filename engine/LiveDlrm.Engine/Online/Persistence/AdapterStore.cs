using System.Runtime.InteropServices;
using System.Text;
using LiveDlrm.Files;
using LiveDlrm.Lora;
using LiveDlrm.Runtime;

namespace LiveDlrm.Online.Persistence;

/// <summary>A saved adapter file that cannot be used: damaged, or made for another base model (bad input: the
/// message names the file and how to start from fresh adapters instead).</summary>
internal sealed class AdapterStoreException(string message) : UserInputException(message);

/// <summary>
/// The live adapters of a <see cref="LiveModel"/> on disk, in one file <c>DIR/adapters.bin</c>, so a process that
/// restarts on the same base model continues from what it had learned:
/// <code>
/// "LDADAPT1", format, base-model fingerprint, table count
/// per table: has-adapter flag, the adapter's state (TableAdapter.WriteState, including its random generator),
///            then the rows its merges wrote into the base table since the base was loaded (row, raw stored bytes) —
///            a merge moves learning out of the adapter into the table, so without them a restart would lose it;
///            then has-row-state flag and, if set, the row-wise Adagrad accumulator of every table row
///            (TableAdapter.RowState: a row admitted to a slot starts from it and a merge writes it back, so it is
///            adapter-side training state that changes with the stream; a restarted process — which has no base
///            trainer to copy it from — would otherwise start rows from a constant, and continue differently)
/// has-last-layer flag, the last-layer update's state (LastLayerAdapter.WriteState)
/// XxHash3-64 of everything above
/// </code>
/// Written whole to a temporary sibling, fsynced, renamed over the old file, and the directory fsynced: a crash at
/// any point leaves the previous file or the new one, never a mix, so kill -9 loses at most one interval. On start
/// the file is checked (checksum, base fingerprint, every table's shape) before anything is applied. Nothing is
/// written outside the directory.
/// </summary>
internal sealed class AdapterStore
{
    public const string FileName = "adapters.bin";
    const string Magic = "LDADAPT1";
    const int Format = 3;   // 2 added the last-layer update and the adapters' random generators; 3 the row state

    /// <summary>What an error about an unusable file tells the user to do, unless the host says it better (the
    /// CLI names its <c>--adapters-reset</c>).</summary>
    public const string DefaultDiscardHint = "delete the file to start from fresh adapters";

    readonly string _discardHint;
    public string FilePath { get; }

    public AdapterStore(string dir, string discardHint = DefaultDiscardHint)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dir);
        _discardHint = discardHint;
        FilePath = Path.Combine(Path.GetFullPath(dir), FileName);
    }

    /// <summary>Records the rows each adapter merges into its base table (on the trainer thread). Create it with
    /// <see cref="Track(LiveModel)"/> before the trainer starts: rows merged before tracking are not saved.</summary>
    public sealed class MergedRows : IAdapterMergeObserver
    {
        readonly Dictionary<TableAdapter, SortedSet<long>> _rows = new();

        /// <summary>Tracks every adapter of <paramref name="live"/>.</summary>
        public static MergedRows Track(LiveModel live)
        {
            ArgumentNullException.ThrowIfNull(live);
            var merged = new MergedRows();
            foreach (var a in live.Adapters) if (a is not null) merged.Track(a);
            return merged;
        }

        public void Track(TableAdapter adapter)
        {
            lock (_rows) _rows.TryAdd(adapter, new SortedSet<long>());
            adapter.MergeObserver = this;
        }

        public void MergeStarting(TableAdapter adapter) { }

        public void MergeFinished(TableAdapter adapter, ReadOnlySpan<long> rows)
        {
            lock (_rows)
            {
                var set = _rows[adapter];
                foreach (long r in rows) set.Add(r);
            }
        }

        public long[] Of(TableAdapter adapter) { lock (_rows) return _rows.TryGetValue(adapter, out var s) ? s.ToArray() : []; }

        internal void Add(TableAdapter adapter, long row) { lock (_rows) _rows[adapter].Add(row); }
    }

    /// <summary>The live model's adapter state as the file would hold it (without the checksum).
    /// <paramref name="baseFingerprint"/> identifies the base model (e.g. its checkpoint's manifest checksum); a
    /// restore checks it. The trainer must be stopped or paused.</summary>
    public static byte[] Export(LiveModel live, string baseFingerprint, MergedRows merged)
    {
        ArgumentNullException.ThrowIfNull(live);
        ArgumentNullException.ThrowIfNull(baseFingerprint);
        ArgumentNullException.ThrowIfNull(merged);
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Encoding.ASCII.GetBytes(Magic));
            w.Write(Format);
            w.Write(baseFingerprint);
            var tables = live.Model.Tables;
            w.Write(tables.Count);
            for (int t = 0; t < tables.Count; t++)
            {
                var adapter = live.Adapters[t];
                w.Write(adapter is not null);
                if (adapter is null) continue;
                adapter.WriteState(w);
                var rows = merged.Of(adapter);
                w.Write(rows.Length);
                foreach (long r in rows)
                {
                    w.Write(r);
                    w.Write(tables[t].StoredRow(r));
                }
                w.Write(adapter.RowState is not null);
                if (adapter.RowState is { } state)
                {
                    w.Write(state.Rows);
                    w.Write(MemoryMarshal.AsBytes(state.Values));
                }
            }
            w.Write(live.LastLayer is not null);
            live.LastLayer?.WriteState(w);
        }
        return ms.ToArray();
    }

    /// <summary>XxHash3 of an export: equal for equal adapter state, bit for bit.</summary>
    public static ulong Fingerprint(ReadOnlySpan<byte> export) => ChecksummedFile.Checksum(export);

    /// <summary>Writes <paramref name="export"/> atomically (temp file, fsync, rename, fsync directory).</summary>
    public void Save(byte[] export) => ChecksummedFile.Write(FilePath, export);

    public bool Exists => File.Exists(FilePath);

    /// <summary>The saved export (checksum verified), or null when there is no file.</summary>
    public byte[]? ReadVerified() =>
        ChecksummedFile.ReadVerified(FilePath, Magic.Length, why => new AdapterStoreException(
            why.StartsWith("checksum", StringComparison.Ordinal) ? $"{FilePath}: {why}; {_discardHint}" : $"{FilePath}: {why}"));

    /// <summary>Applies a verified export to a freshly loaded live model on the base identified by
    /// <paramref name="baseFingerprint"/>, before it serves and with its trainer stopped: base rows first, then each
    /// adapter. Everything is checked before the first byte changes; <paramref name="source"/> names the file in
    /// errors, <paramref name="discardHint"/> what to do about a file saved for another base.</summary>
    public static void Restore(LiveModel live, string baseFingerprint, MergedRows merged, byte[] export, string source,
                               string discardHint = DefaultDiscardHint)
    {
        ArgumentNullException.ThrowIfNull(live);
        ArgumentNullException.ThrowIfNull(baseFingerprint);
        ArgumentNullException.ThrowIfNull(merged);
        ArgumentNullException.ThrowIfNull(export);
        // Pass 1 checks the whole file against the node without changing anything; pass 2 applies it.
        for (int pass = 0; pass < 2; pass++)
        {
            bool apply = pass == 1;
            using var r = new BinaryReader(new MemoryStream(export), Encoding.UTF8);
            try
            {
                if (Encoding.ASCII.GetString(r.ReadBytes(Magic.Length)) != Magic) throw new AdapterStoreException($"{source}: not a LiveDlrm adapter file");
                int format = r.ReadInt32();
                if (format != Format) throw new AdapterStoreException($"{source}: adapter file format {format}, this engine reads {Format}; {discardHint}");
                string fingerprint = r.ReadString();
                if (fingerprint != baseFingerprint)
                    throw new AdapterStoreException($"{source}: saved for base model {fingerprint}, the loaded base model is {baseFingerprint}; {discardHint}");
                int tables = r.ReadInt32();
                if (tables != live.Model.Tables.Count) throw new AdapterStoreException($"{source}: {tables} tables, the model has {live.Model.Tables.Count}");
                for (int t = 0; t < tables; t++)
                {
                    var table = live.Model.Tables[t];
                    var adapter = live.Adapters[t];
                    bool has = r.ReadBoolean();
                    if (has != adapter is not null) throw new AdapterStoreException($"{source}: table '{table.Name}' {(has ? "has" : "has no")} adapter in the file but {(has ? "none" : "one")} here (different adapter options?)");
                    if (adapter is null) continue;
                    if (apply) adapter.ReadState(r);
                    else
                    {
                        // Checked on a throw-away adapter so a bad table cannot leave earlier ones restored.
                        using var probe = new TableAdapter(table, adapter.Options);
                        probe.ReadState(r);
                    }
                    int rows = r.ReadInt32();
                    if (rows < 0 || rows > table.Rows) throw new AdapterStoreException($"{source}: table '{table.Name}': {rows} merged rows");
                    for (int k = 0; k < rows; k++)
                    {
                        long row = r.ReadInt64();
                        var bytes = r.ReadBytes(table.RowStride);
                        if ((ulong)row >= (ulong)table.Rows || bytes.Length != table.RowStride)
                            throw new AdapterStoreException($"{source}: table '{table.Name}': merged row {row} is out of range or truncated");
                        if (apply)
                        {
                            bytes.CopyTo(table.StoredRow(row));
                            merged.Add(adapter, row);
                        }
                    }
                    bool hasState = r.ReadBoolean();
                    if (!hasState && adapter.RowState is not null)
                        throw new AdapterStoreException($"{source}: table '{table.Name}' has no row state in the file but its adapter keeps one (different trainer options?)");
                    if (hasState)
                    {
                        long stateRows = r.ReadInt64();
                        if (stateRows != table.Rows) throw new AdapterStoreException($"{source}: table '{table.Name}': row state of {stateRows} rows, the table has {table.Rows}");
                        var values = new float[stateRows];
                        var bytes = MemoryMarshal.AsBytes(values.AsSpan());
                        if (r.Read(bytes) != bytes.Length) throw new AdapterStoreException($"{source}: table '{table.Name}': row state truncated");
                        foreach (float v in values)
                            if (!(v >= 0) || !float.IsFinite(v)) throw new AdapterStoreException($"{source}: table '{table.Name}': a row state value is negative or not finite");
                        if (apply) adapter.RowState = new RowAccumulators(values);
                    }
                }
                bool hasLast = r.ReadBoolean();
                if (hasLast != live.LastLayer is not null)
                    throw new AdapterStoreException($"{source}: {(hasLast ? "has" : "has no")} last-layer update but the model {(hasLast ? "adapts no last layer" : "adapts its last layer")} (different trainer options?)");
                live.LastLayer?.ReadState(r, apply);
                if (r.BaseStream.Position != export.Length) throw new AdapterStoreException($"{source}: {export.Length - r.BaseStream.Position} bytes after the last table");
            }
            catch (Exception e) when (e is EndOfStreamException or InvalidDataException)
            {
                throw new AdapterStoreException($"{source}: {e.Message}");
            }
        }
    }
}
