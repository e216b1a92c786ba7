using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LiveDlrm.Data;

/// <summary>What identifies the source a cache was built from: a cache whose key differs is stale.</summary>
internal readonly record struct EventCacheKey(ulong SchemaHash, long SourceLength, long SourceWriteTicks, ulong SourceSample)
{
    public static EventCacheKey For(StreamSchema schema, string sourcePath)
    {
        var info = new FileInfo(sourcePath);
        return new EventCacheKey(schema.ContentHash(), info.Length, info.LastWriteTimeUtc.Ticks, SampleHash(sourcePath));
    }

    const int EdgeBytes = 1 << 20, Samples = 16, SampleBytes = 64 << 10;

    /// <summary>XxHash3 over the first and last MiB of the file and 16 blocks of 64 KiB spread evenly between them
    /// (the whole file when it is smaller): an edit that keeps the length and restores the mtime is caught when
    /// it touches one of these ~3 MiB, at the cost of reading them.</summary>
    public static ulong SampleHash(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        long length = f.Length;
        var hash = new XxHash3();
        var buffer = new byte[EdgeBytes];
        void Block(long offset, int count)
        {
            f.Position = offset;
            int n = f.ReadAtLeast(buffer.AsSpan(0, count), count, throwOnEndOfStream: false);
            hash.Append(buffer.AsSpan(0, n));
        }
        if (length <= 2L * EdgeBytes + Samples * SampleBytes)
        {
            for (long at = 0; at < length; at += EdgeBytes) Block(at, (int)Math.Min(EdgeBytes, length - at));
        }
        else
        {
            Block(0, EdgeBytes);
            long span = length - 2L * EdgeBytes - SampleBytes;
            for (int i = 0; i < Samples; i++) Block(EdgeBytes + span * i / (Samples - 1), SampleBytes);
            Block(length - EdgeBytes, EdgeBytes);
        }
        return hash.GetCurrentHashAsUInt64();
    }
}

/// <summary>
/// Binary columnar cache of a parsed stream: one file, a fixed header then groups of up to
/// <see cref="GroupEvents"/> events, each group column by column (labels, timestamps, request ids, true
/// probabilities, dense row-major, then per sparse feature int32 offsets and int32/int64 indices).
/// <code>
/// header (128 bytes): "LDLMEVC1" | version u32 | indexWidth u32 | schemaHash u64 | sourceLength i64 | sourceTicks i64
///                     | denseCount i32 | sparseCount i32 | hasTrueProbabilities i32 | badLinePolicy i32 | events i64
///                     | groups i64 | lines i64 | badLines i64 | fileLength i64 | sourceSample u64 | ...zero...
///                     | headerChecksum u64 (XxHash3 of bytes 0..120)
/// group: "GRP1" u32 | count i32 | payloadLength i64 | payloadChecksum u64 (XxHash3) | payload
/// payload: flags u32 | pad u32 | singleValuedMask u64 | requestIdBase i64 | timestampBase i64 | sections (see GroupSections)
/// </code>
/// Written to a temporary file, fsynced, then renamed over the target: a reader never sees a half-written cache.
/// Header problems (wrong magic, version, key, length, checksum) make the cache stale (rebuild); a cache that
/// skipped bad lines is not used under <see cref="BadLinePolicy.Fail"/> (the source is parsed, so the first bad line
/// is reported with its number). Not detected: an edit of the source that keeps its length, restores its mtime
/// and touches none of the sampled bytes (see <see cref="EventCacheKey.SampleHash"/>). A group whose
/// checksum fails while reading is a <see cref="DataFormatException"/> naming the file and group.
/// </summary>
internal static class EventCache
{
    public const int GroupEvents = 16384;
    internal const int HeaderSize = 128;
    internal const int GroupHeaderSize = 24;
    internal const uint Version = 3;
    internal static ReadOnlySpan<byte> Magic => "LDLMEVC1"u8;
    internal const uint GroupMagic = 0x31505247; // "GRP1"

