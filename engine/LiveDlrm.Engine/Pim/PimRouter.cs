using LiveDlrm.Interop;

namespace LiveDlrm.Pim;

/// <summary>One batch grouped per DPU, in the arrays <c>pim_lookup</c> takes, plus what it will cost.</summary>
internal sealed class PimRoutedBatch
{
    internal PimHostSegment[] Segments = [];
    internal uint[] Items = [];
    /// <summary>One weight per item (same layout as <see cref="Items"/>) for a weighted batch; null for plain sums.</summary>
    internal float[]? Weights;
    internal uint[] SegmentsPerDpu = [];
    internal uint[] ItemsPerDpu = [];
    internal int SegmentCount, ItemCount;
    public int Bags { get; internal set; }
    /// <summary>Vector reads by source (summed over tiles: a lookup in a T-tile table is T reads).</summary>
    public long MramItems { get; internal set; }
    public long CacheItems { get; internal set; }
    /// <summary>Items that were a precomputed pair sum (each replaces two lookups).</summary>
    public long PairItems { get; internal set; }
    public int DpuCount => SegmentsPerDpu.Length;
}

/// <summary>Turns CSR batches into per-DPU item lists for a <see cref="PimPlan"/>: cached rows become WRAM-cache
/// items, pairs of rows with a precomputed sum one item, other rows one item on the least-loaded of their replicas
/// (per batch); cache items go last, each to the least-loaded member, so cache and MRAM work balance jointly. A plan
/// with several copies sends each bag whole to one copy (bag-local: few partial sums per bag) and spreads bags over
/// the copies by load, shared with the other tables of the launch when the caller passes a set load.
/// A weighted batch carries each lookup's weight with its item and uses no pair sums (a stored W[a] + W[b] is only
/// right for equal weights).</summary>
internal sealed class PimRouter
{
    readonly PimPlan _plan;
    readonly List<uint>[] _memberItems;
    readonly List<float>[] _memberWeights;
    readonly List<(int Bag, int Begin, int Count)>[] _memberSegments;
    readonly long[] _load;
    readonly int[] _bagBegin;
    readonly List<int> _touched = new();
    readonly List<long> _rest = new(), _cachedRows = new();
    readonly List<float> _restWeights = new(), _cachedWeights = new();
    readonly List<bool> _consumed = new();
    /// <summary>Items of extra load a lookup (cached, or of a replicated row) accepts to join a DPU that already has a
    /// segment for its bag rather than open a new partial sum there.</summary>
    const double NewSegmentPenalty = 2.0;

    /// <summary>Per DPU of the set, load the routers of one launch share (items plus <see cref="NewSegmentPenalty"/> per
    /// partial sum), so the tables of a set spread their bags over different copies; null: this table alone.</summary>
    readonly double[] _setLoad;
    readonly bool _ownSetLoad;
    int _copyCursor;

    public PimRouter(PimPlan plan, double[]? setLoad = null)
    {
        _plan = plan;
        if (setLoad is not null && setLoad.Length < plan.UsedDpus)
            throw new ArgumentException($"set load covers {setLoad.Length} DPUs, the plan uses {plan.UsedDpus}", nameof(setLoad));
        _ownSetLoad = setLoad is null;
        _setLoad = setLoad ?? new double[plan.UsedDpus];
        // Virtual members: member k of copy q is q·GroupSize + k.
        int g = plan.GroupSize * plan.Copies;
        _memberItems = new List<uint>[g];
        _memberWeights = new List<float>[g];
        _memberSegments = new List<(int, int, int)>[g];
        for (int k = 0; k < g; k++) { _memberItems[k] = new List<uint>(); _memberWeights[k] = new List<float>(); _memberSegments[k] = new List<(int, int, int)>(); }
        _load = new long[g];
        _bagBegin = new int[g];
    }

    public PimPlan Plan => _plan;

