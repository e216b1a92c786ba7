namespace LiveDlrm.Pim;

/// <summary>The UpDLRM partitioning strategies.</summary>
internal enum PimStrategy
{
    /// <summary>Rows in contiguous ranges, one range per DPU (column tiles only when dim exceeds one DMA slice).</summary>
    UniformRowWise,
    /// <summary>Narrow column slices (8-byte reads, as in the public column-wise PIM embedding work): each lookup
    /// touches many DPUs with tiny transfers.</summary>
    UniformColumnWise,
    /// <summary>Rows placed by access frequency so expected lookups per DPU balance; hot rows replicated.</summary>
    NonUniform,
    /// <summary>Non-uniform plus the hottest rows replicated into every DPU's WRAM cache and precomputed MRAM sums
    /// of frequently co-occurring row pairs, balanced jointly (cache lookups can run on any DPU).</summary>
    CacheAware,
}

/// <summary>Knobs of the frequency-based partitioners.</summary>
internal sealed record PimPlanOptions
{
    /// <summary>Replicate hot rows (non-uniform, cache-aware).</summary>
    public bool Replicate { get; init; } = true;
    /// <summary>A row is split into replicas until each carries at most this fraction of a DPU's fair share of
    /// lookups: the greedy placement then ends within about this fraction of perfect balance.</summary>
    public double ReplicaShare { get; init; } = 0.02;
    /// <summary>WRAM cache bytes for hot rows (cache-aware); at most <see cref="PimLayout.WramCacheBytes"/>.</summary>
    public int CacheBytes { get; init; } = PimLayout.WramCacheBytes;
    /// <summary>Most precomputed pair sums (cache-aware); 0 disables them.</summary>
    public int MaxPairs { get; init; } = 1024;
    /// <summary>Pairs are chosen among this many hottest uncached rows.</summary>
    public int PairCandidates { get; init; } = 2048;
    /// <summary>A pair must co-occur in at least this many bags of the profile.</summary>
    public long MinPairCount { get; init; } = 2;
    /// <summary>MRAM bytes per DPU for stored vectors (lower it to test capacity handling).</summary>
    public long MramCapacityBytes { get; init; } = PimLayout.MramTableBytes;
    /// <summary>Whole copies of the placement (bag-local replication): the DPUs form this many replica groups, each
    /// holding every row of the table, and the router sends each bag to one group, so a bag's rows meet on few DPUs
    /// (one partial sum per bag and DPU it touches) and bags spread over the groups. 1: one placement over all DPUs.</summary>
    public int Copies { get; init; } = 1;
}

/// <summary>Where every row of one table lives on a set of DPUs. DPUs form <see cref="Copies"/> replica groups of
/// <see cref="GroupSize"/> members × <see cref="Tiles"/> column tiles: DPU <c>(q·GroupSize + k)·Tiles + t</c> holds
/// column tile t of member k's stored vectors in copy q, so all tiles and copies mirror one row placement over members
/// 0..GroupSize-1 (the router picks one copy per bag).</summary>
internal sealed class PimPlan
{
    public PimStrategy Strategy { get; }
    public long Rows { get; }
    public int Dim { get; }
    public int DpuCount { get; }
    public int Tiles { get; }
    public int SliceFloats { get; }
    public int GroupSize { get; }
    /// <summary>Replica groups, each a full copy of the placement (see <see cref="PimPlanOptions.Copies"/>).</summary>
    public int Copies { get; }
    public long MramCapacityBytes { get; }
    public int SlotBytes => SliceFloats * sizeof(float);
    /// <summary>DPUs that hold data (Copies × GroupSize × Tiles ≤ DpuCount).</summary>
    public int UsedDpus => Copies * GroupSize * Tiles;

    /// <summary>Replicas of row r: members ReplicaMember[ReplicaStart[r]..ReplicaStart[r+1]) at ReplicaSlot[...].</summary>
    internal int[] ReplicaStart { get; }
    internal int[] ReplicaMember { get; }
    internal int[] ReplicaSlot { get; }
    /// <summary>Stored vectors of each member: (RowA, RowB) with RowB = -1 for a plain row.</summary>
    internal List<(long RowA, long RowB)>[] MemberSlots { get; }
    /// <summary>Cache ordinal of row r, or -1. Cache vector of (ordinal c, tile t) is c·Tiles + t.</summary>
    internal int[] CacheOrdinal { get; }
    public long[] CachedRows { get; }
    /// <summary>Precomputed pair sums: rows, member and slot.</summary>
    internal (long A, long B, int Member, int Slot)[] Pairs { get; }
    /// <summary>Partners of a row that have a pair sum (index into <see cref="Pairs"/>).</summary>
    internal Dictionary<long, List<(long Partner, int Pair)>> PairIndex { get; }
    /// <summary>Expected lookups (vector reads from MRAM or cache) per member, from the access profile.</summary>
    public double[] ExpectedMemberLookups { get; }

    internal PimPlan(PimStrategy strategy, long rows, int dim, int dpuCount, int tiles, int sliceFloats, int groupSize, long mramCapacityBytes,
                     int[] replicaStart, int[] replicaMember, int[] replicaSlot, List<(long, long)>[] memberSlots,
                     int[] cacheOrdinal, long[] cachedRows, (long, long, int, int)[] pairs, double[] expectedMemberLookups, int copies = 1)
    {
        Strategy = strategy; Rows = rows; Dim = dim; DpuCount = dpuCount; Tiles = tiles; SliceFloats = sliceFloats; GroupSize = groupSize;
        Copies = copies;
        MramCapacityBytes = mramCapacityBytes;
        ReplicaStart = replicaStart; ReplicaMember = replicaMember; ReplicaSlot = replicaSlot; MemberSlots = memberSlots;
        CacheOrdinal = cacheOrdinal; CachedRows = cachedRows; Pairs = pairs; ExpectedMemberLookups = expectedMemberLookups;
        PairIndex = new Dictionary<long, List<(long, int)>>();
        for (int p = 0; p < pairs.Length; p++)
        {
            AddPartner(pairs[p].Item1, pairs[p].Item2, p);
            AddPartner(pairs[p].Item2, pairs[p].Item1, p);
        }
    }

