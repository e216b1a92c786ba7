namespace LiveDlrm.Pim;

/// <summary>Builds <see cref="PimPlan"/>s (UpDLRM: uniform → non-uniform by frequency → cache-aware non-uniform).
/// Capacity is checked before anything is allocated, so an oversized table fails fast with the sizes in the message.</summary>
internal static class PimPartitioner
{
    public static PimPlan Build(PimStrategy strategy, AccessProfile profile, int dim, int dpus, PimPlanOptions? options = null) => strategy switch
    {
        PimStrategy.UniformRowWise => UniformRowWise(profile.Rows, dim, dpus, profile, options),
        PimStrategy.UniformColumnWise => UniformColumnWise(profile.Rows, dim, dpus, profile, options),
        PimStrategy.NonUniform => NonUniform(profile, dim, dpus, options),
        PimStrategy.CacheAware => CacheAware(profile, dim, dpus, options),
        _ => throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "unknown PIM strategy"),
    };

    /// <summary>Throws the capacity error a row-wise plan of this table would throw, without building anything
    /// (callers check before synthesising a profile for a table that cannot fit).</summary>
    public static void EnsureFits(long rows, int dim, int dpus, PimPlanOptions? options = null) =>
        Check(rows, dim, dpus, RowWiseGeometry(dim), options ?? new PimPlanOptions(), "PIM");

    /// <summary>Widest slices that fit one DMA: tiles = ⌈dim / 128⌉.</summary>
    static (int Tiles, int Slice) RowWiseGeometry(int dim)
    {
        int tiles = (dim + PimLayout.MaxSliceFloats - 1) / PimLayout.MaxSliceFloats;
        return (tiles, Even((dim + tiles - 1) / tiles));
    }

    /// <summary>8-byte slices (2 floats), fewer and wider only when there are not enough DPUs for one tile each.</summary>
    static (int Tiles, int Slice) ColumnWiseGeometry(int dim, int dpus)
    {
        int slice = 2;
        if ((dim + 1) / 2 > dpus) slice = Even((dim + dpus - 1) / dpus);
        slice = Math.Min(slice, PimLayout.MaxSliceFloats);
        return ((dim + slice - 1) / slice, slice);
    }

    static int Even(int n) => Math.Max(2, (n + 1) & ~1);

    static (int Tiles, int Slice, int Group, long CapacitySlots) Check(long rows, int dim, int dpus, (int Tiles, int Slice) geometry, PimPlanOptions o, string strategy)
    {
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "a table has at least one row");
        if (dim <= 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, "dim must be positive");
        if (dpus <= 0) throw new ArgumentOutOfRangeException(nameof(dpus), dpus, "at least one DPU");
        if (o.MramCapacityBytes <= 0 || o.MramCapacityBytes > PimLayout.MramTableBytes)
            throw new ArgumentOutOfRangeException(nameof(o.MramCapacityBytes), o.MramCapacityBytes, $"MRAM capacity per DPU must be in (0, {PimLayout.MramTableBytes}]");
        var (tiles, slice) = geometry;
        if (o.Copies < 1) throw new ArgumentOutOfRangeException(nameof(o.Copies), o.Copies, "at least one copy");
        if ((long)tiles * o.Copies > dpus)
            throw new ArgumentException($"{strategy}: dim {dim} needs {tiles} column tiles of {slice} floats in each of {o.Copies} copies, but only {dpus} DPUs were given");
        int group = dpus / tiles / o.Copies;
        long capacitySlots = o.MramCapacityBytes / (slice * sizeof(float));
        long perMember = (rows + group - 1) / group;
        if (rows > Array.MaxLength || perMember > capacitySlots)
        {
            double need = (double)rows * tiles * slice * sizeof(float);
            throw new ArgumentException(
                $"{strategy}: table of {rows} rows x dim {dim} needs {need / (1 << 20):F1} MiB of MRAM ({perMember} vectors of {slice * 4} B per DPU), " +
                $"but {dpus} DPUs hold {(double)o.MramCapacityBytes * group * tiles / (1 << 20):F1} MiB ({capacitySlots} vectors each): use more DPUs");
        }
        return (tiles, slice, group, capacitySlots);
    }

    public static PimPlan UniformRowWise(long rows, int dim, int dpus, AccessProfile? profile = null, PimPlanOptions? options = null) =>
        Uniform(PimStrategy.UniformRowWise, rows, dim, dpus, RowWiseGeometry(dim), profile, options ?? new PimPlanOptions());

    public static PimPlan UniformColumnWise(long rows, int dim, int dpus, AccessProfile? profile = null, PimPlanOptions? options = null) =>
        Uniform(PimStrategy.UniformColumnWise, rows, dim, dpus, ColumnWiseGeometry(dim, dpus), profile, options ?? new PimPlanOptions());

    static PimPlan Uniform(PimStrategy strategy, long rows, int dim, int dpus, (int, int) geometry, AccessProfile? profile, PimPlanOptions o)
    {
        var (tiles, slice, group, _) = Check(rows, dim, dpus, geometry, o, strategy.ToString());
        CheckProfile(profile, rows);
        int n = (int)rows;
        var start = new int[n + 1];
        var member = new int[n];
        var slot = new int[n];
        var slots = NewSlots(group);
        var expected = new double[group];
        for (int k = 0; k < group; k++)
        {
            long first = rows * k / group, end = rows * (k + 1) / group;
            for (long r = first; r < end; r++)
            {
                member[r] = k;
                slot[r] = slots[k].Count;
                slots[k].Add((r, -1));
                if (profile is not null) expected[k] += profile.Counts[r];
            }
        }
        for (int r = 0; r <= n; r++) start[r] = r;
        return new PimPlan(strategy, rows, dim, dpus, tiles, slice, group, o.MramCapacityBytes, start, member, slot, slots,
                           Filled(n, -1), [], [], expected, o.Copies);
    }

    public static PimPlan NonUniform(AccessProfile profile, int dim, int dpus, PimPlanOptions? options = null) =>
        Frequency(PimStrategy.NonUniform, profile, dim, dpus, options ?? new PimPlanOptions());

    public static PimPlan CacheAware(AccessProfile profile, int dim, int dpus, PimPlanOptions? options = null) =>
        Frequency(PimStrategy.CacheAware, profile, dim, dpus, options ?? new PimPlanOptions());

    static PimPlan Frequency(PimStrategy strategy, AccessProfile profile, int dim, int dpus, PimPlanOptions o)
    {
        ArgumentNullException.ThrowIfNull(profile);
        long rows = profile.Rows;
        var (tiles, slice, group, capacitySlots) = Check(rows, dim, dpus, RowWiseGeometry(dim), o, strategy.ToString());
        if (o.ReplicaShare <= 0 || o.ReplicaShare > 1) throw new ArgumentOutOfRangeException(nameof(o.ReplicaShare), o.ReplicaShare, "must be in (0, 1]");
        int n = (int)rows;
        long[] counts = profile.Counts;
        double total = profile.TotalLookups;

        // Rows by descending count (ties by id, deterministic).
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        Array.Sort(order, (a, b) => counts[a] != counts[b] ? counts[b].CompareTo(counts[a]) : a.CompareTo(b));

        // Cache: the hottest rows, every tile of each, into every DPU's WRAM.
        var cacheOrdinal = Filled(n, -1);
        var cached = new List<long>();
        double cacheLoad = 0;
        if (strategy == PimStrategy.CacheAware)
        {
            if (o.CacheBytes < 0 || o.CacheBytes > PimLayout.WramCacheBytes)
                throw new ArgumentOutOfRangeException(nameof(o.CacheBytes), o.CacheBytes, $"cache bytes must be in [0, {PimLayout.WramCacheBytes}]");
            int cacheRows = o.CacheBytes / (tiles * slice * sizeof(float));
            for (int i = 0; i < Math.Min(cacheRows, n) && counts[order[i]] > 0; i++)
            {
                cacheOrdinal[order[i]] = cached.Count;
                cached.Add(order[i]);
                cacheLoad += counts[order[i]];
            }
        }

        // Greedy longest-processing-time placement with replication: each row goes to the least-loaded members
        // that still have room; a hot row is split over enough members that no replica carries more than
        // ReplicaShare of a member's fair share (the whole load, cache included, over the group).
        double fair = total / group;
        double piece = Math.Max(1e-9, o.ReplicaShare * fair);
        var slots = NewSlots(group);
        var load = new double[group];
        var heap = new PriorityQueue<int, (double Load, int Member)>();
        for (int k = 0; k < group; k++) heap.Enqueue(k, (0, k));
        var start = new int[n + 1];
        var repMember = new List<int>(n);
        var repSlot = new List<int>(n);
        var rowReplicas = new (int Member, int Slot)[n][];
        var picked = new List<int>(group);
        int coldCursor = 0;
        // Replicas beyond the first copy only use MRAM no row needs: hottest rows get them first.
        long spare = group * capacitySlots - (n - cached.Count);
        foreach (int r in order)
        {
            if (cacheOrdinal[r] >= 0) continue;
            long c = counts[r];
            if (c == 0)
            {
                // Never looked up in the profile: spread for memory balance, round-robin over members with room.
                for (int tries = 0; slots[coldCursor].Count >= capacitySlots; tries++)
                {
                    if (tries == group) throw Full(strategy, rows, dim, dpus);
                    coldCursor = (coldCursor + 1) % group;
                }
                rowReplicas[r] = [(coldCursor, slots[coldCursor].Count)];
                slots[coldCursor].Add((r, -1));
                coldCursor = (coldCursor + 1) % group;
                continue;
            }
            int want = o.Replicate ? (int)Math.Clamp(Math.Ceiling(c / piece), 1, group) : 1;
            want = (int)Math.Min(want, 1 + Math.Max(0, spare));
            spare -= want - 1;
            picked.Clear();
            while (picked.Count < want && heap.TryDequeue(out int k, out _)) picked.Add(k);
            if (picked.Count == 0) throw Full(strategy, rows, dim, dpus);
            spare += want - picked.Count;   // fewer members had room than wanted
            var reps = new (int, int)[picked.Count];
            for (int i = 0; i < picked.Count; i++)
            {
                int k = picked[i];
                reps[i] = (k, slots[k].Count);
                slots[k].Add((r, -1));
                load[k] += (double)c / picked.Count;
                if (slots[k].Count < capacitySlots) heap.Enqueue(k, (load[k], k));
            }
            rowReplicas[r] = reps;
        }
        for (int r = 0; r < n; r++)
        {
            start[r] = repMember.Count;
            if (rowReplicas[r] is { } reps)
                foreach (var (k, s) in reps) { repMember.Add(k); repSlot.Add(s); }
        }
        start[n] = repMember.Count;

        var pairs = strategy == PimStrategy.CacheAware && o.MaxPairs > 0
            ? ChoosePairs(profile, order, cacheOrdinal, o, slots, load, capacitySlots)
            : [];

        // Cache lookups can run on any DPU: the router sends them to the least-loaded one, which water-fills.
        var expected = WaterFill(load, cacheLoad);
        return new PimPlan(strategy, rows, dim, dpus, tiles, slice, group, o.MramCapacityBytes, start, repMember.ToArray(), repSlot.ToArray(),
                           slots, cacheOrdinal, cached.ToArray(), pairs, expected, o.Copies);
    }

    /// <summary>Bag-local copies for tables that share one DPU set's MRAM: every table starts whole on one DPU per copy
    /// (one partial sum per bag); while the tables' bytes per DPU exceed <paramref name="fill"/> of the MRAM, the table
    /// with the most bytes per DPU is spread over twice as many members. Returns per table the copies and the MRAM
    /// share it may use (its bytes per DPU over the total, times the fill), so hot-row replicas within a copy cannot
    /// over-commit the DPU's MRAM.</summary>
    public static (int Copies, long MramShareBytes)[] BagLocalCopies(IReadOnlyList<(long Rows, int Dim)> tables, int dpus, double fill = 0.75)
    {
        if (fill <= 0 || fill > 1) throw new ArgumentOutOfRangeException(nameof(fill), fill, "must be in (0, 1]");
        int n = tables.Count;
        var tiles = new int[n];
        var group = new int[n];
        var perDpu = new double[n];
        for (int i = 0; i < n; i++)
        {
            var (t, slice) = RowWiseGeometry(tables[i].Dim);
            tiles[i] = t;
            group[i] = 1;
            perDpu[i] = (double)tables[i].Rows * slice * sizeof(float);
        }
        double budget = fill * PimLayout.MramTableBytes;
        while (perDpu.Sum() > budget)
        {
            int widest = Array.IndexOf(perDpu, perDpu.Max());
            if ((long)group[widest] * 2 * tiles[widest] > dpus)
                throw new ArgumentException($"{n} tables need {perDpu.Sum() * group.Max() / (1 << 20):F0} MiB per copy; {dpus} DPUs cannot hold one copy each within {fill:P0} of their MRAM");
            group[widest] *= 2;
            perDpu[widest] /= 2;
        }
        double total = perDpu.Sum();
        var result = new (int, long)[n];
        for (int i = 0; i < n; i++)
            result[i] = (Math.Max(1, dpus / tiles[i] / group[i]), (long)(budget * perDpu[i] / total) / 8 * 8);
        return result;
    }

    /// <summary>Pairs of uncached hot rows that co-occur in bags of the profile most often get a precomputed sum
    /// (one MRAM read instead of two), stored on the least-loaded member with room.</summary>
    static (long, long, int, int)[] ChoosePairs(AccessProfile profile, int[] order, int[] cacheOrdinal, PimPlanOptions o,
                                                List<(long, long)>[] slots, double[] load, long capacitySlots)
    {
        var candidate = new HashSet<long>();
        foreach (int r in order)
        {
            if (candidate.Count >= o.PairCandidates || profile.Counts[r] == 0) break;
            if (cacheOrdinal[r] < 0) candidate.Add(r);
        }
        var together = new Dictionary<(long, long), long>();
        var inBag = new List<long>(32);
        foreach (var batch in profile.Batches)
            for (int b = 0; b < batch.Bags; b++)
            {
                inBag.Clear();
                for (long i = batch.Offsets[b]; i < batch.Offsets[b + 1] && inBag.Count < 32; i++)
                    if (candidate.Contains(batch.Indices[i]) && !inBag.Contains(batch.Indices[i])) inBag.Add(batch.Indices[i]);
                for (int x = 0; x < inBag.Count; x++)
                    for (int y = x + 1; y < inBag.Count; y++)
                    {
                        var key = inBag[x] < inBag[y] ? (inBag[x], inBag[y]) : (inBag[y], inBag[x]);
                        together[key] = together.GetValueOrDefault(key) + 1;
                    }
            }
        var chosen = together.Where(kv => kv.Value >= o.MinPairCount)
                             .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1).ThenBy(kv => kv.Key.Item2)
                             .Take(o.MaxPairs).ToList();
        var result = new List<(long, long, int, int)>(chosen.Count);
        foreach (var ((a, b), _) in chosen)
        {
            int best = -1;
            for (int k = 0; k < slots.Length; k++)
                if (slots[k].Count < capacitySlots && (best < 0 || load[k] < load[best])) best = k;
            if (best < 0) break;   // MRAM full: pairs are an optimisation, stop adding them
            result.Add((a, b, best, slots[best].Count));
            slots[best].Add((a, b));
        }
        return result.ToArray();
    }

    /// <summary>Levels the lowest loads with <paramref name="extra"/> freely placeable lookups.</summary>
    static double[] WaterFill(double[] load, double extra)
    {
        var result = (double[])load.Clone();
        if (extra <= 0) return result;
        var sorted = load.OrderBy(x => x).ToArray();
        double level = sorted[0], remaining = extra;
        int i = 1;
        while (true)
        {
            double next = i < sorted.Length ? sorted[i] : double.PositiveInfinity;
            double cost = (next - level) * i;
            if (cost >= remaining) { level += remaining / i; break; }
            remaining -= cost;
            level = next;
            i++;
        }
        for (int k = 0; k < result.Length; k++) result[k] = Math.Max(result[k], level);
        return result;
    }

    static ArgumentException Full(PimStrategy strategy, long rows, int dim, int dpus) =>
        new($"{strategy}: table of {rows} rows x dim {dim} with its replicas does not fit the MRAM of {dpus} DPUs: use more DPUs or less replication");

    static void CheckProfile(AccessProfile? profile, long rows)
    {
        if (profile is not null && profile.Rows != rows)
            throw new ArgumentException($"access profile '{profile.Description}' covers {profile.Rows} rows, the table has {rows}");
    }

    static List<(long, long)>[] NewSlots(int group)
    {
        var slots = new List<(long, long)>[group];
        for (int k = 0; k < group; k++) slots[k] = new List<(long, long)>();
        return slots;
    }

    static int[] Filled(int n, int value)
    {
        var a = new int[n];
        Array.Fill(a, value);
        return a;
    }
}