    /// <summary>Null if the cache at <paramref name="path"/> is usable for <paramref name="key"/>, else why not.</summary>
    public static string? CheckUsable(string path, EventCacheKey key, EventBatchLayout layout)
    {
        if (!File.Exists(path)) return "no cache file";
        try
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
            return ReadHeader(f, path, out var h) ?? h.Mismatch(key, layout, f.Length);
        }
        catch (IOException e) { return $"cannot read cache: {e.Message}"; }
    }

    internal static string? ReadHeader(Stream s, string path, out CacheHeader header)
    {
        header = default;
        Span<byte> b = stackalloc byte[HeaderSize];
        if (s.ReadAtLeast(b, HeaderSize, throwOnEndOfStream: false) < HeaderSize) return "cache file shorter than its header";
        if (!b[..8].SequenceEqual(Magic)) return "not a LiveDlrm event cache (bad magic)";
        if (XxHash3.HashToUInt64(b[..120]) != BinaryPrimitives.ReadUInt64LittleEndian(b[120..])) return "cache header checksum mismatch (corrupt)";
        header = new CacheHeader(
            Version: BinaryPrimitives.ReadUInt32LittleEndian(b[8..]),
            IndexWidth: BinaryPrimitives.ReadInt32LittleEndian(b[12..]),
            Key: new EventCacheKey(BinaryPrimitives.ReadUInt64LittleEndian(b[16..]), BinaryPrimitives.ReadInt64LittleEndian(b[24..]), BinaryPrimitives.ReadInt64LittleEndian(b[32..]), BinaryPrimitives.ReadUInt64LittleEndian(b[96..])),
            DenseCount: BinaryPrimitives.ReadInt32LittleEndian(b[40..]),
            SparseCount: BinaryPrimitives.ReadInt32LittleEndian(b[44..]),
            HasTrueProbabilities: BinaryPrimitives.ReadInt32LittleEndian(b[48..]) != 0,
            Policy: (BadLinePolicy)BinaryPrimitives.ReadInt32LittleEndian(b[52..]),
            Events: BinaryPrimitives.ReadInt64LittleEndian(b[56..]),
            Groups: BinaryPrimitives.ReadInt64LittleEndian(b[64..]),
            Lines: BinaryPrimitives.ReadInt64LittleEndian(b[72..]),
            BadLines: BinaryPrimitives.ReadInt64LittleEndian(b[80..]),
            FileLength: BinaryPrimitives.ReadInt64LittleEndian(b[88..]));
        return null;
    }

    internal readonly record struct CacheHeader(uint Version, int IndexWidth, EventCacheKey Key, int DenseCount, int SparseCount,
                                                bool HasTrueProbabilities, BadLinePolicy Policy, long Events, long Groups, long Lines, long BadLines, long FileLength)
    {
        public string? Mismatch(EventCacheKey key, EventBatchLayout layout, long actualLength)
        {
            if (Version != EventCache.Version) return $"cache format version {Version}, this build reads {EventCache.Version}";
            if (Key.SchemaHash != key.SchemaHash) return "cache was built under a different schema";
            if (Key.SourceLength != key.SourceLength || Key.SourceWriteTicks != key.SourceWriteTicks || Key.SourceSample != key.SourceSample) return "source file changed since the cache was built";
            if (DenseCount != layout.DenseCount || SparseCount != layout.SparseCount || HasTrueProbabilities != layout.HasTrueProbabilities)
                return "cache layout differs from the schema's";
            if (IndexWidth is not (4 or 8)) return $"bad index width {IndexWidth}";
            if (FileLength != actualLength) return $"cache is {actualLength} bytes, header says {FileLength} (truncated or appended to)";
            if (Events < 0 || Groups < 0 || Lines < 0 || BadLines < 0 || Events > Lines || Groups > FileLength / GroupHeaderSize || !Enum.IsDefined(Policy))
                return "implausible counts in the cache header (corrupt)";
            return null;
        }
    }

    internal static void WriteHeader(Stream s, in CacheHeader h)
    {
        Span<byte> b = stackalloc byte[HeaderSize];
        b.Clear();
        Magic.CopyTo(b);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], h.Version);
        BinaryPrimitives.WriteInt32LittleEndian(b[12..], h.IndexWidth);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], h.Key.SchemaHash);
        BinaryPrimitives.WriteInt64LittleEndian(b[24..], h.Key.SourceLength);
        BinaryPrimitives.WriteInt64LittleEndian(b[32..], h.Key.SourceWriteTicks);
        BinaryPrimitives.WriteInt32LittleEndian(b[40..], h.DenseCount);
        BinaryPrimitives.WriteInt32LittleEndian(b[44..], h.SparseCount);
        BinaryPrimitives.WriteInt32LittleEndian(b[48..], h.HasTrueProbabilities ? 1 : 0);
        BinaryPrimitives.WriteInt32LittleEndian(b[52..], (int)h.Policy);
        BinaryPrimitives.WriteInt64LittleEndian(b[56..], h.Events);
        BinaryPrimitives.WriteInt64LittleEndian(b[64..], h.Groups);
        BinaryPrimitives.WriteInt64LittleEndian(b[72..], h.Lines);
        BinaryPrimitives.WriteInt64LittleEndian(b[80..], h.BadLines);
        BinaryPrimitives.WriteInt64LittleEndian(b[88..], h.FileLength);
        BinaryPrimitives.WriteUInt64LittleEndian(b[96..], h.Key.SourceSample);
        BinaryPrimitives.WriteUInt64LittleEndian(b[120..], XxHash3.HashToUInt64(b[..120]));
        s.Write(b);
    }

    internal static int IndexWidthFor(EventBatchLayout layout) => layout.Sparse.All(s => s.Rows <= int.MaxValue) ? 4 : 8;

    internal const int GroupPrefixSize = 32;
    internal const uint TimestampDeltas = 1, ConsecutiveRequestIds = 2;

    /// <summary>Where each section of a group payload starts (each padded to 8 bytes). Compact encodings, chosen per
    /// group by the writer: timestamps as int32 deltas from a base when they fit, request ids omitted when they
    /// count up by one, offsets omitted for a feature whose every bag holds exactly one index.</summary>
    internal sealed class GroupSections(int sparseCount)
    {
        public int Labels, Timestamps, RequestIds, Probabilities, Dense, Length;
        public readonly int[] Offsets = new int[sparseCount], Indices = new int[sparseCount];

        public void Compute(EventBatchLayout layout, int count, uint flags, ulong singleMask, ReadOnlySpan<long> nnz, int indexWidth)
        {
            long at = GroupPrefixSize;
            Labels = (int)at; at += Pad(count * 4L);
            Timestamps = (int)at; at += (flags & TimestampDeltas) != 0 ? Pad(count * 4L) : count * 8L;
            RequestIds = (int)at; at += (flags & ConsecutiveRequestIds) != 0 ? 0 : count * 8L;
            Probabilities = (int)at; at += layout.HasTrueProbabilities ? Pad(count * 4L) : 0;
            Dense = (int)at; at += Pad(count * 4L * layout.DenseCount);
            for (int f = 0; f < layout.SparseCount; f++)
            {
                Offsets[f] = (int)at; at += IsSingle(singleMask, f) ? 0 : Pad((count + 1) * 4L);
                Indices[f] = (int)at; at += Pad(nnz[f] * indexWidth);
            }
            if (at > Array.MaxLength) throw new InvalidOperationException("cache group too large");
            Length = (int)at;
        }
    }

    internal static bool IsSingle(ulong mask, int feature) => feature < 64 && (mask >> feature & 1) != 0;

    internal static long Pad(long n) => (n + 7) & ~7L;
}

