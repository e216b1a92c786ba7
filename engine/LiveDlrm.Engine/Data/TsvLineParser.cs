using System.Globalization;

namespace LiveDlrm.Data;

/// <summary>Parses one delimited line into an event appended to a batch, as a <see cref="StreamSchema"/> says. A
/// line is accepted whole or not at all: on any error the partly appended event is removed and the reason
/// returned.</summary>
internal sealed class TsvLineParser
{
    enum Role : byte { Ignore, Label, Timestamp, TrueProbability, Dense, Sparse }

    readonly StreamSchema _schema;
    readonly Role[] _roles;
    readonly int[] _slot;            // dense or sparse index of each column
    readonly DenseTransform[] _transforms;
    readonly SparseTokenMapper[] _mappers;
    readonly byte[] _separators;     // per sparse feature; 0 = single-valued
    readonly byte _delimiter;
    readonly double _secondsPerEvent;

    public TsvLineParser(StreamSchema schema)
    {
        _schema = schema;
        int n = schema.Columns.Count;
        _roles = new Role[n];
        _slot = new int[n];
        _roles[schema.ColumnIndex(schema.Label)] = Role.Label;
        if (schema.Timestamp is not null) _roles[schema.ColumnIndex(schema.Timestamp)] = Role.Timestamp;
        if (schema.TrueProbability is not null) _roles[schema.ColumnIndex(schema.TrueProbability)] = Role.TrueProbability;
        _transforms = new DenseTransform[schema.Dense.Count];
        for (int i = 0; i < schema.Dense.Count; i++)
        {
            int c = schema.ColumnIndex(schema.Dense[i].Name);
            _roles[c] = Role.Dense; _slot[c] = i; _transforms[i] = schema.Dense[i].Transform;
        }
        _mappers = new SparseTokenMapper[schema.Sparse.Count];
        _separators = new byte[schema.Sparse.Count];
        for (int i = 0; i < schema.Sparse.Count; i++)
        {
            var s = schema.Sparse[i];
            int c = schema.ColumnIndex(s.Name);
            _roles[c] = Role.Sparse; _slot[c] = i;
            _mappers[i] = new SparseTokenMapper(s, $"sparse[{i}]");
            if (s.Separator is not null)
            {
                if (s.Separator[0] > 127) throw new SchemaException($"sparse[{i}].separator: must be an ASCII character");
                _separators[i] = (byte)s.Separator[0];
            }
        }
        if (schema.Delimiter > 127) throw new SchemaException("delimiter: must be an ASCII character");
        _delimiter = (byte)schema.Delimiter;
        _secondsPerEvent = 1.0 / schema.EventsPerSecond;
    }

    /// <summary>Appends the event of <paramref name="line"/> (no line terminator) to <paramref name="batch"/>.
    /// <paramref name="ordinal"/> is the 0-based data-line number: the request id, and the event time when the
    /// schema has no timestamp. Returns null on success, else why the line is bad.</summary>
    public string? TryAppend(ReadOnlySpan<byte> line, long ordinal, EventBatch batch)
    {
        long time = _schema.Timestamp is null ? _schema.StartTime + (long)Math.Floor(ordinal * _secondsPerEvent) : 0;
        int row = batch.AddEvent(0f, time, ordinal);
        string? error = ParseFields(line, row, batch);
        if (error is not null) batch.RemoveLast();
        return error;
    }

    string? ParseFields(ReadOnlySpan<byte> line, int row, EventBatch batch)
    {
        int columns = _roles.Length;
        Span<float> dense = batch.DenseRowForWrite(row);
        int column = 0;
        while (true)
        {
            int cut = line.IndexOf(_delimiter);
            ReadOnlySpan<byte> field = cut < 0 ? line : line[..cut];
            if (column >= columns)
                return $"expected {columns} columns, found more";
            string? error = _roles[column] switch
            {
                Role.Label => ParseLabel(field, row, batch),
                Role.Timestamp => ParseTimestamp(field, row, batch),
                Role.TrueProbability => ParseProbability(field, row, batch),
                Role.Dense => ParseDense(field, _slot[column], dense),
                Role.Sparse => ParseSparse(field, _slot[column], batch),
                _ => null,
            };
            if (error is not null) return $"column {column + 1} ({_schema.Columns[column]}): {error}";
            column++;
            if (cut < 0) break;
            line = line[(cut + 1)..];
        }
        return column == columns ? null : $"expected {columns} columns, found {column}";
    }

