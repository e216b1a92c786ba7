using System.Buffers.Text;
using System.IO.Hashing;
using System.Text;

namespace LiveDlrm.Data;

/// <summary>Maps one sparse token (raw UTF-8 bytes as they appear in the file) to a row of its table, as the
/// column's <see cref="SparseMapping"/> says. Not thread-safe (the vocabulary lookup reuses a char buffer).</summary>
internal sealed class SparseTokenMapper
{
    readonly SparseColumn _column;
    readonly ulong _rows;
    readonly long _seed;
    readonly Dictionary<string, long>? _vocabulary;
    readonly Dictionary<string, long>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    char[] _chars = new char[64];

    /// <summary>A vocabulary is held in memory as a dictionary; a file larger than this is refused, not read.</summary>
    public const long MaxVocabularyBytes = 256L << 20;

    public SparseColumn Column => _column;
    /// <summary>Number of vocabulary entries (the out-of-vocabulary row is this value); 0 for other mappings.</summary>
    public long VocabularySize => _vocabulary?.Count ?? 0;

    public SparseTokenMapper(SparseColumn column, string field = "sparse")
    {
        _column = column ?? throw new ArgumentNullException(nameof(column));
        _rows = (ulong)column.Rows;
        _seed = unchecked((long)column.HashSeed);
        if (column.Mapping == SparseMapping.Vocabulary)
        {
            string path = column.VocabularyFile!;
            var stat = Interop.FileStatusInterop.Stat(path);
            if (stat.Kind == Interop.FileKind.Missing) throw new SchemaException($"{field}.vocabulary: file '{path}' does not exist");
            if (stat.Kind != Interop.FileKind.Regular) throw new SchemaException($"{field}.vocabulary: '{path}' is not a regular file");
            if (stat.Size > MaxVocabularyBytes) throw new SchemaException($"{field}.vocabulary: '{path}' is {stat.Size} bytes, more than the {MaxVocabularyBytes} a vocabulary may have");
            _vocabulary = new Dictionary<string, long>(StringComparer.Ordinal);
            long line = 0;
            string text;
            try
            {
                using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
                var bytes = new byte[Math.Min(stat.Size, MaxVocabularyBytes) + 1];
                int n = f.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
                if (n > MaxVocabularyBytes) throw new SchemaException($"{field}.vocabulary: '{path}' grew past {MaxVocabularyBytes} bytes while read");
                text = new UTF8Encoding(false, false).GetString(bytes, 0, n).TrimStart('\uFEFF');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new SchemaException($"{field}.vocabulary: cannot read '{path}' ({e.Message})");
            }
            var lines = text.Split('\n');
            if (lines.Length > 0 && lines[^1].Length == 0) lines = lines[..^1];
            foreach (string raw in lines)
            {
                line++;
                string token = raw.TrimEnd('\r');
                if (token.Length == 0) throw new SchemaException($"{field}.vocabulary: {path} line {line} is empty");
                if (!_vocabulary.TryAdd(token, _vocabulary.Count))
                    throw new SchemaException($"{field}.vocabulary: {path} line {line}: token '{EscapedText.Of(token)}' appears twice");
            }
            if (column.Rows <= _vocabulary.Count)
                throw new SchemaException($"{field}.rows: {column.Rows} rows cannot hold the {_vocabulary.Count} vocabulary entries of {path} plus the out-of-vocabulary row (need >= {_vocabulary.Count + 1})");
            _lookup = _vocabulary.GetAlternateLookup<ReadOnlySpan<char>>();
        }
    }

    /// <summary>The row of <paramref name="token"/>, or false with a reason (integer mapping only: not an integer,
    /// or outside [0, rows)).</summary>
    public bool TryMap(ReadOnlySpan<byte> token, out long row, out string? error)
    {
        error = null;
        switch (_column.Mapping)
        {
            case SparseMapping.Hash:
                row = (long)(XxHash64.HashToUInt64(token, _seed) % _rows);
                return true;
            case SparseMapping.Integer:
                if (!Utf8Parser.TryParse(token, out long v, out int consumed) || consumed != token.Length)
                {
                    row = 0; error = $"'{EscapedText.Of(token)}' is not an integer row"; return false;
                }
                if ((ulong)v >= _rows)
                {
                    row = 0; error = $"row {v} is outside [0, {_column.Rows})"; return false;
                }
                row = v;
                return true;
            default:
                int max = Encoding.UTF8.GetMaxCharCount(token.Length);
                if (_chars.Length < max) _chars = new char[Math.Max(max, _chars.Length * 2)];
                int n = Encoding.UTF8.GetChars(token, _chars);
                row = _lookup.TryGetValue(_chars.AsSpan(0, n), out long r) ? r : _vocabulary!.Count;
                return true;
        }
    }

    /// <summary>The documented hash mapping, for callers that want to precompute rows: XxHash64 of the token's UTF-8
    /// bytes with the column seed, modulo rows.</summary>
    public static long HashRow(ReadOnlySpan<byte> token, ulong seed, long rows) =>
        (long)(XxHash64.HashToUInt64(token, unchecked((long)seed)) % (ulong)rows);
}
