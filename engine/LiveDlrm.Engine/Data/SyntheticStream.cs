using LiveDlrm.Runtime;
using System.Buffers.Text;
using System.Globalization;

namespace LiveDlrm.Data;

/// <summary>
/// Parameters of the synthetic drifting stream (model described in docs/synthetic-stream.md). Every field has a
/// default that gives a learnable DLRM problem; <see cref="Drift"/> scales every time-varying mechanism (0 =
/// stationary apart from the declared diurnal cycle).
/// </summary>
internal sealed record SyntheticStreamConfig
{
    public ulong Seed { get; init; } = 1;
    /// <summary>Drift strength: 0 stationary, 1 the default, larger = faster change.</summary>
    public double Drift { get; init; } = 1.0;
    /// <summary>Event-time rate; timestamp of event i = StartTime + floor(i / EventsPerSecond).</summary>
    public double EventsPerSecond { get; init; } = 20;
    public long StartTime { get; init; } = 1_700_000_000;

    public int Users { get; init; } = 50_000;
    public int InitialItems { get; init; } = 10_000;
    /// <summary>Items born during the stream at most; item ids InitialItems.. are the newborns, so the item table
    /// has InitialItems + MaxNewItems rows.</summary>
    public int MaxNewItems { get; init; } = 10_000;
    public int Categories { get; init; } = 32;
    public int Segments { get; init; } = 16;
    public int LatentDim { get; init; } = 8;

    /// <summary>Zipf exponent of item exposure over popularity ranks.</summary>
    public double ZipfExponent { get; init; } = 1.05;
    /// <summary>Norm of segment and category centroid vectors (the shared part of user / item latents).</summary>
    public double CentroidNorm { get; init; } = 1.3;
    /// <summary>Per-dimension std of a user's / item's own deviation from its centroid.</summary>
    public double UserDeviation { get; init; } = 0.25;
    public double ItemDeviation { get; init; } = 0.25;
    public double ItemBiasStd { get; init; } = 0.5;
    /// <summary>Logit intercept (sets the base click rate).</summary>
    public double Intercept { get; init; } = -2.0;
    public double DiurnalAmplitude { get; init; } = 0.25;

    // Drift mechanisms, each at Drift = 1 (they scale linearly with Drift).
    /// <summary>Rotation of every segment's interest centroid: a quarter turn (orthogonal interests) per this many days.</summary>
    public double InterestQuarterTurnDays { get; init; } = 2.0;
    /// <summary>Rank swaps per hour as a fraction of the catalog (one rank drawn Zipf from the head, one uniform).</summary>
    public double PopularitySwapsPerHour { get; init; } = 0.004;
    public double NewItemsPerDay { get; init; } = 1_000;
    /// <summary>Amplitude of each item's slow click-bias oscillation (periods 1–4 days).</summary>
    public double ItemTrendAmplitude { get; init; } = 0.5;
    /// <summary>Click boost of a new item, decaying as exp(-age / NoveltyHours).</summary>
    public double NoveltyBoost { get; init; } = 0.6;
    public double NoveltyHours { get; init; } = 24;
    /// <summary>Short-lived trends: bursts started per hour at Drift 1 (0 = none, the default). A burst moves an item
    /// to a head rank and adds <see cref="TrendBurstBoost"/>·exp(−age/τ) to its logit, τ ~ Exp(mean
    /// <see cref="TrendBurstMinutes"/>) clamped to [5 min, 4× the mean]: the minutes-scale change that a
    /// model synced every 10–15 minutes sees late.</summary>
    public double TrendBurstsPerHour { get; init; } = 0;
    public double TrendBurstBoost { get; init; } = 1.0;
    public double TrendBurstMinutes { get; init; } = 45;
    /// <summary>Rows of the hashed user_id and item_id tables (0 = the default integer mapping: the id is the row and
    /// the table has exactly one row per entity). Production tables are hashed into spaces much larger than the set
    /// of ids active at any time; with this set the two columns use the schema's <c>hash</c> mapping
    /// (XxHash64 of the decimal id), collisions included.</summary>
    public long HashedRows { get; init; } = 0;