    static string? ParseLabel(ReadOnlySpan<byte> field, int row, EventBatch batch)
    {
        if (field.Length == 1 && (field[0] == (byte)'0' || field[0] == (byte)'1'))
        {
            batch.SetLabel(row, field[0] - '0');
            return null;
        }
        if (field.Length == 0) return "empty label";
        if (TryParseNumber(field, out double v) && (v == 0 || v == 1)) { batch.SetLabel(row, (float)v); return null; }
        return $"label '{Show(field)}' is not 0 or 1";
    }

    string? ParseTimestamp(ReadOnlySpan<byte> field, int row, EventBatch batch)
    {
        if (field.Length == 0) return "empty timestamp";
        if (!TryParseInteger(field, out long v)) return $"timestamp '{Show(field)}' is not an integer (unix time in {_schema.TimestampUnit})";
        batch.SetTimestamp(row, Math.DivRem(v, _schema.TimestampUnitsPerSecond) is var (q, r) && r < 0 ? q - 1 : q);
        return null;
    }

    static string? ParseProbability(ReadOnlySpan<byte> field, int row, EventBatch batch)
    {
        if (!TryParseNumber(field, out double v) || !(v >= 0 && v <= 1)) return $"probability '{Show(field)}' is not a number in [0, 1]";
        batch.TrueProbabilityArray[row] = (float)v;
        return null;
    }

    string? ParseDense(ReadOnlySpan<byte> field, int slot, Span<float> dense)
    {
        if (field.Length == 0) return null; // missing: stays 0 (AddEvent zeroed the row)
        if (!TryParseNumber(field, out double v)) return $"'{Show(field)}' is not a number";
        dense[slot] = _transforms[slot] == DenseTransform.Log1p ? (float)Math.Log(1 + Math.Max(v, 0)) : (float)v;
        return null;
    }

    string? ParseSparse(ReadOnlySpan<byte> field, int slot, EventBatch batch)
    {
        if (field.Length == 0) return null; // missing: empty bag
        var mapper = _mappers[slot];
        byte separator = _separators[slot];
        if (separator == 0)
        {
            if (!mapper.TryMap(field, out long r, out string? e)) return e;
            batch.AddIndex(slot, r);
            return null;
        }
        while (true)
        {
            int cut = field.IndexOf(separator);
            ReadOnlySpan<byte> token = cut < 0 ? field : field[..cut];
            // Empty tokens ("a,,b", a trailing separator) carry no id: skipped, documented in docs/data.md.
            if (token.Length > 0)
            {
                if (!mapper.TryMap(token, out long r, out string? e)) return e;
                batch.AddIndex(slot, r);
            }
            if (cut < 0) return null;
            field = field[(cut + 1)..];
        }
    }

    /// <summary>Integers (the common case in Criteo-like data) without the general parser; anything else falls
    /// back to it. Rejects NaN and infinities.</summary>
    internal static bool TryParseNumber(ReadOnlySpan<byte> s, out double value)
    {
        if (s.Length is > 0 and <= 18 && TryParseInteger(s, out long l)) { value = l; return true; }
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && double.IsFinite(value);
    }

    internal static bool TryParseInteger(ReadOnlySpan<byte> s, out long value)
    {
        value = 0;
        int i = 0;
        bool negative = false;
        if (s.Length > 0 && (s[0] == (byte)'-' || s[0] == (byte)'+')) { negative = s[0] == (byte)'-'; i = 1; }
        if (i == s.Length || s.Length - i > 18) return false;
        long v = 0;
        for (; i < s.Length; i++)
        {
            uint d = (uint)(s[i] - '0');
            if (d > 9) return false;
            v = v * 10 + d;
        }
        value = negative ? -v : v;
        return true;
    }

    static string Show(ReadOnlySpan<byte> field) => EscapedText.Of(field);
}