/// <summary>Writes a cache while a stream is parsed; <see cref="Commit"/> publishes it atomically, disposing
/// without committing deletes the temporary file.</summary>
internal sealed class EventCacheWriter : IDisposable
{
    readonly string _path, _tempPath;
    readonly EventBatchLayout _layout;
    readonly EventCacheKey _key;
    readonly int _indexWidth;
    readonly FileStream _file;
    readonly EventBatch _group;
    readonly XxHash3 _hash = new();
    byte[] _payload = new byte[1 << 20];
    readonly EventCache.GroupSections _sections;
    long _events, _groups;
    bool _done;

    readonly BadLinePolicy _policy;

    public EventCacheWriter(string path, EventBatchLayout layout, EventCacheKey key, BadLinePolicy policy)
    {
        _path = Path.GetFullPath(path);
        _policy = policy;
        string folder = Path.GetDirectoryName(_path)!, name = Path.GetFileName(_path);
        RemoveStaleTemporaries(folder, name);
        _tempPath = Path.Combine(folder, Files.TempOwner.Name(name, "tmp"));
        _layout = layout;
        _key = key;
        _indexWidth = EventCache.IndexWidthFor(layout);
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        _file = new FileStream(_tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        _file.Write(new byte[EventCache.HeaderSize]); // placeholder until Commit knows the totals
        _group = new EventBatch(layout, EventCache.GroupEvents, 2);
        _sections = new EventCache.GroupSections(layout.SparseCount);
    }

    public void Append(EventBatch batch)
    {
        int start = 0;
        while (start < batch.Count)
        {
            int n = Math.Min(batch.Count - start, _group.Capacity - _group.Count);
            _group.AppendRange(batch, start, n);
            start += n;
            if (_group.IsFull) FlushGroup();
        }
    }

    void FlushGroup()
    {
        int count = _group.Count;
        if (count == 0) return;
        Span<long> nnz = stackalloc long[_layout.SparseCount];
        ulong single = 0;
        for (int f = 0; f < nnz.Length; f++)
        {
            nnz[f] = _group.OffsetArray(f)[count];
            if (f < 64 && nnz[f] == count && AllSingle(_group.OffsetArray(f).AsSpan(0, count + 1))) single |= 1UL << f;
        }
        var ts = _group.TimestampArray.AsSpan(0, count);
        var rid = _group.RequestIdArray.AsSpan(0, count);
        long tsMin = long.MaxValue, tsMax = long.MinValue;
        foreach (long t in ts) { tsMin = Math.Min(tsMin, t); tsMax = Math.Max(tsMax, t); }
        uint flags = 0;
        if ((Int128)tsMax - tsMin <= int.MaxValue) flags |= EventCache.TimestampDeltas;
        bool consecutive = true;
        for (int i = 1; i < count && consecutive; i++) consecutive = rid[i] == rid[i - 1] + 1;
        if (consecutive) flags |= EventCache.ConsecutiveRequestIds;
        _sections.Compute(_layout, count, flags, single, nnz, _indexWidth);
        int length = _sections.Length;
        if (_payload.Length < length) _payload = new byte[Math.Max(length, _payload.Length * 2L)];
        Span<byte> p = _payload.AsSpan(0, length);
        p.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(p, flags);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], single);
        BinaryPrimitives.WriteInt64LittleEndian(p[16..], rid[0]);
        BinaryPrimitives.WriteInt64LittleEndian(p[24..], tsMin);
        static void Put<T>(ReadOnlySpan<T> values, Span<byte> dst) where T : unmanaged => MemoryMarshal.AsBytes(values).CopyTo(dst);
        Put<float>(_group.LabelArray.AsSpan(0, count), p[_sections.Labels..]);
        if ((flags & EventCache.TimestampDeltas) != 0)
        {
            var d = MemoryMarshal.Cast<byte, int>(p.Slice(_sections.Timestamps, count * 4));
            for (int i = 0; i < count; i++) d[i] = (int)(ts[i] - tsMin);
        }
        else Put<long>(ts, p[_sections.Timestamps..]);
        if ((flags & EventCache.ConsecutiveRequestIds) == 0) Put<long>(rid, p[_sections.RequestIds..]);
        if (_layout.HasTrueProbabilities) Put<float>(_group.TrueProbabilityArray.AsSpan(0, count), p[_sections.Probabilities..]);
        Put<float>(_group.DenseArray.AsSpan(0, count * _layout.DenseCount), p[_sections.Dense..]);
        for (int f = 0; f < _layout.SparseCount; f++)
        {
            if (!EventCache.IsSingle(single, f))
            {
                var offsets = MemoryMarshal.Cast<byte, int>(p.Slice(_sections.Offsets[f], (count + 1) * 4));
                long[] src = _group.OffsetArray(f);
                for (int i = 0; i <= count; i++) offsets[i] = checked((int)src[i]);
            }
            long[] idx = _group.IndexArray(f);
            if (_indexWidth == 8) Put<long>(idx.AsSpan(0, (int)nnz[f]), p[_sections.Indices[f]..]);
            else
            {
                var dst = MemoryMarshal.Cast<byte, int>(p.Slice(_sections.Indices[f], (int)nnz[f] * 4));
                for (int i = 0; i < dst.Length; i++) dst[i] = (int)idx[i];
            }
        }
        Span<byte> gh = stackalloc byte[EventCache.GroupHeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(gh, EventCache.GroupMagic);
        BinaryPrimitives.WriteInt32LittleEndian(gh[4..], count);
        BinaryPrimitives.WriteInt64LittleEndian(gh[8..], length);
        BinaryPrimitives.WriteUInt64LittleEndian(gh[16..], XxHash3.HashToUInt64(p));
        _file.Write(gh);
        _file.Write(p);
        _events += count;
        _groups++;
        _group.Clear();
    }

