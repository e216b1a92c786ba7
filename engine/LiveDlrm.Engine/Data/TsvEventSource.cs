using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Data;

internal enum BadLinePolicy
{
    /// <summary>Count the line, remember its number and reason (the first <see cref="TsvReaderOptions.MaxRecordedBadLines"/>), go on.</summary>
    Skip,
    /// <summary>Throw a <see cref="DataFormatException"/> naming file, line and reason.</summary>
    Fail,
}

internal enum CacheMode
{
    /// <summary>No cache.</summary>
    Off,
    /// <summary>Read the cache when it is valid for this source and schema; otherwise parse and build it during the
    /// first complete pass (published atomically when the pass ends).</summary>
    Auto,
    /// <summary>Ignore an existing cache and rebuild it during the first complete pass.</summary>
    Rebuild,
}

internal sealed record TsvReaderOptions
{
    public BadLinePolicy OnBadLine { get; init; } = BadLinePolicy.Skip;
    public int MaxRecordedBadLines { get; init; } = 20;
    /// <summary>A line longer than this is a bad line's worth of error, not a reason to buffer without bound.</summary>
    public int MaxLineBytes { get; init; } = 16 << 20;
    public int ReadBufferBytes { get; init; } = 1 << 20;
    public CacheMode Cache { get; init; } = CacheMode.Off;
    /// <summary>Cache file; default <c>SOURCE.ldcache</c> beside the source.</summary>
    public string? CachePath { get; init; }
    /// <summary>Hears one-line notices: bad lines skipped, cache used / stale / built.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;
}

internal sealed record BadLine(long LineNumber, string Reason);

/// <summary>What a pass over a source has seen so far. Line numbers are 1-based file lines (a header counts).</summary>
internal sealed class DataReadReport
{
    readonly List<BadLine> _bad = new();
    public long Lines { get; internal set; }
    public long Events { get; internal set; }
    public long BadLines { get; internal set; }
    public long Bytes { get; internal set; }
    public bool FromCache { get; internal set; }
    /// <summary>The first bad lines with their reasons (when read from a cache: only the count is known).</summary>
    public IReadOnlyList<BadLine> FirstBadLines => _bad;

    internal void AddBad(BadLine line, int max)
    {
        BadLines++;
        if (_bad.Count < max) _bad.Add(line);
    }

    internal void Reset() { _bad.Clear(); Lines = Events = BadLines = Bytes = 0; FromCache = false; }

    public override string ToString() =>
        $"{Events} events from {Lines} lines, {BadLines} bad{(FromCache ? " (from cache)" : "")}" +
        (_bad.Count > 0 ? "; first: " + string.Join("; ", _bad.Take(3).Select(b => $"line {b.LineNumber}: {b.Reason}")) : "");
}

/// <summary>
/// Streams a delimited text file (TSV by default) as <see cref="EventBatch"/>es under a <see cref="StreamSchema"/>:
/// one buffer of <see cref="TsvReaderOptions.ReadBufferBytes"/> (grown only for a longer line), never the whole
/// file. LF and CRLF line ends; a final line without a terminator is read. With a cache (<see cref="CacheMode"/>)
/// the second pass reads the binary columnar cache instead of parsing.
/// </summary>
internal sealed class TsvEventSource : IEventSource
{
    readonly string _path;
    readonly TsvReaderOptions _options;
    readonly TsvLineParser _parser;
    string? _cachePath;
    readonly EventCacheKey _cacheKey;
    Stream? _stream;
    byte[] _buffer;
    int _start, _end;
    bool _eof;
    long _lineNumber;   // 1-based number of the last line taken from the buffer
    long _ordinal;      // 0-based data-line index
    EventCacheWriter? _cacheWriter;
    EventCacheReader? _cacheReader;
    bool _forceRebuild;

    static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    public StreamSchema Schema { get; }
    public string Path => _path;
    public DataReadReport Report { get; } = new();