    /// <summary>Routes a validated batch (every index in [0, Rows)); <paramref name="weights"/> (one per index, or
    /// empty for plain sums) travel with their items.</summary>
    public PimRoutedBatch Route(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, PimRoutedBatch? reuse = null, ReadOnlySpan<float> weights = default)
    {
        var plan = _plan;
        int g = plan.GroupSize * plan.Copies, members = plan.GroupSize, tiles = plan.Tiles;
        bool weighted = !weights.IsEmpty;
        if (weighted && weights.Length != indices.Length)
            throw new ArgumentException($"{weights.Length} weights for {indices.Length} indices", nameof(weights));
        for (int k = 0; k < g; k++) { _memberItems[k].Clear(); _memberWeights[k].Clear(); _memberSegments[k].Clear(); }
        Array.Clear(_load);
        if (_ownSetLoad) Array.Clear(_setLoad);
        Array.Fill(_bagBegin, -1);
        var result = reuse ?? new PimRoutedBatch();
        long mram = 0, cache = 0, pairItems = 0;
        int bags = offsets.Length - 1;
        for (int b = 0; b < bags; b++)
        {
            _touched.Clear();
            _rest.Clear();
            _cachedRows.Clear();
            _restWeights.Clear();
            _cachedWeights.Clear();
            for (long i = offsets[b]; i < offsets[b + 1]; i++)
            {
                long r = indices[(int)i];
                float w = weighted ? weights[(int)i] : 1f;
                if (plan.CacheOrdinal[r] >= 0) { _cachedRows.Add(r); _cachedWeights.Add(w); }
                else { _rest.Add(r); _restWeights.Add(w); }
            }
            int copyBase = plan.Copies > 1 ? ChooseCopy(members) * members : 0;
            _consumed.Clear();
            for (int i = 0; i < _rest.Count; i++) _consumed.Add(false);
            for (int i = 0; i < _rest.Count; i++)
            {
                if (_consumed[i]) continue;
                long r = _rest[i];
                _consumed[i] = true;
                if (!weighted && plan.Pairs.Length > 0 && plan.PairIndex.TryGetValue(r, out var partners) && TryPair(r, i, partners, out int pair))
                {
                    var p = plan.Pairs[pair];
                    Append(copyBase + p.Member, (uint)p.Slot, 1f);
                    mram++;
                    pairItems++;
                    continue;
                }
                int best = -1, bestSlot = 0;
                double bestCost = double.MaxValue;
                for (int x = plan.ReplicaStart[r]; x < plan.ReplicaStart[r + 1]; x++)
                {
                    int k = copyBase + plan.ReplicaMember[x];
                    double cost = _load[k] + (_bagBegin[k] < 0 ? NewSegmentPenalty : 0);
                    if (cost < bestCost) { bestCost = cost; best = k; bestSlot = plan.ReplicaSlot[x]; }
                }
                Append(best, (uint)bestSlot, _restWeights[i]);
                mram++;
            }
            for (int c = 0; c < _cachedRows.Count; c++)
            {
                long r = _cachedRows[c];
                // Least-loaded member, but one this bag already touches wins unless it is more than
                // NewSegmentPenalty items busier: a new segment costs a partial-sum write and pull.
                int best = copyBase;
                double bestCost = double.MaxValue;
                for (int k = copyBase; k < copyBase + members; k++)
                {
                    double cost = _load[k] + (_bagBegin[k] < 0 ? NewSegmentPenalty : 0);
                    if (cost < bestCost) { bestCost = cost; best = k; }
                }
                Append(best, PimLayout.ItemCacheBit | (uint)plan.CacheOrdinal[r], _cachedWeights[c]);
                cache++;
            }
            foreach (int k in _touched)
            {
                _memberSegments[k].Add((b, _bagBegin[k], _memberItems[k].Count - _bagBegin[k]));
                _bagBegin[k] = -1;
            }
        }

        // Expand members to DPUs: DPU k·T + t gets member k's segments and items for tile t (same MRAM slots on
        // every DPU of a member; cache ordinal c becomes cache vector c·T + t).
        int dpus = plan.DpuCount;
        if (result.SegmentsPerDpu.Length != dpus) { result.SegmentsPerDpu = new uint[dpus]; result.ItemsPerDpu = new uint[dpus]; }
        Array.Clear(result.SegmentsPerDpu);
        Array.Clear(result.ItemsPerDpu);
        int segTotal = 0, itemTotal = 0;
        for (int k = 0; k < g; k++) { segTotal += _memberSegments[k].Count * tiles; itemTotal += _memberItems[k].Count * tiles; }
        if (result.Segments.Length < segTotal) result.Segments = new PimHostSegment[segTotal];
        if (result.Items.Length < itemTotal) result.Items = new uint[itemTotal];
        if (!weighted) result.Weights = null;
        else if (result.Weights is null || result.Weights.Length < itemTotal) result.Weights = new float[itemTotal];
        int si = 0, ii = 0;
        for (int d = 0; d < plan.UsedDpus; d++)
        {
            int k = d / tiles, t = plan.TileOf(d);
            var items = _memberItems[k];
            if (weighted) _memberWeights[k].CopyTo(result.Weights!, ii);
            for (int x = 0; x < items.Count; x++)
            {
                uint it = items[x];
                result.Items[ii + x] = (it & PimLayout.ItemCacheBit) != 0
                    ? PimLayout.ItemCacheBit | (uint)(((it & ~PimLayout.ItemCacheBit) * tiles) + t)
                    : it;
            }
            foreach (var (bag, begin, count) in _memberSegments[k])
                result.Segments[si++] = new PimHostSegment((uint)bag, (uint)t, (uint)begin, (uint)count);
            result.SegmentsPerDpu[d] = (uint)_memberSegments[k].Count;
            result.ItemsPerDpu[d] = (uint)items.Count;
            ii += items.Count;
        }
        result.SegmentCount = si;
        result.ItemCount = ii;
        result.Bags = bags;
        result.MramItems = mram * tiles;
        result.CacheItems = cache * tiles;
        result.PairItems = pairItems * tiles;
        return result;
    }