    static bool AllSingle(ReadOnlySpan<long> offsets)
    {
        for (int i = 1; i < offsets.Length; i++) if (offsets[i] != offsets[i - 1] + 1) return false;
        return true;
    }

    /// <summary>Finishes the file (header with totals, fsync) and renames it over the target.</summary>
    public void Commit(long lines, long badLines)
    {
        if (_done) throw new InvalidOperationException("cache already committed or aborted");
        FlushGroup();
        long length = _file.Length;
        _file.Position = 0;
        EventCache.WriteHeader(_file, new EventCache.CacheHeader(EventCache.Version, _indexWidth, _key, _layout.DenseCount, _layout.SparseCount,
                                                                _layout.HasTrueProbabilities, _policy, _events, _groups, lines, badLines, length));
        _file.Flush(flushToDisk: true);
        _file.Dispose();
        File.Move(_tempPath, _path, overwrite: true);
        _done = true;
    }

    /// <summary>Deletes temporary caches of <paramref name="name"/> whose writer process is no longer running.</summary>
    static void RemoveStaleTemporaries(string folder, string name)
    {
        try
        {
            foreach (string f in Directory.GetFiles(folder, $".{name}.tmp-*"))
                if (!Files.TempOwner.OwnerAlive(Path.GetFileName(f), "tmp")) File.Delete(f);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* tried again by the next writer */ }
    }

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        _file.Dispose();
        try { File.Delete(_tempPath); } catch (IOException) { /* best effort: a stray temp file is harmless */ }
    }
}