    void AddPartner(long row, long partner, int pair)
    {
        if (!PairIndex.TryGetValue(row, out var list)) PairIndex[row] = list = new List<(long, int)>(2);
        list.Add((partner, pair));
    }

    public int DpuOf(int member, int tile, int copy = 0) => (copy * GroupSize + member) * Tiles + tile;
    /// <summary>The template member a DPU holds (its copy's member).</summary>
    public int MemberOf(int dpu) => dpu / Tiles % GroupSize;
    public int CopyOf(int dpu) => dpu / Tiles / GroupSize;
    public int TileOf(int dpu) => dpu % Tiles;
    /// <summary>Stored vectors on a DPU (0 for DPUs beyond <see cref="UsedDpus"/>).</summary>
    public int SlotsOn(int dpu) => dpu < UsedDpus ? MemberSlots[MemberOf(dpu)].Count : 0;
    public long MramBytesOn(int dpu) => (long)SlotsOn(dpu) * SlotBytes;
    public int CacheVectors => CachedRows.Length * Tiles;
    public int ReplicaCount(long row) => ReplicaStart[row + 1] - ReplicaStart[row];

    /// <summary>Expected lookups per DPU (each lookup reads one vector on one DPU of every tile group; the copies share
    /// the bags).</summary>
    public double[] ExpectedDpuLookups()
    {
        var perDpu = new double[DpuCount];
        for (int d = 0; d < UsedDpus; d++) perDpu[d] = ExpectedMemberLookups[MemberOf(d)] / Copies;
        return perDpu;
    }

    /// <summary>max / mean of expected lookups over the DPUs that hold data.</summary>
    public double ExpectedImbalance
    {
        get
        {
            double max = ExpectedMemberLookups.Max(), mean = ExpectedMemberLookups.Average();
            return mean > 0 ? max / mean : 1.0;
        }
    }

    /// <summary>Checks the partition invariants; throws <see cref="InvalidOperationException"/> naming the first violation.</summary>
    public void Validate()
    {
        long capacitySlots = MramCapacityBytes / SlotBytes;
        if (SliceFloats < 2 || SliceFloats % 2 != 0 || SliceFloats > PimLayout.MaxSliceFloats)
            throw new InvalidOperationException($"plan {Strategy}: slice of {SliceFloats} floats is not an even width in [2, {PimLayout.MaxSliceFloats}]");
        if ((long)Tiles * SliceFloats < Dim || (long)(Tiles - 1) * SliceFloats >= Dim)
            throw new InvalidOperationException($"plan {Strategy}: {Tiles} tiles of {SliceFloats} floats do not cover dim {Dim} exactly");
        if (Copies < 1 || GroupSize < 1 || (long)Copies * GroupSize * Tiles > DpuCount)
            throw new InvalidOperationException($"plan {Strategy}: {Copies} copies x {GroupSize} members x {Tiles} tiles on {DpuCount} DPUs");
        for (int k = 0; k < GroupSize; k++)
            if (MemberSlots[k].Count > capacitySlots)
                throw new InvalidOperationException($"plan {Strategy}: member {k} holds {MemberSlots[k].Count} vectors, MRAM capacity is {capacitySlots}");
        if ((long)CacheVectors * SlotBytes > PimLayout.WramCacheBytes)
            throw new InvalidOperationException($"plan {Strategy}: {CacheVectors} cache vectors x {SlotBytes} B exceed the WRAM cache of {PimLayout.WramCacheBytes} B");
        for (int c = 0; c < CachedRows.Length; c++)
            if (CacheOrdinal[CachedRows[c]] != c)
                throw new InvalidOperationException($"plan {Strategy}: cached row {CachedRows[c]} does not map back to cache ordinal {c}");
        var seen = new HashSet<int>();
        for (long r = 0; r < Rows; r++)
        {
            int n = ReplicaCount(r);
            if (n == 0 && CacheOrdinal[r] < 0)
                throw new InvalidOperationException($"plan {Strategy}: row {r} is placed nowhere (no MRAM replica, not cached)");
            seen.Clear();
            for (int i = ReplicaStart[r]; i < ReplicaStart[r + 1]; i++)
            {
                int k = ReplicaMember[i], s = ReplicaSlot[i];
                if (k < 0 || k >= GroupSize || !seen.Add(k))
                    throw new InvalidOperationException($"plan {Strategy}: row {r} has replica on member {k} (out of range or twice)");
                if (s < 0 || s >= MemberSlots[k].Count || MemberSlots[k][s] != (r, -1L))
                    throw new InvalidOperationException($"plan {Strategy}: row {r} replica slot {s} on member {k} does not hold it");
            }
        }
        foreach (var (a, b, k, s) in Pairs)
            if (k < 0 || k >= GroupSize || s < 0 || s >= MemberSlots[k].Count || MemberSlots[k][s] != (a, b))
                throw new InvalidOperationException($"plan {Strategy}: pair ({a}, {b}) slot {s} on member {k} does not hold it");
    }
}