    public void Validate()
    {
        static void Positive(double v, string name) { if (!(v > 0) || !double.IsFinite(v)) throw new ArgumentOutOfRangeException(name, v, $"{name} must be > 0"); }
        static void NonNegative(double v, string name) { if (!(v >= 0) || !double.IsFinite(v)) throw new ArgumentOutOfRangeException(name, v, $"{name} must be >= 0"); }
        NonNegative(Drift, nameof(Drift));
        Positive(EventsPerSecond, nameof(EventsPerSecond));
        Positive(Users, nameof(Users)); Positive(InitialItems, nameof(InitialItems)); NonNegative(MaxNewItems, nameof(MaxNewItems));
        Positive(Categories, nameof(Categories)); Positive(Segments, nameof(Segments)); Positive(LatentDim, nameof(LatentDim));
        Positive(ZipfExponent, nameof(ZipfExponent)); Positive(InterestQuarterTurnDays, nameof(InterestQuarterTurnDays));
        NonNegative(PopularitySwapsPerHour, nameof(PopularitySwapsPerHour)); NonNegative(NewItemsPerDay, nameof(NewItemsPerDay));
        Positive(NoveltyHours, nameof(NoveltyHours));
        NonNegative(TrendBurstsPerHour, nameof(TrendBurstsPerHour)); NonNegative(TrendBurstBoost, nameof(TrendBurstBoost));
        Positive(TrendBurstMinutes, nameof(TrendBurstMinutes));
        if (HashedRows < 0) throw new ArgumentOutOfRangeException(nameof(HashedRows), HashedRows, "HashedRows must be >= 0 (0 = integer mapping)");
        if (LatentDim > 64) throw new ArgumentOutOfRangeException(nameof(LatentDim), LatentDim, "LatentDim must be <= 64");
        if (ItemRows > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(MaxNewItems), ItemRows, $"InitialItems + MaxNewItems must be <= {int.MaxValue}");
        if (Categories > 1 << 20 || Segments > 1 << 20) throw new ArgumentOutOfRangeException(nameof(Categories), "Categories and Segments must be <= 2^20");
    }

    /// <summary>Bytes the generator's per-user and per-item state takes (checked against available memory before
    /// it is allocated: <c>--users 2000000000</c> is refused with a message, not an out-of-memory crash).</summary>
    public long StateBytes => SaturatingMath.Add(
        SaturatingMath.Multiply(Users, 16L + 4L * LatentDim + 8),
        SaturatingMath.Multiply(ItemRows, 32L + 8L * LatentDim + 8));

    public long ItemRows => (long)InitialItems + MaxNewItems;
    internal const ulong UserHashSeed = 0x05E2, ItemHashSeed = 0x17E3;

    /// <summary>The stream's schema: what <c>livedlrm synth</c> writes beside the TSV, and the layout of the batches
    /// the generator produces directly (identical to reading that TSV back).</summary>
    public StreamSchema Schema()
    {
        var dense = new[]
        {
            new DenseColumn("position", DenseTransform.Log1p),
            new DenseColumn("user_activity", DenseTransform.Log1p),
            new DenseColumn("item_age_hours", DenseTransform.Log1p),
            new DenseColumn("price", DenseTransform.Log1p),
        };
        var sparse = new[]
        {
            HashedRows > 0 ? new SparseColumn("user_id", "user_id", HashedRows, SparseMapping.Hash, HashSeed: UserHashSeed)
                           : new SparseColumn("user_id", "user_id", Users, SparseMapping.Integer),
            HashedRows > 0 ? new SparseColumn("item_id", "item_id", HashedRows, SparseMapping.Hash, HashSeed: ItemHashSeed)
                           : new SparseColumn("item_id", "item_id", ItemRows, SparseMapping.Integer),
            new SparseColumn("item_category", "item_category", Categories, SparseMapping.Integer),
            new SparseColumn("user_segment", "user_segment", Segments, SparseMapping.Integer),
            new SparseColumn("hour_of_day", "hour_of_day", 24, SparseMapping.Integer),
            new SparseColumn("device", "device", SyntheticEventSource.Devices, SparseMapping.Integer),
        };
        var columns = new[] { "label", "timestamp", "p_true" }.Concat(dense.Select(d => d.Name)).Concat(sparse.Select(s => s.Name)).ToArray();
        return new StreamSchema("synthetic", columns, "label", dense, sparse, timestamp: "timestamp",
                                eventsPerSecond: EventsPerSecond, startTime: StartTime, trueProbability: "p_true");
    }
}

