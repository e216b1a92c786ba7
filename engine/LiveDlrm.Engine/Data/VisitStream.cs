namespace LiveDlrm.Data;

/// <summary>Configuration of the visit world (<see cref="VisitEventSource"/>).</summary>
internal sealed record VisitStreamConfig
{
    public ulong Seed { get; init; } = 1;
    /// <summary>Event-time span the events are spread over.</summary>
    public double SpanYears { get; init; } = 20;
    public long StartTime { get; init; } = 946_684_800;   // 2000-01-01
    public int Users { get; init; } = 20_000;
    /// <summary>Items present at the start; <see cref="NewItems"/> more are born evenly over the span.</summary>
    public int InitialItems { get; init; } = 2_000;
    public int NewItems { get; init; } = 8_000;
    /// <summary>Zipf exponent of user activity and of item popularity.</summary>
    public double ZipfExponent { get; init; } = 1.05;
    /// <summary>Mean events per visit (geometric), one every <see cref="SecondsBetweenVisitEvents"/>.</summary>
    public double MeanVisitEvents { get; init; } = 6;
    public int SecondsBetweenVisitEvents { get; init; } = 45;
    /// <summary>Share of events on one of the <see cref="NewReleaseItems"/> newest items (new releases get exposure).</summary>
    public double NewReleaseShare { get; init; } = 0.3;
    public int NewReleaseItems { get; init; } = 300;
    public int LatentDim { get; init; } = 8;
    public double Intercept { get; init; } = -1.8;
    public double UserBiasStd { get; init; } = 0.4;
    public double ItemBiasStd { get; init; } = 0.6;
    /// <summary>Std of each latent coordinate; the user × item affinity has std ≈ k·std².</summary>
    public double LatentStd { get; init; } = 0.35;
    /// <summary>Extra logit of a new item, decaying with its age.</summary>
    public double NoveltyBoost { get; init; } = 0.6;
    public double NoveltyDays { get; init; } = 60;
    /// <summary>Users' tastes drift: each latent vector turns by this many radians a year toward a second one.</summary>
    public double TasteTurnPerYear { get; init; } = 0.3;

    public void Validate()
    {
        if (!(SpanYears > 0 && SpanYears <= 100)) throw new ArgumentOutOfRangeException(nameof(SpanYears), SpanYears, "must be in (0, 100]");
        if (Users < 1 || InitialItems < 1 || NewItems < 0 || LatentDim < 1) throw new ArgumentException("users, initial items and latent dim must be at least 1, new items at least 0");
        if (!(ZipfExponent > 0) || !(MeanVisitEvents >= 1) || SecondsBetweenVisitEvents < 1) throw new ArgumentException("Zipf exponent > 0, mean visit events ≥ 1, seconds between visit events ≥ 1");
        if (!(NewReleaseShare >= 0 && NewReleaseShare <= 1) || NewReleaseItems < 1) throw new ArgumentException("new-release share in [0, 1], new-release items ≥ 1");
    }

    /// <summary>Id-only: label, timestamp, the true probability and the two ids.</summary>
    public StreamSchema Schema() => new("visits", ["label", "timestamp", "p_true", "user_id", "item_id"], "label", [],
        [new SparseColumn("user_id", "user_id", Users, SparseMapping.Integer),
         new SparseColumn("item_id", "item_id", InitialItems + NewItems, SparseMapping.Integer)],
        timestamp: "timestamp", trueProbability: "p_true");
}

/// <summary>
/// The second synthetic world, shaped like a public rating log rather than an ad stream: id-only (user, item), a
/// long span (default 20 years), Zipf user activity and item popularity, users arriving in visits of a few events
/// a minute apart with long gaps between, items born over the whole span (new releases take a share of exposure and
/// get a novelty boost that decays over weeks), and slowly turning user tastes. The click model
/// <code>logit = Intercept + b_u + b_i + ⟨v_u(t), w_i⟩ + NoveltyBoost · exp(−age / NoveltyDays)</code>
/// is emitted with each event (<see cref="EventBatch.TrueProbabilities"/>), so the optimum AUC is known as in the
/// default world. All draws come from the seed; <see cref="Reset"/> replays the same events.
/// </summary>
internal sealed class VisitEventSource : IEventSource
{
    const double YearSeconds = 31_556_952;
    readonly VisitStreamConfig _c;
    readonly int _events, _k;
    readonly long[] _times;     // event times, sorted
    readonly int[] _users;      // the user of each event
    readonly long[] _birth;     // item birth times (initial items: the start)
    readonly double[] _userBias, _itemBias, _userTaste, _userTurn, _itemVector;
    readonly double[] _userZipf;
    Xoshiro256 _rng;
    int _next;

    public StreamSchema Schema { get; }