    /// <summary>The copy that serves the next bag: least load (items plus the partial sums they open) summed over its
    /// members — this batch's, and the other tables' of the same launch when the load is shared — ties to the first from a cursor that moves past each choice so equal copies take turns.</summary>
    int ChooseCopy(int members)
    {
        int copies = _plan.Copies, tiles = _plan.Tiles;
        int best = 0;
        double bestCost = double.MaxValue;
        for (int i = 0; i < copies; i++)
        {
            int q = (_copyCursor + i) % copies;
            double cost = 0;
            for (int k = q * members; k < (q + 1) * members; k++)
                cost += _setLoad[k * tiles];
            if (cost < bestCost) { bestCost = cost; best = q; if (cost == 0) break; }
        }
        _copyCursor = (best + 1) % copies;
        return best;
    }

    bool TryPair(long r, int at, List<(long Partner, int Pair)> partners, out int pair)
    {
        foreach (var (partner, p) in partners)
            for (int j = at + 1; j < _rest.Count; j++)
                if (!_consumed[j] && _rest[j] == partner)
                {
                    _consumed[j] = true;
                    pair = p;
                    return true;
                }
        pair = -1;
        return false;
    }

    void Append(int member, uint item, float weight)
    {
        bool opens = _bagBegin[member] < 0;
        if (opens) { _bagBegin[member] = _memberItems[member].Count; _touched.Add(member); }
        int tiles = _plan.Tiles;
        for (int t = 0; t < tiles; t++) _setLoad[member * tiles + t] += 1 + (opens ? NewSegmentPenalty : 0);
        _memberItems[member].Add(item);
        _memberWeights[member].Add(weight);
        _load[member]++;
    }
}