/// <summary>
/// The synthetic drifting stream: users and items with latent vectors, Zipf exposure over drifting popularity
/// ranks, items born during the stream, segment interests that rotate, clicks drawn from a logistic model whose
/// probability is emitted with each event (<see cref="EventBatch.TrueProbabilities"/>), so the best achievable AUC
/// of any window is the AUC of those probabilities. Deterministic by seed; events come in time order.
/// </summary>
/// <summary>Terms of the synthetic click model (<see cref="SyntheticEventSource.OmitFromTrueProbability"/>).</summary>
[Flags]
internal enum SyntheticTerms
{
    None = 0,
    /// <summary>⟨δ_u, E_cat + ε_i⟩: the user's own deviation from their segment.</summary>
    UserDeviation = 1,
    /// <summary>⟨S_seg, ε_i⟩: the item's own deviation from its category (the user-deviation part is the flag above).</summary>
    ItemDeviation = 2,
    /// <summary>b_i, the item's click bias (the price term stays).</summary>
    ItemBias = 4,
}

internal sealed class SyntheticEventSource : IEventSource
{
    internal const int Devices = 4;
    const int TickSeconds = 60;
    const int BurstHeadRanks = 100;    // a trending item is shown like a top-100 item
    const int NewItemHeadRanks = 2000; // world state (interests, ranks, births) advances once per event-time minute
    static readonly double[] DeviceShare = [0.55, 0.30, 0.10, 0.05];
    static readonly double[] DeviceEffect = [0.0, -0.15, 0.2, -0.3];
    const double PositionEffect = -0.1, ActivityEffect = 0.15, PriceEffect = -0.2;
    const double ActivityMedian = 4, PriceMedian = 20;
    static readonly float[] PositionDense = Enumerable.Range(0, 11).Select(p => (float)Math.Log(1 + (double)p)).ToArray();

    readonly SyntheticStreamConfig _c;
    readonly long _events;
    readonly int _k;

    // The world (fixed at construction from the seed).
    readonly int[] _userSegment;
    readonly int[] _userActivity;      // visits per week, the user's exposure weight
    readonly AliasTable _userSampler;  // ∝ activity
    readonly float[] _userActivityDense; // log1p(activity), the dense feature
    readonly float[] _userEffect;      // the activity term of the logit
    readonly float[] _userDeviation;   // users × k
    readonly int[] _itemCategory;
    readonly float[] _itemDeviation;   // items × k
    readonly float[] _itemBias;
    readonly double[] _itemPrice;
    readonly float[] _itemPriceDense;  // log1p(price)
    readonly float[] _itemStaticLogit; // bias + price term
    readonly float[] _itemTrendFrequency, _itemTrendPhase;
    readonly long[] _itemBirth;        // seconds since StartTime (negative for the initial catalog)
    readonly long[] _userRow, _itemRow; // table row of each id (the id itself, or its hash with HashedRows)
    readonly long[] _itemBurstStart;   // seconds since StartTime of the item's current trend burst, long.MaxValue = none
    readonly float[] _itemBurstTau;    // its decay time in seconds
    readonly double[] _categoryCentroid; // categories × k
    readonly double[] _segmentStart, _segmentOrthogonal; // segments × k: interest at t=0 and the direction it turns to
    readonly double[] _rankCdf;        // Zipf over catalog ranks (for the world's own draws)
    readonly AliasTable _rankSampler;  // the same distribution, O(1) per event
    readonly int[] _initialRankItem;
    readonly double[] _hourEffect = new double[24];
    readonly double[] _deviceCdf;

    // Stream state (reset by Reset()).
    Xoshiro256 _rng, _worldRng;
    int[] _rankItem = [];
    double[] _segmentNow;              // segments × k at the current tick
    long _next;                        // index of the next event
    long _tick = -1;
    int _born;
    double _swapCarry, _burstCarry;