    public VisitEventSource(VisitStreamConfig? config = null, int events = 100_000)
    {
        _c = config ?? new VisitStreamConfig();
        _c.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(events, 1);
        _events = events;
        _k = _c.LatentDim;
        Schema = _c.Schema();
        var rng = new Xoshiro256(_c.Seed);
        int items = _c.InitialItems + _c.NewItems;
        _userBias = Gaussians(ref rng, _c.Users, _c.UserBiasStd);
        _itemBias = Gaussians(ref rng, items, _c.ItemBiasStd);
        _userTaste = Gaussians(ref rng, _c.Users * _k, _c.LatentStd);
        _userTurn = Gaussians(ref rng, _c.Users * _k, _c.LatentStd);
        _itemVector = Gaussians(ref rng, items * _k, _c.LatentStd);
        double span = _c.SpanYears * YearSeconds;
        _birth = new long[items];
        for (int i = 0; i < items; i++)
            _birth[i] = _c.StartTime + (i < _c.InitialItems ? 0 : (long)(span * (i - _c.InitialItems + 1) / (_c.NewItems + 1)));
        // Users by Zipf activity: a fixed random order of users over the activity ranks.
        var order = SyntheticDraws.RandomPermutation(ref rng, _c.Users);
        _userZipf = SyntheticDraws.ZipfCumulative(_c.Users, _c.ZipfExponent);
        double cumulative = _userZipf[^1];

        // Visits: a user, a start uniform over the span, a geometric number of events a fixed gap apart.
        _times = new long[events];
        _users = new int[events];
        double stop = 1 / _c.MeanVisitEvents;
        for (int e = 0; e < events;)
        {
            int user = order[Draw(_userZipf, rng.NextDouble() * cumulative)];
            long start = _c.StartTime + (long)(rng.NextDouble() * span);
            do
            {
                _times[e] = start;
                _users[e] = user;
                start += _c.SecondsBetweenVisitEvents;
                e++;
            } while (e < events && rng.NextDouble() >= stop);
        }
        Array.Sort(_times, _users);
        Reset();
    }

    static double[] Gaussians(ref Xoshiro256 rng, int n, double std)
    {
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = rng.NextGaussian() * std;
        return v;
    }

    static int Draw(double[] cdf, double u)
    {
        int i = Array.BinarySearch(cdf, u);
        return Math.Min(cdf.Length - 1, i >= 0 ? i : ~i);
    }

    public int Read(EventBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.DenseCount != 0 || batch.SparseCount != 2 || !batch.Layout.HasTrueProbabilities)
            throw new ArgumentException("batch layout is not the visit stream's (use Schema.Layout)", nameof(batch));
        batch.Clear();
        while (!batch.IsFull && _next < _events)
        {
            long t = _times[_next];
            int user = _users[_next];
            int born = BornBy(t);
            int item;
            if (born > _c.InitialItems && _rng.NextDouble() < _c.NewReleaseShare)
                item = born - 1 - _rng.NextInt(Math.Min(_c.NewReleaseItems, born - _c.InitialItems));
            else
            {
                // Zipf over the items born so far (continuous inverse CDF of r^−s on [1, born + 1)).
                double s = _c.ZipfExponent, u = _rng.NextDouble();
                double r = Math.Abs(s - 1) < 1e-9 ? Math.Pow(born + 1, u) : Math.Pow(1 + u * (Math.Pow(born + 1, 1 - s) - 1), 1 / (1 - s));
                item = Math.Clamp((int)r - 1, 0, born - 1);
            }
            double years = (t - _c.StartTime) / YearSeconds, angle = _c.TasteTurnPerYear * years;
            double cos = Math.Cos(angle), sin = Math.Sin(angle), affinity = 0;
            for (int k = 0; k < _k; k++)
                affinity += (cos * _userTaste[user * _k + k] + sin * _userTurn[user * _k + k]) * _itemVector[item * _k + k];
            double ageDays = (t - _birth[item]) / 86_400.0;
            double novelty = item >= _c.InitialItems ? _c.NoveltyBoost * Math.Exp(-ageDays / _c.NoveltyDays) : 0;
            double p = 1 / (1 + Math.Exp(-(_c.Intercept + _userBias[user] + _itemBias[item] + affinity + novelty)));
            int row = batch.AddEvent(_rng.NextDouble() < p ? 1 : 0, t, _next, (float)p);
            batch.AddIndex(0, user);
            batch.AddIndex(1, item);
            _next++;
        }
        return batch.Count;
    }

    /// <summary>Items born by <paramref name="t"/> (births are sorted, initial items first).</summary>
    int BornBy(long t)
    {
        int lo = _c.InitialItems, hi = _birth.Length;
        while (lo < hi) { int mid = (lo + hi) >>> 1; if (_birth[mid] <= t) lo = mid + 1; else hi = mid; }
        return lo;
    }

    public void Reset()
    {
        _rng = new Xoshiro256(_c.Seed ^ 0x5E55_10A5UL);
        _next = 0;
    }

    public void Dispose() { }
}
