using System.Numerics;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Training;

/// <summary>The rows of each table changed since a point (what a delta sync must ship).</summary>
internal sealed class ChangedRows
{
    /// <summary>Per table (model order): changed row numbers, ascending.</summary>
    public IReadOnlyList<long[]> Rows { get; }
    /// <summary>Stored bytes of those rows (rows × the table's row stride), summed over tables.</summary>
    public long Bytes { get; }
    public long RowCount => Rows.Sum(r => (long)r.Length);

    internal ChangedRows(IReadOnlyList<long[]> rows, long bytes) { Rows = rows; Bytes = bytes; }
}

/// <summary>
/// A dirty bitmap per table (1 bit a row: 128 KiB for a million rows) of the rows updated since the last
/// <see cref="TakeChanges"/>. Writers mark rows with <see cref="Mark"/>; one table's bitmap may be marked by one
/// thread at a time (the trainer partitions its updates by table), reads and takes are done between steps.
/// </summary>
internal sealed class ChangeTracker
{
    readonly ulong[][] _bits;
    readonly long[] _counts;
    readonly int[] _strides;

    public ChangeTracker(IReadOnlyList<EmbeddingTable> tables)
    {
        ArgumentNullException.ThrowIfNull(tables);
        _bits = tables.Select(t => new ulong[(t.Rows + 63) / 64]).ToArray();
        _counts = new long[tables.Count];
        _strides = tables.Select(t => t.RowStride).ToArray();
    }

    public int TableCount => _bits.Length;

    /// <summary>Marks <paramref name="row"/> of table <paramref name="table"/> changed; true if it was not yet.</summary>
    public bool Mark(int table, long row)
    {
        ref ulong word = ref _bits[table][row >> 6];
        ulong bit = 1UL << (int)(row & 63);
        if ((word & bit) != 0) return false;
        word |= bit;
        _counts[table]++;
        return true;
    }

    public bool IsChanged(int table, long row) => (_bits[table][row >> 6] & (1UL << (int)(row & 63))) != 0;

    public long ChangedRowCount(int table) => _counts[table];
    public long ChangedRowCount() => _counts.Sum();
    /// <summary>Stored bytes of the changed rows over all tables.</summary>
    public long ChangedBytes()
    {
        long bytes = 0;
        for (int t = 0; t < _counts.Length; t++) bytes += _counts[t] * _strides[t];
        return bytes;
    }

    /// <summary>The changed rows since the last take (or construction), then starts a new interval.</summary>
    public ChangedRows TakeChanges()
    {
        var rows = new long[_bits.Length][];
        long bytes = 0;
        for (int t = 0; t < _bits.Length; t++)
        {
            var list = new long[_counts[t]];
            int k = 0;
            var bits = _bits[t];
            for (int w = 0; w < bits.Length; w++)
            {
                ulong word = bits[w];
                while (word != 0)
                {
                    int b = BitOperations.TrailingZeroCount(word);
                    list[k++] = (long)w * 64 + b;
                    word &= word - 1;
                }
            }
            rows[t] = list;
            bytes += list.LongLength * _strides[t];
            Array.Clear(bits);
            _counts[t] = 0;
        }
        return new ChangedRows(rows, bytes);
    }
}