    public StreamSchema Schema { get; }
    public SyntheticStreamConfig Config => _c;
    /// <summary>Events this source yields before ending (long.MaxValue = unbounded).</summary>
    public long Events => _events;
    /// <summary>Items born so far (ids InitialItems .. InitialItems + NewItemsBorn - 1).</summary>
    public int NewItemsBorn => _born;
    /// <summary>Trend bursts started so far.</summary>
    public long BurstsStarted { get; private set; }

    /// <summary>Terms of the click model left out of the emitted true probability (labels are still drawn from the
    /// whole model): the probability then is the best a model could do that knew everything but those terms, which
    /// splits the optimum into what a learner can and cannot get from the data (docs/model.md).</summary>
    public SyntheticTerms OmitFromTrueProbability { get; init; }
    /// <summary>The latest bursts (at most <see cref="BurstLogCapacity"/>): event-time second since StartTime, item id,
    /// decay time τ in seconds. For tests and summaries.</summary>
    internal IReadOnlyCollection<(long Start, int Item, double Tau)> RecentBursts => _burstLog;

    // The world's own parameters, read by oracle estimates of what a learner could reach from the data
    // (tests/LiveDlrm.Tests/Data/OptimumDecompositionTests.cs).
    internal ReadOnlySpan<double> SegmentInterestNow(int segment) => _segmentNow.AsSpan(segment * _k, _k);
    internal ReadOnlySpan<double> CategoryCentroid(int category) => _categoryCentroid.AsSpan(category * _k, _k);
    internal ReadOnlySpan<float> UserDeviationOf(int user) => _userDeviation.AsSpan(user * _k, _k);
    internal ReadOnlySpan<float> ItemDeviationOf(int item) => _itemDeviation.AsSpan(item * _k, _k);
    internal float ItemBiasOf(int item) => _itemBias[item];
    internal const int BurstLogCapacity = 4096;
    readonly Queue<(long Start, int Item, double Tau)> _burstLog = new();