    public TsvEventSource(string path, StreamSchema schema, TsvReaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(schema);
        _path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(_path)) throw new FileNotFoundException($"data file '{path}' does not exist", _path);
        Schema = schema;
        _options = options ?? new TsvReaderOptions();
        if (_options.ReadBufferBytes < 4096) throw new ArgumentOutOfRangeException(nameof(options), "ReadBufferBytes must be >= 4096");
        _parser = new TsvLineParser(schema);
        _buffer = new byte[_options.ReadBufferBytes];
        if (_options.Cache != CacheMode.Off)
        {
            _cachePath = System.IO.Path.GetFullPath(_options.CachePath ?? _path + ".ldcache");
            _cacheKey = EventCacheKey.For(schema, _path);
            _forceRebuild = _options.Cache == CacheMode.Rebuild;
        }
        Open();
    }

    void Open()
    {
        Report.Reset();
        _start = _end = 0; _eof = false; _lineNumber = 0; _ordinal = 0;
        if (_cachePath is not null)
        {
            string? problem = _forceRebuild ? "rebuild requested" : EventCache.CheckUsable(_cachePath, _cacheKey, Schema.Layout);
            if (problem is null)
            {
                var reader = new EventCacheReader(_cachePath, Schema.Layout, _cacheKey);
                if (_options.OnBadLine == BadLinePolicy.Fail && reader.BadLines > 0)
                {
                    problem = $"it skipped {reader.BadLines} bad lines when built, and --bad-lines fail must report the first";
                    reader.Dispose();
                }
                else _cacheReader = reader;
            }
            if (problem is null && _cacheReader is not null)
            {
                Report.FromCache = true;
                Report.Lines = _cacheReader.Lines;
                Report.BadLines = _cacheReader.BadLines;
                _options.Logger.LogInformation("reading {Cache} ({Events} events, {BadLines} bad lines skipped when built)", _cachePath, _cacheReader.Events, _cacheReader.BadLines);
                return;
            }
            if (problem != "no cache file") _options.Logger.LogInformation("cache {Cache} not used: {Problem}; rebuilding it during this pass", _cachePath, problem);
            string folder = System.IO.Path.GetDirectoryName(_cachePath)!;
            try
            {
                if (!Interop.FileRenameInterop.IsWritable(folder)) throw new UnauthorizedAccessException($"folder {folder} is not writable");
                _cacheWriter = new EventCacheWriter(_cachePath, Schema.Layout, _cacheKey, _options.OnBadLine);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A cache is an optimisation: without a writable folder the source is read as it is, every pass.
                _options.Logger.LogWarning("cannot write cache {Cache} ({Reason}); reading without a cache", _cachePath, e.Message);
                _cachePath = null;
            }
            _forceRebuild = false;
        }
        _stream = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        if (Schema.Header) CheckHeader();
    }

    void CheckHeader()
    {
        if (!NextLine(out var line)) throw new DataFormatException($"{_path}: empty file, expected a header line");
        string text = Encoding.UTF8.GetString(line);
        string expected = string.Join(Schema.Delimiter, Schema.Columns);
        if (text != expected)
            throw new DataFormatException($"{_path} line 1: header '{EscapedText.Of(text)}' does not match the schema's columns '{EscapedText.Of(expected)}'");
    }

    public int Read(EventBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.DenseCount != Schema.Layout.DenseCount || batch.SparseCount != Schema.Layout.SparseCount)
            throw new ArgumentException("batch layout does not match the schema", nameof(batch));
        if (_cacheReader is not null)
        {
            int n = _cacheReader.Read(batch);
            Report.Events += n;
            Report.Bytes = Report.Events == _cacheReader.Events ? _cacheReader.FileLength : Report.Bytes;
            return n;
        }
        batch.Clear();
        if (_stream is null) return 0;
        while (!batch.IsFull && NextLine(out var line))
        {
            string? error = _parser.TryAppend(line, _ordinal, batch);
            _ordinal++;
            Report.Lines++;
            if (error is null) { Report.Events++; continue; }
            if (_options.OnBadLine == BadLinePolicy.Fail)
                throw new DataFormatException($"{_path} line {_lineNumber}: {error}");
            Report.AddBad(new BadLine(_lineNumber, error), _options.MaxRecordedBadLines);
            if (Report.BadLines <= _options.MaxRecordedBadLines)
                _options.Logger.LogWarning("{Path} line {Line}: skipped: {Error}", _path, _lineNumber, error);
        }
        _cacheWriter?.Append(batch);
        if (batch.Count == 0) FinishPass();
        return batch.Count;
    }

    void FinishPass()
    {
        if (_cacheWriter is not null)
        {
            _cacheWriter.Commit(Report.Lines, Report.BadLines);
            _cacheWriter = null;
            _options.Logger.LogInformation("wrote cache {Cache}", _cachePath);
        }
        if (Report.BadLines > 0) _options.Logger.LogWarning("{Path}: {Report}", _path, Report);
        _stream?.Dispose();
        _stream = null;
    }

    /// <summary>The next line without its terminator (LF or CRLF); false at end of file.</summary>
    bool NextLine(out ReadOnlySpan<byte> line)
    {
        while (true)
        {
            int nl = _buffer.AsSpan(_start, _end - _start).IndexOf((byte)'\n');
            if (nl >= 0)
            {
                line = Take(_start, nl, consumed: nl + 1);
                return true;
            }
            if (_eof)
            {
                if (_start == _end) { line = default; return false; }
                line = Take(_start, _end - _start, consumed: _end - _start);
                return true;
            }
            Fill();
        }
    }

    ReadOnlySpan<byte> Take(int start, int length, int consumed)
    {
        _start += consumed;
        _lineNumber++;
        Report.Bytes += consumed;
        var line = _buffer.AsSpan(start, length);
        // A UTF-8 byte order mark (as some editors write) belongs to no column: dropped, so line 1 is read.
        if (_lineNumber == 1 && line.StartsWith(Utf8Bom)) line = line[Utf8Bom.Length..];
        return line.Length > 0 && line[^1] == (byte)'\r' ? line[..^1] : line;
    }

    void Fill()
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            if (_buffer.Length >= _options.MaxLineBytes)
                throw new DataFormatException($"{_path} line {_lineNumber + 1}: longer than {_options.MaxLineBytes} bytes (no line break found)");
            Array.Resize(ref _buffer, Math.Min(_options.MaxLineBytes, _buffer.Length * 2));
        }
        int n = _stream!.Read(_buffer, _end, _buffer.Length - _end);
        if (n == 0) _eof = true;
        _end += n;
    }

    public void Reset()
    {
        Close();
        Open();
    }

    void Close()
    {
        _stream?.Dispose(); _stream = null;
        _cacheReader?.Dispose(); _cacheReader = null;
        _cacheWriter?.Dispose(); _cacheWriter = null; // an unfinished pass publishes nothing
    }

    public void Dispose() => Close();
}
