using System.Buffers.Binary;
using System.IO.Compression;
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

/// <summary>Several examples in one message, in the order a replica trains them (position = the message's sequence
/// and the example's index in it). All come from one producing replica and one base, with the same feature counts.</summary>
internal sealed record ExampleBatch(IReadOnlyList<TrainingExample> Examples) : LogRecord
{
    /// <summary>The deduplication key of a batch: the producer and its first request id and count, so a retried
    /// publish of the same batch carries the same id (request ids are unique within the producing replica).</summary>
    public string MessageId => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{Examples[0].Replica}-b{Examples[0].RequestId}+{Examples.Count}");
}

/// <summary>
/// A message of the fleet log, and its wire encoding. Compact on purpose (every replica receives every message):
/// <code>
/// kind byte (1 = example, 2 = base marker, 3 = example batch), format byte (1; batches 2)
/// example: zigzag varint request id, zigzag varint event time, label byte (0/1), base fingerprint and replica
///          (varint length + UTF-8), varint dense count + float32 LE each, varint table count, per table a varint
///          bag length + one varint per id
/// marker:  base fingerprint, checkpoint path (varint length + UTF-8)
/// batch:   flags byte (bit 0: the body is Brotli-compressed, then varint body length + compressed bytes); body =
///          varint count n, base fingerprint, replica, varint dense count, varint table count; request ids and
///          event times (first zigzag, then zigzag deltas); labels as a bitmap; dense columns, each a mode byte
///          (format 2; format 1 has no mode byte and only planes) then either its 4 byte planes (byte 0 of every
///          value, then byte 1, …: the similar exponent bytes sit together for the compressor) or, when every
///          value is log1p of an integer count, the counts as varints (<see cref="Log1pCount"/>); per table the n bag lengths, the distinct ids ascending (first, then varint gaps) and one
///          varint index into them per id, in bag order (pooling order is kept)
/// </code>
/// Readers of this format read all three kinds; a kind or format they do not know is refused with its number, and
/// a replica skips and counts such a message (every replica skips the same ones).
/// Ids are hashed rows (non-negative, mostly below 2^28), so a varint id is 1–4 bytes instead of 8; dense values stay
/// raw float32, which keeps the features bit-identical to what was served.
/// </summary>
internal abstract record LogRecord
{
    const byte KindExample = 1, KindMarker = 2, KindBatch = 3, Format = 1, BatchFormat = 2, FlagBrotli = 1;
    const byte DensePlanes = 0, DenseLog1pCounts = 1;
    const int MaxString = 4096, MaxCount = 1 << 20, MaxBody = 64 << 20;

    /// <summary>Brotli quality of compressed batches: 5 is the knee for these bodies (higher qualities cost several
    /// times the CPU for a few percent).</summary>
    public const int BrotliQuality = 5;