    public SyntheticEventSource(SyntheticStreamConfig? config = null, long events = long.MaxValue)
    {
        _c = config ?? new SyntheticStreamConfig();
        _c.Validate();
        Memory.MemoryBudget.Check($"the synthetic world ({_c.Users} users, {_c.ItemRows} items)", _c.StateBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(events);
        _events = events;
        _k = _c.LatentDim;
        Schema = _c.Schema();
        var rng = new Xoshiro256(_c.Seed);

        _categoryCentroid = RandomVectors(ref rng, _c.Categories, _c.CentroidNorm);
        _segmentStart = RandomVectors(ref rng, _c.Segments, _c.CentroidNorm);
        _segmentOrthogonal = new double[_segmentStart.Length];
        for (int s = 0; s < _c.Segments; s++) Orthogonal(ref rng, _segmentStart.AsSpan(s * _k, _k), _segmentOrthogonal.AsSpan(s * _k, _k));
        _segmentNow = (double[])_segmentStart.Clone();

        _userSegment = new int[_c.Users];
        _userActivity = new int[_c.Users];
        _userActivityDense = new float[_c.Users];
        _userEffect = new float[_c.Users];
        _userDeviation = new float[(long)_c.Users * _k];
        for (int u = 0; u < _c.Users; u++)
        {
            _userSegment[u] = rng.NextInt(_c.Segments);
            _userActivity[u] = (int)Math.Min(200, 1 + Math.Floor(Math.Exp(Math.Log(ActivityMedian) + rng.NextGaussian())));
            _userActivityDense[u] = (float)Math.Log(1 + (double)_userActivity[u]);
            _userEffect[u] = (float)(ActivityEffect * (Math.Log(_userActivity[u]) - Math.Log(ActivityMedian)));
            for (int d = 0; d < _k; d++) _userDeviation[(long)u * _k + d] = (float)(_c.UserDeviation * rng.NextGaussian());
        }
        _userSampler = new AliasTable(_userActivity.Select(a => (double)a).ToArray());
        double cumulative;

        long items = _c.ItemRows;
        _itemCategory = new int[items];
        _itemDeviation = new float[items * _k];
        _itemBias = new float[items];
        _itemPrice = new double[items];
        _itemPriceDense = new float[items];
        _itemStaticLogit = new float[items];
        _itemTrendFrequency = new float[items];
        _itemTrendPhase = new float[items];
        _itemBirth = new long[items];
        for (long i = 0; i < items; i++)
        {
            _itemCategory[i] = rng.NextInt(_c.Categories);
            for (int d = 0; d < _k; d++) _itemDeviation[i * _k + d] = (float)(_c.ItemDeviation * rng.NextGaussian());
            _itemBias[i] = (float)(_c.ItemBiasStd * rng.NextGaussian());
            _itemPrice[i] = Math.Max(0.5, Math.Round(Math.Exp(Math.Log(PriceMedian) + 0.8 * rng.NextGaussian()) * 100) / 100);
            _itemPriceDense[i] = (float)Math.Log(1 + _itemPrice[i]);
            _itemStaticLogit[i] = (float)(_itemBias[i] + PriceEffect * (Math.Log(_itemPrice[i]) - Math.Log(PriceMedian)));
            double periodDays = 1 + 3 * rng.NextDouble();
            _itemTrendFrequency[i] = (float)(2 * Math.PI / (periodDays * 86400));
            _itemTrendPhase[i] = (float)(2 * Math.PI * rng.NextDouble());
            // Initial catalog: aged 7–90 days at the start (novelty long gone); newborns get their birth time later.
            _itemBirth[i] = i < _c.InitialItems ? -(long)((7 + 83 * rng.NextDouble()) * 86400) : long.MaxValue;
        }

        _rankCdf = SyntheticDraws.ZipfCumulative(_c.InitialItems, _c.ZipfExponent);
        cumulative = _rankCdf[^1];
        for (int r = 0; r < _rankCdf.Length; r++) _rankCdf[r] /= cumulative;
        _rankSampler = new AliasTable(Enumerable.Range(0, _rankCdf.Length).Select(r => Math.Pow(r + 1, -_c.ZipfExponent)).ToArray());
        _initialRankItem = SyntheticDraws.RandomPermutation(ref rng, _c.InitialItems);

        _userRow = IdRows(_c.Users, _c.HashedRows, SyntheticStreamConfig.UserHashSeed);
        _itemRow = IdRows(items, _c.HashedRows, SyntheticStreamConfig.ItemHashSeed);
        _itemBurstStart = new long[items];
        _itemBurstTau = new float[items];

        for (int h = 0; h < 24; h++) _hourEffect[h] = _c.DiurnalAmplitude * Math.Sin(2 * Math.PI * (h - 9) / 24.0);
        _deviceCdf = new double[Devices];
        cumulative = 0;
        for (int d = 0; d < Devices; d++) { cumulative += DeviceShare[d]; _deviceCdf[d] = cumulative; }
        _deviceCdf[^1] = 1.0;
        Reset();
    }

    /// <summary>Row of each id 0..count-1: the id itself, or the schema's hash mapping of its decimal form (what a
    /// reader of the written TSV computes), so generated batches and read-back batches agree.</summary>
    static long[] IdRows(long count, long hashedRows, ulong seed)
    {
        var rows = new long[count];
        Span<byte> token = stackalloc byte[24];
        for (long id = 0; id < count; id++)
        {
            if (hashedRows == 0) { rows[id] = id; continue; }
            id.TryFormat(token, out int n, default, CultureInfo.InvariantCulture);
            rows[id] = SparseTokenMapper.HashRow(token[..n], seed, hashedRows);
        }
        return rows;
    }

    /// <summary><paramref name="count"/> random directions of length <paramref name="norm"/>, row-major count × k.</summary>
    double[] RandomVectors(ref Xoshiro256 rng, int count, double norm)
    {
        var v = new double[count * _k];
        for (int i = 0; i < count; i++)
        {
            var row = v.AsSpan(i * _k, _k);
            double sq = 0;
            for (int d = 0; d < _k; d++) { row[d] = rng.NextGaussian(); sq += row[d] * row[d]; }
            double scale = norm / Math.Sqrt(Math.Max(sq, 1e-12));
            for (int d = 0; d < _k; d++) row[d] *= scale;
        }
        return v;
    }

    public void Reset()
    {
        _rng = new Xoshiro256(_c.Seed ^ 0xE7E27_5EEDUL);
        _worldRng = new Xoshiro256(_c.Seed ^ 0x3D_D21F7UL);
        _rankItem = (int[])_initialRankItem.Clone();
        Array.Copy(_segmentStart, _segmentNow, _segmentStart.Length);
        for (long i = _c.InitialItems; i < _c.ItemRows; i++) _itemBirth[i] = long.MaxValue;
        _next = 0;
        _tick = -1;
        _born = 0;
        _swapCarry = 0;
        _burstCarry = 0;
        BurstsStarted = 0;
        _burstLog.Clear();
        Array.Fill(_itemBurstStart, long.MaxValue);
        Array.Clear(_itemBurstTau);
    }

    public int Read(EventBatch batch) => Read(batch, null);

    /// <summary>Like <see cref="Read(EventBatch)"/>, also handing each event's raw TSV fields to <paramref name="tsv"/>.</summary>
    internal int Read(EventBatch batch, SyntheticTsvWriter? tsv)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.DenseCount != 4 || batch.SparseCount != 6 || !batch.Layout.HasTrueProbabilities)
            throw new ArgumentException("batch layout is not the synthetic stream's (use Schema.Layout)", nameof(batch));
        batch.Clear();
        while (!batch.IsFull && _next < _events) { GenerateOne(batch, tsv); _next++; }
        return batch.Count;
    }

    void GenerateOne(EventBatch batch, SyntheticTsvWriter? tsv)
    {
        long elapsed = (long)Math.Floor(_next / _c.EventsPerSecond);
        long tick = elapsed / TickSeconds;
        while (_tick < tick) AdvanceTick(_tick + 1);

        int user = _userSampler.Sample(ref _rng);
        int rank = _rankSampler.Sample(ref _rng);
        int item = _rankItem[rank];
        int device = Sample(_deviceCdf, _rng.NextDouble());
        int position = 1 + _rng.NextInt(10);
        long timestamp = _c.StartTime + elapsed;
        int hour = (int)(((timestamp % 86400) + 86400) % 86400 / 3600);

        int segment = _userSegment[user];
        int category = _itemCategory[item];
        double dot = 0;
        int uo = user * _k, io = item * _k, so = segment * _k, co = category * _k;
        for (int d = 0; d < _k; d++)
            dot += (_segmentNow[so + d] + _userDeviation[uo + d]) * (_categoryCentroid[co + d] + _itemDeviation[io + d]);

        double ageHours = Math.Max(0, elapsed - _itemBirth[item]) / 3600.0;
        double logit = _c.Intercept + dot + _itemStaticLogit[item] + _userEffect[user]
                       + _hourEffect[hour] + DeviceEffect[device] + PositionEffect * (position - 1);
        if (_c.Drift != 0) logit += _c.Drift * _c.ItemTrendAmplitude * Math.Sin(_itemTrendFrequency[item] * elapsed + _itemTrendPhase[item]);
        // Novelty applies to items born during the stream (the initial catalog is at least a week old).
        if (item >= _c.InitialItems) logit += _c.NoveltyBoost * Math.Exp(-ageHours / _c.NoveltyHours);
        if (elapsed >= _itemBurstStart[item]) logit += _c.TrendBurstBoost * Math.Exp(-(elapsed - _itemBurstStart[item]) / (double)_itemBurstTau[item]);
        float p = (float)(1 / (1 + Math.Exp(-logit)));
        float label = _rng.NextDouble() < p ? 1f : 0f;
        if (OmitFromTrueProbability != SyntheticTerms.None)
        {
            double omitted = 0;
            for (int d = 0; d < _k; d++)
            {
                if ((OmitFromTrueProbability & SyntheticTerms.UserDeviation) != 0) omitted += _userDeviation[uo + d] * (_categoryCentroid[co + d] + _itemDeviation[io + d]);
                if ((OmitFromTrueProbability & SyntheticTerms.ItemDeviation) != 0) omitted += _segmentNow[so + d] * _itemDeviation[io + d];
            }
            if ((OmitFromTrueProbability & SyntheticTerms.ItemBias) != 0) omitted += _itemBias[item];
            p = (float)(1 / (1 + Math.Exp(-(logit - omitted))));
        }

        long ageWholeHours = (long)ageHours;
        int row = batch.AddEvent(label, timestamp, _next, p);
        var dense = batch.DenseRowForWrite(row);
        dense[0] = PositionDense[position];
        dense[1] = _userActivityDense[user];
        dense[2] = (float)Math.Log(1 + (double)ageWholeHours);
        dense[3] = _itemPriceDense[item];
        batch.AddIndex(0, _userRow[user]);
        batch.AddIndex(1, _itemRow[item]);
        batch.AddIndex(2, category);
        batch.AddIndex(3, segment);
        batch.AddIndex(4, hour);
        batch.AddIndex(5, device);
        tsv?.Write(label, timestamp, p, position, _userActivity[user], ageWholeHours, _itemPrice[item], user, item, category, segment, hour, device);
    }

    /// <summary>Moves the world to minute <paramref name="tick"/> of event time: interests rotate, popularity ranks
    /// swap, items are born. All of it scales with Drift and none of it happens at Drift 0.</summary>
    void AdvanceTick(long tick)
    {
        _tick = tick;
        if (_c.Drift == 0) return;
        double seconds = tick * (double)TickSeconds;

        double theta = _c.Drift * (Math.PI / 2) * seconds / (_c.InterestQuarterTurnDays * 86400);
        double cos = Math.Cos(theta), sin = Math.Sin(theta);
        for (int i = 0; i < _segmentNow.Length; i++) _segmentNow[i] = cos * _segmentStart[i] + sin * _segmentOrthogonal[i];

        if (tick == 0) return; // the first tick only sets the clock
        _swapCarry += _c.Drift * _c.PopularitySwapsPerHour * _rankItem.Length * TickSeconds / 3600.0;
        while (_swapCarry >= 1)
        {
            _swapCarry -= 1;
            int a = Sample(_rankCdf, _worldRng.NextDouble()), b = _worldRng.NextInt(_rankItem.Length);
            (_rankItem[a], _rankItem[b]) = (_rankItem[b], _rankItem[a]);
        }

        // Births due by this tick: the newborn takes a uniform rank among the top NewItemHeadRanks (new releases
        // get exposure); the item it displaces moves to a uniform rank, whose occupant retires from the catalog.
        double birthInterval = 86400 / (_c.Drift * _c.NewItemsPerDay);
        while (_born < _c.MaxNewItems && _c.NewItemsPerDay > 0 && _born * birthInterval <= seconds)
        {
            int item = _c.InitialItems + _born;
            _itemBirth[item] = (long)(_born * birthInterval);
            _born++;
            int head = _worldRng.NextInt(Math.Min(NewItemHeadRanks, _rankItem.Length));
            int tail = _worldRng.NextInt(_rankItem.Length);
            _rankItem[tail] = _rankItem[head];
            _rankItem[head] = item;
        }

        // Trend bursts: an item outside the head jumps to one of the top BurstHeadRanks ranks (swapping with the
        // item there) and gets a decaying click boost; an item already in a burst starts a new one.
        _burstCarry += _c.Drift * _c.TrendBurstsPerHour * TickSeconds / 3600.0;
        while (_burstCarry >= 1)
        {
            _burstCarry -= 1;
            int heads = Math.Min(BurstHeadRanks, _rankItem.Length);
            int from = Math.Min(heads + _worldRng.NextInt(Math.Max(1, _rankItem.Length - heads)), _rankItem.Length - 1);
            int to = _worldRng.NextInt(heads);
            int item = _rankItem[from];
            (_rankItem[from], _rankItem[to]) = (_rankItem[to], _rankItem[from]);
            double mean = _c.TrendBurstMinutes * 60;
            double tau = Math.Clamp(-mean * Math.Log(1 - _worldRng.NextDouble()), 300, 4 * mean);
            _itemBurstStart[item] = (long)seconds;
            _itemBurstTau[item] = (float)tau;
            BurstsStarted++;
            if (_burstLog.Count == BurstLogCapacity) _burstLog.Dequeue();
            _burstLog.Enqueue(((long)seconds, item, tau));
        }
    }

    /// <summary>Walker/Vose alias table: O(1) draws from a fixed discrete distribution.</summary>
    sealed class AliasTable
    {
        readonly double[] _probability;
        readonly int[] _alias;

        public AliasTable(double[] weights)
        {
            int n = weights.Length;
            _probability = new double[n];
            _alias = new int[n];
            double total = weights.Sum();
            var scaled = weights.Select(w => w * n / total).ToArray();
            var small = new Stack<int>();
            var large = new Stack<int>();
            for (int i = n - 1; i >= 0; i--) (scaled[i] < 1 ? small : large).Push(i);
            while (small.Count > 0 && large.Count > 0)
            {
                int s = small.Pop(), l = large.Pop();
                _probability[s] = scaled[s];
                _alias[s] = l;
                scaled[l] = scaled[l] + scaled[s] - 1;
                (scaled[l] < 1 ? small : large).Push(l);
            }
            while (large.Count > 0) { int l = large.Pop(); _probability[l] = 1; _alias[l] = l; }
            while (small.Count > 0) { int s = small.Pop(); _probability[s] = 1; _alias[s] = s; } // rounding leftovers
        }

        public int Sample(ref Xoshiro256 rng)
        {
            int i = rng.NextInt(_probability.Length);
            return rng.NextDouble() < _probability[i] ? i : _alias[i];
        }
    }

    static int Sample(double[] cdf, double u)
    {
        int lo = 0, hi = cdf.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (cdf[mid] > u) hi = mid; else lo = mid + 1;
        }
        return lo;
    }

    void Orthogonal(ref Xoshiro256 rng, ReadOnlySpan<double> v, Span<double> result)
    {
        // Gram–Schmidt of a random vector against v, scaled to |v|: the direction this interest turns towards.
        double vv = 0;
        for (int d = 0; d < _k; d++) vv += v[d] * v[d];
        while (true)
        {
            double dot = 0;
            for (int d = 0; d < _k; d++) { result[d] = rng.NextGaussian(); dot += result[d] * v[d]; }
            double norm = 0;
            for (int d = 0; d < _k; d++) { result[d] -= dot / vv * v[d]; norm += result[d] * result[d]; }
            if (norm > 1e-6) { double s = Math.Sqrt(vv / norm); for (int d = 0; d < _k; d++) result[d] *= s; return; }
        }
    }

    public void Dispose() { }
}

