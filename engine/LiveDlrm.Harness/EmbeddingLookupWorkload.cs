using LiveDlrm.Embeddings;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>Shape of the proxy inference request: <see cref="Tables"/> sparse features, each a bag of
/// <see cref="Pooling"/> Zipf-distributed ids per sample, <see cref="Batch"/> samples per request.</summary>
internal sealed record LookupWorkloadOptions
{
    public int Tables { get; init; } = 4;
    public long Rows { get; init; } = 500_000;
    public int Dim { get; init; } = 64;
    public int Batch { get; init; } = 128;
    public int Pooling { get; init; } = 32;
    public double ZipfExponent { get; init; } = 1.05;
    public EmbeddingStorage Storage { get; init; } = EmbeddingStorage.Fp32;
    public int Seed { get; init; } = 42;

    internal void Validate()
    {
        if (Tables < 1) throw new ArgumentOutOfRangeException(nameof(Tables), Tables, "at least one table");
        if (Rows < 1) throw new ArgumentOutOfRangeException(nameof(Rows), Rows, "rows must be positive");
        if (Dim < 1) throw new ArgumentOutOfRangeException(nameof(Dim), Dim, "dim must be positive");
        if (Batch < 1) throw new ArgumentOutOfRangeException(nameof(Batch), Batch, "batch must be positive");
        if (Pooling < 1) throw new ArgumentOutOfRangeException(nameof(Pooling), Pooling, "pooling must be positive");
    }
}

/// <summary>The stand-in for DLRM inference until the model's Predict exists: per request, one sum-pooled
/// EmbeddingBag.Forward per table over a batch whose ids come from a Zipf stream, spread over an
/// <see cref="EmbeddingWorkerPool"/> whose workers the plan pins. It is the memory-bound half of DLRM inference,
/// without the MLPs — numbers measured with it are labelled "embedding-lookup-proxy".</summary>
internal sealed class EmbeddingLookupWorkload : IInferenceWorkload
{
    public const string WorkloadName = "embedding-lookup-proxy";

    readonly EmbeddingTable[] _tables;
    readonly long[][] _idPools;
    readonly long[] _offsets;
    readonly float[][] _outputs;
    readonly EmbeddingWorkerPool _pool;
    readonly Random _rng;
    readonly int _lookupsPerTable;
    readonly int[] _lastStarts;

    public LookupWorkloadOptions Options { get; }
    public string Name => WorkloadName;
    public string Description => $"{Options.Tables} tables × {Options.Rows:N0} rows × dim {Options.Dim} {Options.Storage}, batch {Options.Batch}, " +
                                 $"{Options.Pooling} ids/bag (Zipf {Options.ZipfExponent}), {_pool.ThreadCount + 1} thread(s) per request";
    public IReadOnlyList<int> ThreadIds => _pool.ThreadIds;
    public IReadOnlyList<EmbeddingTable> Tables => _tables;

    /// <param name="poolThreads">Dedicated pool workers; the dispatch thread works too.</param>
    /// <param name="onWorkerStart">The plan's pinning hook for pool worker i.</param>
    public EmbeddingLookupWorkload(LookupWorkloadOptions options, int poolThreads, Action<int>? onWorkerStart = null)
    {
        options.Validate();
        Options = options;
        _lookupsPerTable = checked(options.Batch * options.Pooling);
        _tables = new EmbeddingTable[options.Tables];
        _idPools = new long[options.Tables][];
        _outputs = new float[options.Tables][];
        try
        {
            int poolLength = Math.Max(_lookupsPerTable * 64, 1 << 20);
            for (int t = 0; t < options.Tables; t++)
            {
                _tables[t] = EmbeddingTable.Create($"inference_{t}", options.Rows, options.Dim, options.Storage);
                FillDeterministic(_tables[t], options.Seed + t);
                _idPools[t] = ZipfIds.Generate(options.Rows, options.ZipfExponent, poolLength, options.Seed * 31 + t);
                _outputs[t] = new float[options.Batch * options.Dim];
            }
            _offsets = new long[options.Batch + 1];
            for (int b = 0; b <= options.Batch; b++) _offsets[b] = (long)b * options.Pooling;
            _pool = new EmbeddingWorkerPool(poolThreads, onWorkerStart);
        }
        catch
        {
            foreach (var t in _tables) t?.Dispose();
            throw;
        }
        _rng = new Random(options.Seed);
        _lastStarts = new int[options.Tables];
    }

    /// <summary>Rows of small non-zero values, so the lookups sum real numbers (a zero table would look the same to
    /// the memory system, but a result check against the reference would then prove nothing).</summary>
    internal static void FillDeterministic(EmbeddingTable table, int seed)
    {
        var rng = new Random(seed);
        var row = new float[table.Dim];
        for (long r = 0; r < table.Rows; r++)
        {
            for (int k = 0; k < row.Length; k++) row[k] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            table.WriteRow(r, row);
        }
    }

    public void Serve(long request)
    {
        for (int t = 0; t < _tables.Length; t++)
        {
            var ids = _idPools[t];
            int start = _lastStarts[t] = _rng.Next(ids.Length - _lookupsPerTable + 1);
            EmbeddingBag.Forward(_tables[t], ids.AsSpan(start, _lookupsPerTable), _offsets, _outputs[t], PoolingMode.Sum, default, _pool);
        }
    }

    /// <summary>Output of table <paramref name="t"/> from the last request (for checks).</summary>
    internal ReadOnlySpan<float> LastOutput(int t) => _outputs[t];

    /// <summary>Ids table <paramref name="t"/> looked up in the last request (for checks).</summary>
    internal ReadOnlySpan<long> LastIds(int t) => _idPools[t].AsSpan(_lastStarts[t], _lookupsPerTable);

    internal ReadOnlySpan<long> Offsets => _offsets;

    public void Dispose()
    {
        _pool.Dispose();
        foreach (var t in _tables) t.Dispose();
    }
}