    /// <summary>Encodes <paramref name="record"/>. A batch is Brotli-compressed when <paramref name="compress"/> and
    /// that makes it smaller (the flag byte says which); other kinds ignore it.</summary>
    public static byte[] Encode(LogRecord record, bool compress = false)
    {
        if (record is ExampleBatch batch) return EncodeBatch(batch, compress);
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
        byte highest = kind == KindBatch ? BatchFormat : Format;
        if (format < 1 || format > highest) throw new InvalidDataException($"log record format {format}, this engine reads 1..{highest}");
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
            case KindBatch:
                return DecodeBatch(ref r, bytes, format);
            default:
                throw new InvalidDataException($"log record kind {kind}");
        }
        if (!r.AtEnd) throw new InvalidDataException("bytes after the end of a log record");
        return result;
    }

    static byte[] EncodeBatch(ExampleBatch batch, bool compress)
    {
        var examples = batch.Examples;
        int n = examples.Count;
        if (n == 0) throw new ArgumentException("an example batch needs at least one example", nameof(batch));
        var first = examples[0];
        int denseCount = first.Dense.Length, tables = first.Bags.Length;
        foreach (var e in examples)
        {
            if (e.Replica != first.Replica || e.BaseFingerprint != first.BaseFingerprint || e.Dense.Length != denseCount || e.Bags.Length != tables)
                throw new ArgumentException($"request {e.RequestId}: a batch holds examples of one replica, one base and one feature shape", nameof(batch));
            if (!(e.Label == 0f || e.Label == 1f)) throw new ArgumentOutOfRangeException(nameof(batch), e.Label, $"request {e.RequestId}: label must be 0 or 1");
        }
        var w = new ArrayBufferWriter();
        w.VarInt((ulong)n);
        w.String(first.BaseFingerprint);
        w.String(first.Replica);
        w.VarInt((ulong)denseCount);
        w.VarInt((ulong)tables);
        long prev = 0;
        for (int i = 0; i < n; i++) { long v = examples[i].RequestId; w.VarInt(ZigZag(unchecked(v - prev))); prev = v; }
        prev = 0;
        for (int i = 0; i < n; i++) { long v = examples[i].EventTime; w.VarInt(ZigZag(unchecked(v - prev))); prev = v; }
        for (int i = 0; i < n; i += 8)
        {
            byte bits = 0;
            for (int j = 0; j < 8 && i + j < n; j++) if (examples[i + j].Label == 1f) bits |= (byte)(1 << j);
            w.Byte(bits);
        }
        for (int f = 0; f < denseCount; f++)
        {
            // A column whose every value is log1p of an integer count (Criteo's integer features as DLRM feeds them)
            // travels as the counts; any other column as its four byte planes.
            bool counts = true;
            for (int i = 0; i < n && counts; i++) counts = Log1pCount.TryEncode(examples[i].Dense[f], out _);
            w.Byte(counts ? DenseLog1pCounts : DensePlanes);
            if (counts)
                for (int i = 0; i < n; i++) { Log1pCount.TryEncode(examples[i].Dense[f], out uint count); w.VarInt(count); }
            else
                for (int plane = 0; plane < 4; plane++)
                    for (int i = 0; i < n; i++) w.Byte((byte)(BitConverter.SingleToUInt32Bits(examples[i].Dense[f]) >> (8 * plane)));
        }
        var distinct = new List<long>();
        var index = new Dictionary<long, int>();
        for (int t = 0; t < tables; t++)
        {
            distinct.Clear();
            index.Clear();
            foreach (var e in examples)
            {
                w.VarInt((ulong)e.Bags[t].Length);
                foreach (long id in e.Bags[t])
                {
                    if (id < 0) throw new ArgumentOutOfRangeException(nameof(batch), id, $"request {e.RequestId}: negative id");
                    if (index.TryAdd(id, 0)) distinct.Add(id);
                }
            }
            distinct.Sort();
            for (int k = 0; k < distinct.Count; k++) index[distinct[k]] = k;
            w.VarInt((ulong)distinct.Count);
            long last = 0;
            foreach (long id in distinct) { w.VarInt((ulong)(id - last)); last = id; }
            foreach (var e in examples)
                foreach (long id in e.Bags[t]) w.VarInt((ulong)index[id]);
        }
        var body = w.Span;
        if (compress)
        {
            var packed = new byte[BrotliEncoder.GetMaxCompressedLength(body.Length)];
            if (BrotliEncoder.TryCompress(body, packed, out int written, BrotliQuality, 22) && written + 6 < body.Length)
            {
                var head = new ArrayBufferWriter();
                head.Byte(KindBatch); head.Byte(BatchFormat); head.Byte(FlagBrotli);
                head.VarInt((ulong)body.Length);
                var result = new byte[head.Span.Length + written];
                head.Span.CopyTo(result);
                packed.AsSpan(0, written).CopyTo(result.AsSpan(head.Span.Length));
                return result;
            }
        }
        var plain = new byte[3 + body.Length];
        plain[0] = KindBatch; plain[1] = BatchFormat; plain[2] = 0;
        body.CopyTo(plain.AsSpan(3));
        return plain;
    }

    static ExampleBatch DecodeBatch(ref Reader outer, ReadOnlySpan<byte> bytes, byte format)
    {
        byte flags = outer.Byte();
        if ((flags & ~FlagBrotli) != 0) throw new InvalidDataException($"example batch flags {flags}");
        byte[]? inflated = null;
        if ((flags & FlagBrotli) != 0)
        {
            ulong length = outer.VarInt();
            if (length > MaxBody) throw new InvalidDataException($"example batch body of {length} bytes");
            inflated = new byte[length];
            var packed = bytes[outer.Position..];
            using var decoder = new BrotliDecoder();
            var status = decoder.Decompress(packed, inflated, out int consumed, out int written);
            if (status != System.Buffers.OperationStatus.Done || written != (int)length || consumed != packed.Length)
                throw new InvalidDataException("example batch: damaged compressed body");
        }
        var r = inflated is null ? new Reader(bytes[outer.Position..]) : new Reader(inflated);
        int n = r.Count();
        if (n == 0) throw new InvalidDataException("an example batch of 0 examples");
        string fingerprint = r.String(), replica = r.String();
        int denseCount = r.Count(), tables = r.Count();
        var requestIds = new long[n];
        long prev = 0;
        for (int i = 0; i < n; i++) requestIds[i] = prev = unchecked(prev + UnZigZag(r.VarInt()));
        var times = new long[n];
        prev = 0;
        for (int i = 0; i < n; i++) times[i] = prev = unchecked(prev + UnZigZag(r.VarInt()));
        var labels = r.Bytes((n + 7) / 8);
        if (n % 8 != 0 && labels[^1] >> (n % 8) != 0) throw new InvalidDataException("example batch: label bits beyond the last example");
        var dense = new float[n][];
        for (int i = 0; i < n; i++) dense[i] = new float[denseCount];
        for (int f = 0; f < denseCount; f++)
        {
            byte mode = format >= 2 ? r.Byte() : DensePlanes;
            if (mode == DenseLog1pCounts)
            {
                for (int i = 0; i < n; i++)
                {
                    ulong count = r.VarInt();
                    if (count > uint.MaxValue) throw new InvalidDataException($"example batch: dense count {count}");
                    dense[i][f] = Log1pCount.Decode((uint)count);
                }
                continue;
            }
            if (mode != DensePlanes) throw new InvalidDataException($"example batch: dense column mode {mode}");
            var planes = r.Bytes(4 * n);
            for (int i = 0; i < n; i++)
                dense[i][f] = BitConverter.UInt32BitsToSingle(planes[i] | (uint)planes[n + i] << 8 | (uint)planes[2 * n + i] << 16 | (uint)planes[3 * n + i] << 24);
        }
        var bags = new long[n][][];
        for (int i = 0; i < n; i++) bags[i] = new long[tables][];
        for (int t = 0; t < tables; t++)
        {
            long total = 0;
            for (int i = 0; i < n; i++) { int len = r.Count(); total += len; if (total > MaxCount) throw new InvalidDataException("example batch: too many ids"); bags[i][t] = new long[len]; }
            int k = r.Count();
            if (k > total) throw new InvalidDataException($"example batch: {k} distinct ids for {total} ids");
            var distinct = new long[k];
            ulong last = 0;
            for (int j = 0; j < k; j++)
            {
                ulong gap = r.VarInt();
                if (j > 0 && gap == 0) throw new InvalidDataException("example batch: distinct ids not ascending");
                last += gap;
                if (last > long.MaxValue || last < gap) throw new InvalidDataException("example batch: id out of range");
                distinct[j] = (long)last;
            }
            for (int i = 0; i < n; i++)
            {
                var bag = bags[i][t];
                for (int j = 0; j < bag.Length; j++)
                {
                    ulong at = r.VarInt();
                    if (at >= (ulong)k) throw new InvalidDataException($"example batch: id index {at} of {k}");
                    bag[j] = distinct[at];
                }
            }
        }
        if (!r.AtEnd) throw new InvalidDataException("bytes after the end of an example batch");
        var examples = new TrainingExample[n];
        for (int i = 0; i < n; i++)
            examples[i] = new TrainingExample(requestIds[i], times[i], (labels[i / 8] >> (i % 8)) & 1, fingerprint, replica, dense[i], bags[i]);
        return new ExampleBatch(examples);
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
        public ReadOnlySpan<byte> Span => _buf.AsSpan(0, _n);
    }

    ref struct Reader(ReadOnlySpan<byte> bytes)
    {
        readonly ReadOnlySpan<byte> _b = bytes;
        int _p;

        public readonly bool AtEnd => _p == _b.Length;
        public readonly int Position => _p;
        public ReadOnlySpan<byte> Bytes(int n)
        {
            if (n < 0 || n > _b.Length - _p) throw new InvalidDataException("truncated log record");
            var s = _b.Slice(_p, n);
            _p += n;
            return s;
        }
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

/// <summary>
/// Dense values that are log1p of an integer count — how DLRM feeds Criteo's 13 integer features — travel as the
/// count (a varint, 1–2 bytes for most counts) instead of 4 float bytes, and decode to the very same float bits.
/// The decode, <c>(float)Math.Log(1 + count)</c>, goes through the runtime's double <c>log</c>; an encoder accepts a
/// value only if it decodes to the same bits here and the double result lies more than 4 double ULPs away from the
/// point where float rounding would flip. So on any machine whose <c>log</c> is within 1 ULP of exact (glibc, musl,
/// the Windows CRT), every replica decodes the same float; values near a rounding flip keep the float column.
/// </summary>
internal static class Log1pCount
{
    public static float Decode(uint count) => (float)Math.Log(1 + (double)count);

    public static bool TryEncode(float value, out uint count)
    {
        count = 0;
        if (!(value >= 0f) || value > 22f) return false;   // NaN, negatives, -0 handled below; e^22 > 2^31
        if (BitConverter.SingleToUInt32Bits(value) == 0) return true;   // +0 = log1p(0)
        double c = Math.Round(Math.Exp(value) - 1);
        if (c < 1 || c > uint.MaxValue) return false;
        count = (uint)c;
        double d = Math.Log(1 + c);
        float f = (float)d;
        if (BitConverter.SingleToUInt32Bits(f) != BitConverter.SingleToUInt32Bits(value)) return false;
        // The rounding flips at the midpoints to f's neighbours (exact in double); keep clear of them.
        double below = ((double)f + MathF.BitDecrement(f)) / 2, above = ((double)f + MathF.BitIncrement(f)) / 2;
        double margin = 4 * (Math.BitIncrement(d) - d);
        return d - below > margin && above - d > margin;
    }
}
