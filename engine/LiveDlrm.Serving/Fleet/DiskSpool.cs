using System.Buffers.Binary;
using System.IO.Hashing;

namespace LiveDlrm.Serving.Fleet;

/// <summary>
/// The publisher's spool on disk (<c>fleet-spool.log</c>), so that examples a node joined but had not yet published
/// survive the node's crash: every spooled example is appended (record <c>E</c>: its spool index and its
/// single-example encoding) before it enters the in-memory queue; the queue's drops (<c>D</c>), each message as it
/// is formed (<c>M</c>: its examples' indices, written before the first publish attempt) and each acknowledgement
/// (<c>A</c>) follow. A restarted node replays the file: the message that was formed but not acknowledged is
/// published again as it was (same examples, same message id, so the log's deduplication drops it if it had
/// landed), then every example neither dropped nor in an acknowledged message is spooled again, in order.
/// <para>The file starts with <c>LDSPOOL1</c> (a file at that name without it is refused, not replaced); records are <c>u32 length, u32 XxHash32, payload</c>; replay stops at the first short or damaged record (a
/// write cut by the crash) and the file is rewritten from what it holds. Each record is one <c>write()</c> to the
/// operating system, so a killed process loses nothing it appended; the file is fsynced only when it is rewritten,
/// so a power loss can lose the last records. The file is rewritten (compacted: only the live examples and the
/// message in flight) when it has grown past <see cref="CompactBytes"/> and twice its live size; the rewrite is
/// written outside the lock, so <see cref="Append"/> waits only for the records appended meanwhile.</para>
/// </summary>
internal sealed class DiskSpool : IDisposable
{
    const byte Example = (byte)'E', Dropped = (byte)'D', Message = (byte)'M', Acked = (byte)'A';
    public const string FileName = "fleet-spool.log";

    readonly string _path;
    readonly object _lock = new();
    readonly SortedDictionary<long, byte[]> _live = new();   // index → E record of every example not dropped, not acknowledged
    FileStream _file;
    long _liveBytes;
    long[]? _inFlight;                                      // the message formed and not yet acknowledged
    List<byte[]>? _tail;                                    // records appended while a rewrite is being written
    bool _compacting;

    /// <summary>Rewrite the file once it is larger than this (and twice its live size).</summary>
    public long CompactBytes { get; init; } = 8 << 20;
    public string FilePath => _path;
    public long FileBytes { get { lock (_lock) return _file.Length; } }

    /// <summary>What the file held when it was opened.</summary>
    public sealed record Recovered(IReadOnlyList<TrainingExample> InFlight, IReadOnlyList<long> InFlightIndices,
                                   IReadOnlyList<(TrainingExample Example, long Index)> Waiting, long NextIndex, bool Damaged);

    /// <summary>The file's first bytes: what makes a file at <see cref="FileName"/> ours to rewrite.</summary>
    static readonly byte[] SpoolMagic = "LDSPOOL1"u8.ToArray();

    DiskSpool(string path, FileStream file) { _path = path; _file = file; }