/// <summary>Writes the synthetic stream's raw fields as TSV in <see cref="SyntheticStreamConfig.Schema"/> column order.</summary>
internal sealed class SyntheticTsvWriter(Stream output) : IDisposable
{
    readonly byte[] _buffer = new byte[1 << 16];
    int _used;

    public void Write(float label, long timestamp, float p, int position, int activity, long ageHours, double price,
                      int user, int item, int category, int segment, int hour, int device)
    {
        if (_buffer.Length - _used < 512) Flush();
        Span<byte> b = _buffer.AsSpan(_used);
        int n = 0;
        b[n++] = label == 1f ? (byte)'1' : (byte)'0';
        Tab(b, ref n); Utf8Formatter.TryFormat(timestamp, b[n..], out int w); n += w;
        // "R" gives the shortest text that parses back to the same float.
        Tab(b, ref n); p.TryFormat(b[n..], out w, "R", CultureInfo.InvariantCulture); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(position, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(activity, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(ageHours, b[n..], out w); n += w;
        Tab(b, ref n); price.TryFormat(b[n..], out w, "R", CultureInfo.InvariantCulture); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(user, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(item, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(category, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(segment, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(hour, b[n..], out w); n += w;
        Tab(b, ref n); Utf8Formatter.TryFormat(device, b[n..], out w); n += w;
        b[n++] = (byte)'\n';
        _used += n;
    }

    static void Tab(Span<byte> b, ref int n) => b[n++] = (byte)'\t';

    public void Flush()
    {
        output.Write(_buffer, 0, _used);
        _used = 0;
    }

    public void Dispose() => Flush();
}
