using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.Data;

/// <summary>
/// Where a command's events come from: <c>synthetic</c> (the embedded drifting stream), <c>visits</c> (the
/// id-only visit world, <see cref="VisitEventSource"/>) or a delimited file with a schema. The CLI fills it from <c>--data synthetic|PATH --schema PATH --events N --seed S --drift X</c> (see
/// LiveDlrm.Cli's DataSourceArgs).
/// </summary>
internal sealed record DataSourceOptions
{
    public const string Synthetic = "synthetic";
    public const long DefaultSyntheticEvents = 1_000_000;
    public const string Visits = "visits";
    public const int DefaultVisitEvents = 100_000;

    /// <summary><c>synthetic</c> or a file path.</summary>
    public string Data { get; init; } = Synthetic;
    /// <summary>Schema JSON for a file; null = <c>FILE.schema.json</c> beside it (as <c>synth</c> writes), else Criteo.</summary>
    public string? SchemaPath { get; init; }
    /// <summary>Synthetic: the number of events (default <see cref="DefaultSyntheticEvents"/>). File: at most this many (null = all).</summary>
    public long? Events { get; init; }
    public ulong Seed { get; init; } = 1;
    public double Drift { get; init; } = 1.0;
    /// <summary>Synthetic event-time rate; null = the generator's default.</summary>
    public double? EventsPerSecond { get; init; }
    public BadLinePolicy OnBadLine { get; init; } = BadLinePolicy.Skip;
    public CacheMode Cache { get; init; } = CacheMode.Off;

    public bool IsSynthetic => Data == Synthetic;
    public bool IsVisits => Data == Visits;

    public SyntheticStreamConfig SyntheticConfig()
    {
        var c = new SyntheticStreamConfig { Seed = Seed, Drift = Drift };
        return EventsPerSecond is double eps ? c with { EventsPerSecond = eps } : c;
    }

    /// <summary>The schema file this source would use, and why (for a log line); null path for synthetic/Criteo default.</summary>
    public (string? Path, string Description) ResolveSchema()
    {
        if (IsSynthetic) return (null, "synthetic stream schema");
        if (IsVisits) return (null, "visit world schema (id-only)");
        if (SchemaPath is not null) return (SchemaPath, $"schema {SchemaPath}");
        string beside = Path.ChangeExtension(Data, ".schema.json");
        if (File.Exists(beside)) return (beside, $"schema {beside} (beside the data)");
        return (null, "Criteo default schema (no --schema and no FILE.schema.json)");
    }

    /// <summary>The files this source reads (data file, schema, vocabularies): what a command's outputs must not be.</summary>
    public IReadOnlyList<string> InputPaths()
    {
        if (IsSynthetic) return [];
        var paths = new List<string> { Data };
        var (schema, _) = ResolveSchema();
        if (schema is null) return paths;
        paths.Add(schema);
        try { paths.AddRange(StreamSchema.Load(schema).Sparse.Select(s => s.VocabularyFile).OfType<string>()); }
        catch (SchemaException) { /* reported when the source is opened */ }
        return paths;
    }

    /// <summary>Opens the source. Throws <see cref="FileNotFoundException"/>/<see cref="SchemaException"/> for a
    /// missing file or bad schema.</summary>
    public IEventSource Open(ILogger? logger = null)
    {
        if (IsSynthetic)
            return new SyntheticEventSource(SyntheticConfig(), Events ?? DefaultSyntheticEvents);
        if (IsVisits)
            return new VisitEventSource(new VisitStreamConfig { Seed = Seed }, checked((int)(Events ?? DefaultVisitEvents)));
        var (path, _) = ResolveSchema();
        var schema = path is null ? StreamSchema.Criteo() : StreamSchema.Load(path);
        IEventSource source = new TsvEventSource(Data, schema, new TsvReaderOptions { OnBadLine = OnBadLine, Cache = Cache, Logger = logger ?? NullLogger.Instance });
        return Events is long n ? new LimitedEventSource(source, n) : source;
    }
}

/// <summary>The first <c>limit</c> events of another source.</summary>
internal sealed class LimitedEventSource(IEventSource inner, long limit) : IEventSource
{
    long _read;

    public StreamSchema Schema => inner.Schema;
    public IEventSource Inner => inner;

    public int Read(EventBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (_read >= limit) { batch.Clear(); return 0; }
        int n = inner.Read(batch);
        if (_read + n > limit)
        {
            // Keep the first events only: drop from the end of the batch.
            int keep = (int)(limit - _read);
            while (batch.Count > keep) batch.RemoveLast();
            n = keep;
        }
        _read += n;
        return n;
    }

    public void Reset() { inner.Reset(); _read = 0; }
    public void Dispose() => inner.Dispose();
}