    /// <summary>Opens (or creates) the spool in <paramref name="dir"/> and replays it.</summary>
    public static (DiskSpool Spool, Recovered Recovered) Open(string dir, long compactBytes = 8 << 20)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(Path.GetFullPath(dir), FileName);
        var examples = new SortedDictionary<long, byte[]>();
        var records = new SortedDictionary<long, byte[]>();
        long[]? inFlight = null;
        long next = 0;
        bool damaged = false;
        if (File.Exists(path))
        {
            var bytes = File.ReadAllBytes(path);
            // A file that does not start with the magic is not a spool (a creation cut before the magic was whole
            // leaves a prefix of it, which is ours): refuse it rather than replace someone's file.
            int prefix = Math.Min(bytes.Length, SpoolMagic.Length);
            if (!bytes.AsSpan(0, prefix).SequenceEqual(SpoolMagic.AsSpan(0, prefix)))
                throw new LiveDlrm.Runtime.UserInputException($"{path}: not a fleet spool (it does not start with {System.Text.Encoding.ASCII.GetString(SpoolMagic)}); move it away or give another --adapters directory");
            int at = prefix;
            while (at < bytes.Length)
            {
                if (bytes.Length - at < 8) { damaged = true; break; }
                int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at));
                uint hash = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 4));
                if (length < 1 || length > bytes.Length - at - 8 || XxHash32.HashToUInt32(bytes.AsSpan(at + 8, length)) != hash) { damaged = true; break; }
                var payload = bytes.AsSpan(at + 8, length);
                var record = bytes.AsSpan(at, length + 8).ToArray();
                at += length + 8;
                int p = 1;
                try
                {
                switch (payload[0])
                {
                    case Example:
                        long index = (long)VarInt(payload, ref p);
                        examples[index] = payload[p..].ToArray();
                        records[index] = record;
                        next = Math.Max(next, index + 1);
                        break;
                    case Dropped:
                        long d = (long)VarInt(payload, ref p);
                        examples.Remove(d); records.Remove(d);
                        break;
                    case Message:
                        int n = (int)VarInt(payload, ref p);
                        inFlight = new long[n];
                        for (int i = 0; i < n; i++) inFlight[i] = (long)VarInt(payload, ref p);
                        break;
                    case Acked:
                        if (inFlight is not null) foreach (long i in inFlight) { examples.Remove(i); records.Remove(i); }
                        inFlight = null;
                        break;
                    default:
                        damaged = true;
                        at = bytes.Length;
                        break;
                }
                }
                catch (InvalidDataException) { damaged = true; break; }
            }
        }
        // An example record whose body does not decode (not possible with a good hash, short of a bug) is dropped.
        TrainingExample? Decode(byte[] e) { try { return LogRecord.Decode(e) as TrainingExample; } catch (InvalidDataException) { damaged = true; return null; } }
        var flight = new List<TrainingExample>();
        var flightIndices = new List<long>();
        if (inFlight is not null)
            foreach (long i in inFlight)
                if (examples.TryGetValue(i, out var e) && Decode(e) is { } x) { flight.Add(x); flightIndices.Add(i); }
        var inFlightSet = flightIndices.ToHashSet();
        var waiting = new List<(TrainingExample, long)>();
        foreach (var (i, e) in examples)
            if (!inFlightSet.Contains(i) && Decode(e) is { } x) waiting.Add((x, i));
            else if (!inFlightSet.Contains(i)) records.Remove(i);

        // Start a fresh file holding exactly what is still live.
        string temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            f.Write(SpoolMagic);
            foreach (var (i, r) in records) if (examples.ContainsKey(i)) f.Write(r);   // in index order
            if (flightIndices.Count > 0) f.Write(Record(MessagePayload(flightIndices)));
            f.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read, bufferSize: 0);
        var spool = new DiskSpool(path, file) { CompactBytes = compactBytes };
        foreach (var (i, r) in records) if (examples.ContainsKey(i)) { spool._live[i] = r; spool._liveBytes += r.Length; }
        if (flightIndices.Count > 0) spool._inFlight = [.. flightIndices];
        return (spool, new Recovered(flight, flightIndices, waiting, next, damaged));
    }

    /// <summary>Appends example <paramref name="index"/>; called under the publisher's enqueue order.</summary>
    public void Append(long index, TrainingExample example)
    {
        var payload = new List<byte> { Example };
        AddVarInt(payload, (ulong)index);
        payload.AddRange(LogRecord.Encode(example));
        var record = Record([.. payload]);
        lock (_lock)
        {
            _live[index] = record;
            _liveBytes += record.Length;
            Write(record);
        }
    }

    /// <summary>The in-memory queue dropped example <paramref name="index"/> (full spool).</summary>
    public void Drop(long index)
    {
        lock (_lock)
        {
            if (_live.Remove(index, out var r)) _liveBytes -= r.Length;
            Write(Record([Dropped, .. VarIntBytes((ulong)index)]));
        }
    }

    /// <summary>A message of these examples is about to be published.</summary>
    public void Formed(IReadOnlyList<long> indices)
    {
        lock (_lock)
        {
            _inFlight = [.. indices];
            Write(Record(MessagePayload(indices)));
        }
    }

    /// <summary>The message formed last is in the log.</summary>
    public void Acknowledged()
    {
        bool compact;
        lock (_lock)
        {
            if (_inFlight is { } flight) foreach (long i in flight) if (_live.Remove(i, out var r)) _liveBytes -= r.Length;
            _inFlight = null;
            Write(Record([Acked]));
            compact = !_compacting && _file.Length > CompactBytes && _file.Length > 2 * _liveBytes;
            if (compact) { _compacting = true; _tail = new(); }
        }
        if (compact) Compact();
    }

    void Write(byte[] record)
    {
        _file.Write(record);
        _tail?.Add(record);
    }

    /// <summary>Rewrites the file with the live records: the snapshot is written outside the lock, the records
    /// appended meanwhile are added under it, then the new file replaces the old.</summary>
    void Compact()
    {
        List<byte[]> snapshot;
        long[]? flight;
        lock (_lock) { snapshot = [.. _live.Values]; flight = _inFlight; _tail!.Clear(); }
        string temp = _path + ".tmp";
        try
        {
            using var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 1 << 16);
            f.Write(SpoolMagic);
            foreach (var r in snapshot) f.Write(r);
            if (flight is not null) f.Write(Record(MessagePayload(flight)));
            f.Flush(flushToDisk: true);
            lock (_lock)
            {
                // Records appended meanwhile follow, in their order (a D or A for a snapshot example still applies).
                foreach (var r in _tail!) f.Write(r);
                f.Flush(flushToDisk: true);
                f.Dispose();
                File.Move(temp, _path, overwrite: true);
                _file.Dispose();
                _file = new FileStream(_path, FileMode.Append, FileAccess.Write, FileShare.Read, bufferSize: 0);
                _tail = null;
                _compacting = false;
            }
        }
        catch (IOException)
        {
            lock (_lock) { _tail = null; _compacting = false; }
            try { File.Delete(temp); } catch (IOException) { }
        }
    }

    static byte[] MessagePayload(IReadOnlyList<long> indices)
    {
        var w = new List<byte> { Message };
        AddVarInt(w, (ulong)indices.Count);
        foreach (long i in indices) AddVarInt(w, (ulong)i);
        return [.. w];
    }

    static void AddVarInt(List<byte> w, ulong v)
    {
        while (v >= 0x80) { w.Add((byte)(v | 0x80)); v >>= 7; }
        w.Add((byte)v);
    }

    static byte[] Record(ReadOnlySpan<byte> payload)
    {
        var record = new byte[8 + payload.Length];
        BinaryPrimitives.WriteInt32LittleEndian(record, payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4), XxHash32.HashToUInt32(payload));
        payload.CopyTo(record.AsSpan(8));
        return record;
    }

    static byte[] VarIntBytes(ulong v)
    {
        var w = new List<byte>();
        AddVarInt(w, v);
        return [.. w];
    }

    static ulong VarInt(ReadOnlySpan<byte> s, ref int p)
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (p >= s.Length) throw new InvalidDataException("spool record cut inside a varint");
            byte b = s[p++];
            v |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return v;
        }
        throw new InvalidDataException("spool record: varint too long");
    }

    public void Dispose() { lock (_lock) _file.Dispose(); }
}
