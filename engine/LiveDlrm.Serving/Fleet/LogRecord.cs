using System.Buffers.Binary;
using System.Text;

namespace LiveDlrm.Serving.Fleet;

/// <summary>One labelled training example as the fleet log carries it: the features exactly as they were served,
/// the label (explicit or an implicit negative), the event time, the base model it was served by and the replica
/// that served it. The request id is also the log's deduplication key.</summary>
internal sealed record TrainingExample(long RequestId, long EventTime, float Label, string BaseFingerprint, string Replica,
                                       float[] Dense, long[][] Bags) : LogRecord;

/// <summary>The fleet moves to a new base model at this position of the log: every replica trains what it has
/// pending, loads <see cref="Checkpoint"/> (which must have <see cref="BaseFingerprint"/>) and resets its adapters,
/// so all replicas switch after the same examples.</summary>
internal sealed record BaseMarker(string BaseFingerprint, string Checkpoint) : LogRecord;

/// <summary>
/// A message of the fleet log, and its wire encoding. Compact on purpose (every replica receives every message):
/// <code>
/// kind byte (1 = example, 2 = base marker), format byte (1)
/// example: zigzag varint request id, zigzag varint event time, label byte (0/1), base fingerprint and replica
///          (varint length + UTF-8), varint dense count + float32 LE each, varint table count, per table a varint
///          bag length + one varint per id
/// marker:  base fingerprint, checkpoint path (varint length + UTF-8)
/// </code>
/// Ids are hashed rows (non-negative, mostly below 2^28), so a varint id is 1–4 bytes instead of 8; dense values stay
/// raw float32, which keeps the features bit-identical to what was served.
/// </summary>
internal abstract record LogRecord
{
    const byte KindExample = 1, KindMarker = 2, Format = 1;
    const int MaxString = 4096, MaxCount = 1 << 20;

    public static byte[] Encode(LogRecord record)
    {
        var w = new ArrayBufferWriter();
        switch (record)
        {
            case TrainingExample e:
                w.Byte(KindExample); w.Byte(Format);
                w.VarInt(ZigZag(e.RequestId));
                w.VarInt(ZigZag(e.EventTime));
                if (!(e.Label == 0f || e.Label == 1f)) throw new ArgumentOutOfRangeException(nameof(record), e.Label, $"request {e.RequestId}: label must be 0 or 1");
                w.Byte((byte)e.Label);
                w.String(e.BaseFingerprint);
                w.String(e.Replica);
                w.VarInt((ulong)e.Dense.Length);
                foreach (float f in e.Dense) w.Float(f);
                w.VarInt((ulong)e.Bags.Length);
                foreach (var bag in e.Bags)
                {
                    w.VarInt((ulong)bag.Length);
                    foreach (long id in bag)
                    {
                        if (id < 0) throw new ArgumentOutOfRangeException(nameof(record), id, $"request {e.RequestId}: negative id");
                        w.VarInt((ulong)id);
                    }
                }
                break;
            case BaseMarker m:
                w.Byte(KindMarker); w.Byte(Format);
                w.String(m.BaseFingerprint);
                w.String(m.Checkpoint);
                break;
            default:
                throw new ArgumentException($"unknown log record {record.GetType().Name}", nameof(record));
        }
        return w.ToArray();
    }

    /// <summary>Decodes one message; <see cref="InvalidDataException"/> naming what is wrong for anything that is
    /// not a whole, well-formed record of this format.</summary>
    public static LogRecord Decode(ReadOnlySpan<byte> bytes)
    {
        var r = new Reader(bytes);
        byte kind = r.Byte(), format = r.Byte();
        if (format != Format) throw new InvalidDataException($"log record format {format}, this engine reads {Format}");
        LogRecord result;
        switch (kind)
        {
            case KindExample:
            {
                long requestId = UnZigZag(r.VarInt()), time = UnZigZag(r.VarInt());
                byte label = r.Byte();
                if (label > 1) throw new InvalidDataException($"request {requestId}: label byte {label}");
                string fingerprint = r.String(), replica = r.String();
                var dense = new float[r.Count()];
                for (int i = 0; i < dense.Length; i++) dense[i] = r.Float();
                var bags = new long[r.Count()][];
                for (int t = 0; t < bags.Length; t++)
                {
                    var bag = bags[t] = new long[r.Count()];
                    for (int i = 0; i < bag.Length; i++)
                    {
                        ulong id = r.VarInt();
                        if (id > long.MaxValue) throw new InvalidDataException($"request {requestId}: id out of range");
                        bag[i] = (long)id;
                    }
                }
                result = new TrainingExample(requestId, time, label, fingerprint, replica, dense, bags);
                break;
            }
            case KindMarker:
                result = new BaseMarker(r.String(), r.String());
                break;
            default:
                throw new InvalidDataException($"log record kind {kind}");
        }
        if (!r.AtEnd) throw new InvalidDataException("bytes after the end of a log record");
        return result;
    }

    static ulong ZigZag(long v) => (ulong)((v << 1) ^ (v >> 63));
    static long UnZigZag(ulong v) => (long)(v >> 1) ^ -(long)(v & 1);

    sealed class ArrayBufferWriter
    {
        byte[] _buf = new byte[256];
        int _n;

        void Ensure(int more) { if (_n + more > _buf.Length) Array.Resize(ref _buf, Math.Max(_buf.Length * 2, _n + more)); }
        public void Byte(byte b) { Ensure(1); _buf[_n++] = b; }
        public void VarInt(ulong v)
        {
            Ensure(10);
            while (v >= 0x80) { _buf[_n++] = (byte)(v | 0x80); v >>= 7; }
            _buf[_n++] = (byte)v;
        }
        public void Float(float f) { Ensure(4); BinaryPrimitives.WriteSingleLittleEndian(_buf.AsSpan(_n), f); _n += 4; }
        public void String(string s)
        {
            int len = Encoding.UTF8.GetByteCount(s);
            if (len > MaxString) throw new ArgumentException($"log record string of {len} bytes (at most {MaxString})");
            VarInt((ulong)len);
            Ensure(len);
            _n += Encoding.UTF8.GetBytes(s, _buf.AsSpan(_n));
        }
        public byte[] ToArray() => _buf.AsSpan(0, _n).ToArray();
    }

    ref struct Reader(ReadOnlySpan<byte> bytes)
    {
        readonly ReadOnlySpan<byte> _b = bytes;
        int _p;

        public readonly bool AtEnd => _p == _b.Length;
        public byte Byte()
        {
            if (_p >= _b.Length) throw new InvalidDataException("truncated log record");
            return _b[_p++];
        }
        public ulong VarInt()
        {
            ulong v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                byte b = Byte();
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
            throw new InvalidDataException("varint longer than 10 bytes in a log record");
        }
        public int Count()
        {
            ulong n = VarInt();
            if (n > MaxCount || (long)n > _b.Length - _p) throw new InvalidDataException($"count {n} exceeds the log record");
            return (int)n;
        }
        public float Float()
        {
            if (_p + 4 > _b.Length) throw new InvalidDataException("truncated log record");
            float f = BinaryPrimitives.ReadSingleLittleEndian(_b[_p..]);
            _p += 4;
            return f;
        }
        public string String()
        {
            int len = Count();
            if (len > MaxString) throw new InvalidDataException($"string of {len} bytes in a log record");
            var s = Encoding.UTF8.GetString(_b.Slice(_p, len));
            _p += len;
            return s;
        }
    }
}