/// <summary>Streams events out of a cache group by group (bounded memory: one group's payload), verifying each
/// group's checksum before any of its events is handed out.</summary>
internal sealed class EventCacheReader : IDisposable
{
    readonly string _path;
    readonly FileStream _file;
    readonly EventBatchLayout _layout;
    readonly EventCache.CacheHeader _header;
    byte[] _payload = new byte[1 << 20];
    int _groupCount, _groupPos;
    long _groupIndex = -1;
    readonly long[] _nnz;
    readonly EventCache.GroupSections _sections;
    uint _flags;
    ulong _single;
    long _requestIdBase, _timestampBase;

    public long Events => _header.Events;
    public long Lines => _header.Lines;
    public long BadLines => _header.BadLines;
    public long FileLength => _header.FileLength;

    public EventCacheReader(string path, EventBatchLayout layout, EventCacheKey key)
    {
        _path = path;
        _layout = layout;
        _file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        string? problem = EventCache.ReadHeader(_file, path, out _header) ?? _header.Mismatch(key, layout, _file.Length);
        if (problem is not null)
        {
            _file.Dispose();
            throw new DataFormatException($"{path}: {problem}");
        }
        _nnz = new long[layout.SparseCount];
        _sections = new EventCache.GroupSections(layout.SparseCount);
    }

    public int Read(EventBatch batch)
    {
        batch.Clear();
        while (batch.Count < batch.Capacity)
        {
            if (_groupPos == _groupCount && !NextGroup()) break;
            int n = Math.Min(batch.Capacity - batch.Count, _groupCount - _groupPos);
            CopyOut(batch, _groupPos, n);
            _groupPos += n;
        }
        return batch.Count;
    }

    bool NextGroup()
    {
        if (_groupIndex + 1 >= _header.Groups) return false;
        _groupIndex++;
        Span<byte> gh = stackalloc byte[EventCache.GroupHeaderSize];
        if (_file.ReadAtLeast(gh, gh.Length, throwOnEndOfStream: false) < gh.Length) throw Corrupt("truncated group header");
        if (BinaryPrimitives.ReadUInt32LittleEndian(gh) != EventCache.GroupMagic) throw Corrupt("bad group marker");
        int count = BinaryPrimitives.ReadInt32LittleEndian(gh[4..]);
        long length = BinaryPrimitives.ReadInt64LittleEndian(gh[8..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(gh[16..]);
        if (count <= 0 || count > EventCache.GroupEvents || length <= 0 || length > _file.Length - _file.Position) throw Corrupt($"implausible group header (count {count}, length {length})");
        if (_payload.Length < length) _payload = new byte[Math.Max(length, _payload.Length * 2L)];
        Span<byte> p = _payload.AsSpan(0, (int)length);
        if (_file.ReadAtLeast(p, p.Length, throwOnEndOfStream: false) < p.Length) throw Corrupt("truncated group");
        if (XxHash3.HashToUInt64(p) != checksum) throw Corrupt("checksum mismatch");
        if (length < EventCache.GroupPrefixSize) throw Corrupt("group shorter than its prefix");
        _flags = BinaryPrimitives.ReadUInt32LittleEndian(p);
        _single = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        _requestIdBase = BinaryPrimitives.ReadInt64LittleEndian(p[16..]);
        _timestampBase = BinaryPrimitives.ReadInt64LittleEndian(p[24..]);
        if ((_flags & ~(EventCache.TimestampDeltas | EventCache.ConsecutiveRequestIds)) != 0) throw Corrupt($"unknown group flags {_flags:x}");
        // Index counts first (a single-valued feature has count; others end their offsets section with it), then
        // the full section layout, which must account for exactly the payload's bytes.
        for (int f = 0; f < _layout.SparseCount; f++) _nnz[f] = EventCache.IsSingle(_single, f) ? count : -1;
        _sections.Compute(_layout, count, _flags, _single, _nnz.Select(n => Math.Max(n, 0)).ToArray(), _header.IndexWidth);
        for (int f = 0; f < _layout.SparseCount; f++)
        {
            if (_nnz[f] >= 0) continue;
            if (_sections.Offsets[f] + (count + 1) * 4 > length) throw Corrupt("sections exceed the group payload");
            var offsets = MemoryMarshal.Cast<byte, int>(p.Slice(_sections.Offsets[f], (count + 1) * 4));
            if (offsets[0] != 0 || offsets[count] < 0) throw Corrupt($"bad offsets of sparse feature {f}");
            _nnz[f] = offsets[count];
            _sections.Compute(_layout, count, _flags, _single, _nnz.Select(n => Math.Max(n, 0)).ToArray(), _header.IndexWidth);
        }
        if (_sections.Length != length) throw Corrupt($"payload is {length} bytes, sections need {_sections.Length}");
        ValidateGroup(p, count);
        _groupCount = count;
        _groupPos = 0;
        return true;
    }

    /// <summary>Structural checks of a group whose checksum passed: CSR offsets well-formed, every index inside
    /// its table. Done once per group so that copying out is plain bulk copies.</summary>
    void ValidateGroup(ReadOnlySpan<byte> p, int count)
    {
        for (int f = 0; f < _layout.SparseCount; f++)
        {
            if (!EventCache.IsSingle(_single, f))
            {
                var offsets = MemoryMarshal.Cast<byte, int>(p.Slice(_sections.Offsets[f], (count + 1) * 4));
                for (int i = 0; i < count; i++)
                    if (offsets[i + 1] < offsets[i]) throw Corrupt($"offsets of sparse feature {f} decrease at event {i}");
            }
            long rows = _layout.Sparse[f].Rows;
            if (_header.IndexWidth == 8)
            {
                foreach (long v in MemoryMarshal.Cast<byte, long>(p.Slice(_sections.Indices[f], (int)_nnz[f] * 8)))
                    if ((ulong)v >= (ulong)rows) throw Corrupt($"index {v} of sparse feature {f} outside [0, {rows})");
            }
            else
            {
                var idx = MemoryMarshal.Cast<byte, uint>(p.Slice(_sections.Indices[f], (int)_nnz[f] * 4));
                uint limit = (uint)Math.Min(rows, uint.MaxValue);
                int i = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    var bound = Vector256.Create(limit);
                    for (; i + Vector256<uint>.Count <= idx.Length; i += Vector256<uint>.Count)
                        if (Vector256.GreaterThanOrEqualAny(Vector256.Create(idx.Slice(i, Vector256<uint>.Count)), bound)) break;
                }
                for (; i < idx.Length; i++)
                    if (idx[i] >= limit) throw Corrupt($"index {(int)idx[i]} of sparse feature {f} outside [0, {rows})");
            }
        }
    }

    void CopyOut(EventBatch batch, int start, int n)
    {
        ReadOnlySpan<byte> p = _payload;
        var sec = _sections;
        int dst = batch.Count;
        MemoryMarshal.Cast<byte, float>(p[sec.Labels..]).Slice(start, n).CopyTo(batch.LabelArray.AsSpan(dst));
        if ((_flags & EventCache.TimestampDeltas) != 0)
            WidenAdd(MemoryMarshal.Cast<byte, int>(p[sec.Timestamps..]).Slice(start, n), _timestampBase, batch.TimestampArray.AsSpan(dst, n));
        else
            MemoryMarshal.Cast<byte, long>(p[sec.Timestamps..]).Slice(start, n).CopyTo(batch.TimestampArray.AsSpan(dst));
        if ((_flags & EventCache.ConsecutiveRequestIds) != 0)
        {
            var r = batch.RequestIdArray.AsSpan(dst, n);
            for (int i = 0; i < r.Length; i++) r[i] = _requestIdBase + start + i;
        }
        else MemoryMarshal.Cast<byte, long>(p[sec.RequestIds..]).Slice(start, n).CopyTo(batch.RequestIdArray.AsSpan(dst));
        if (_layout.HasTrueProbabilities)
            MemoryMarshal.Cast<byte, float>(p[sec.Probabilities..]).Slice(start, n).CopyTo(batch.TrueProbabilityArray.AsSpan(dst));
        int d = _layout.DenseCount;
        MemoryMarshal.Cast<byte, float>(p[sec.Dense..]).Slice(start * d, n * d).CopyTo(batch.DenseArray.AsSpan(dst * d));
        for (int f = 0; f < _layout.SparseCount; f++)
        {
            long[] o = batch.OffsetArray(f);
            long baseIndex = o[dst];
            int from, to;
            if (EventCache.IsSingle(_single, f))
            {
                from = start; to = start + n;
                var target = o.AsSpan(dst + 1, n);
                for (int i = 0; i < target.Length; i++) target[i] = baseIndex + i + 1;
            }
            else
            {
                var offsets = MemoryMarshal.Cast<byte, int>(p[sec.Offsets[f]..]);
                from = offsets[start]; to = offsets[start + n];
                // offsets[start + 1 .. start + n] rebased onto the batch's running index count
                WidenAdd(offsets.Slice(start + 1, n), baseIndex - from, o.AsSpan(dst + 1, n));
            }
            batch.EnsureIndexCapacity(f, baseIndex + (to - from));
            if (_header.IndexWidth == 8)
                MemoryMarshal.Cast<byte, long>(p[sec.Indices[f]..]).Slice(from, to - from).CopyTo(batch.IndexArray(f).AsSpan((int)baseIndex));
            else
                WidenAdd(MemoryMarshal.Cast<byte, int>(p[sec.Indices[f]..]).Slice(from, to - from), 0, batch.IndexArray(f).AsSpan((int)baseIndex, to - from));
        }
        batch.SetCountUnchecked(dst + n);
    }

    /// <summary>destination[i] = source[i] + add, int → long.</summary>
    static void WidenAdd(ReadOnlySpan<int> source, long add, Span<long> destination)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var a = Vector256.Create(add);
            for (; i + Vector256<int>.Count <= source.Length; i += Vector256<int>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(source.Slice(i, Vector256<int>.Count)));
                (lo + a).CopyTo(destination.Slice(i, Vector256<long>.Count));
                (hi + a).CopyTo(destination.Slice(i + Vector256<long>.Count, Vector256<long>.Count));
            }
        }
        for (; i < source.Length; i++) destination[i] = source[i] + add;
    }

    Exception Corrupt(string what) =>
        new DataFormatException($"{_path}: corrupt event cache at group {_groupIndex} ({what}); delete the file to rebuild it from the source");

    public void Dispose() => _file.Dispose();
}
