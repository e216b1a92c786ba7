using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>A LoRA adapter on one embedding table: effective row <c>W[i] + A[i]·B</c>, with B (rank × dim, fp32)
/// shared and A[i] (rank floats) kept only for rows updated since they were last merged into the base.
///
/// Threads: any number of readers (<see cref="LoraEmbeddingBag"/>, <see cref="ReadRow"/>,
/// <see cref="ReadEffectiveRow"/>) run concurrently with ONE writer thread (the trainer: every method documented as
/// "trainer"). A second concurrent writer is detected and refused with <see cref="InvalidOperationException"/>.
/// The protocol (docs/lora.md has the full argument):
/// <list type="bullet">
/// <item>Per-slot seqlock: the trainer makes a slot's counter odd, writes, makes it even (Volatile.Write = release,
/// Volatile.WriteBarrier after the odd store); a reader reads the counter (acquire), the owner row, A and W[row],
/// Volatile.ReadBarrier, the counter again, and retries if it was odd or changed. A merge writes W[row] inside the
/// section of the row's slot, so a reader sees old W + A or new W without A, never both or neither.</item>
/// <item>Versioned generations: (map, slot pool, B, rank) live in an <see cref="AdapterGeneration"/> published by one
/// reference write. A reader pins the generation for a whole batch (increment its reader count, re-check it is still
/// current, else back off and retry), so it never combines an old B with A vectors of a new rank. The trainer publishes
/// a new generation, issues a full fence, and waits for the old one's readers to drain before freeing it: readers never
/// wait for the trainer; the trainer waits at most one batch per rank change.</item>
/// <item>B updates within a generation replace the B array (never mutate it); readers take one snapshot per batch.</item>
/// </list>
/// This type owns the generation lifecycle, the reader API and the trainer entry points; the parts live apart:
/// <see cref="SlotSeqlock"/> (the slot seqlock, both sides), <see cref="AdapterGeneration"/> (map, pool, slot
/// allocation), <see cref="AdapterMerger"/> (merges and eviction), <see cref="AdapterUpdateRule"/> (Adagrad / SGD),
/// <see cref="RankFactorisation"/> (rank changes), <see cref="AdapterBudget"/> (the budget's shape).</summary>
internal sealed unsafe partial class TableAdapter : IDisposable
{
    AdapterGeneration? _gen;
    int _writer;
    long _clock;
    long _exhaustedAtClock = -1;
    long _version;
    Random _rng;
    long _rngDraws;   // values drawn from _rng since it was seeded: the generator's whole state, for persistence
    readonly List<RankEvent> _history = new();
    readonly AdapterMerger _merger;
    readonly Func<int, bool> _touchedByStep;

    public EmbeddingTable Table { get; }
    public AdapterOptions Options { get; }
    /// <summary>Maximum adapter bytes: BudgetFraction × table bytes.</summary>
    public long BudgetBytes { get; }
    /// <summary>The part of <see cref="BudgetBytes"/> the generations (slot pool, map, filter, B) are sized for: all of
    /// it less the hot set's reserved bytes.</summary>
    long SlotBudgetBytes { get; }
    /// <summary>Rows served from W itself (<see cref="AdapterOptions.HotRowFraction"/>), or null when that is off.</summary>
    readonly HotRowSet? _hot;
    /// <summary>True when the trainer writes W rows outside merges (hot rows, in-place rows): readers must then validate
    /// plain W reads against the write epoch.</summary>
    internal bool ServesHotRowsFromW => _hot is not null || Options.InPlaceRows;
    /// <summary>Rows served from W itself now (0 when <see cref="AdapterOptions.HotRowFraction"/> is 0).</summary>
    public int HotRows => _hot?.Count ?? 0;
    /// <summary>Row updates written straight into W for hot rows.</summary>
    public long HotRowUpdates { get; private set; }
    /// <summary>Indices of trained bags that were on a hot row / on a slot-served row. The live trainer trains on the
    /// events it served, so their ratio is the share of lookups served from W rather than found in the map.</summary>
    public long IndicesOnHotRows { get; private set; }
    /// <inheritdoc cref="IndicesOnHotRows"/>
    public long IndicesOnSlots { get; private set; }

    /// <summary>Per-row optimizer state carried across slots (see <see cref="RowAccumulators"/>), or null: a row
    /// that gets a slot starts from its stored accumulator instead of <see cref="AdapterOptions.AdagradInitialAccumulator"/>
    /// (a row the base never trained starts from 0 and takes the large first steps the base trainer would give it),
    /// and a merged row stores its accumulator back. Set before training starts.</summary>
    public RowAccumulators? RowState
    {
        get => _rowState;
        set
        {
            if (value is null && Options.InPlaceRows)
                throw new ArgumentException($"table '{Table.Name}': an adapter with in-place rows needs a row state", nameof(value));
            if (value is not null && value.Rows != Table.Rows)
                throw new ArgumentException($"table '{Table.Name}': row state holds {value.Rows} rows, the table has {Table.Rows}", nameof(value));
            _rowState = value;
        }
    }
    RowAccumulators? _rowState;

    public long Step { get; private set; }
    public long MergedRows => _merger.MergedRows;
    public long RejectedSteps { get; private set; }
    /// <summary>Row gradients dropped because a single step touched more distinct rows than the pool holds.</summary>
    public long DroppedRowUpdates { get; private set; }

    public TableAdapter(EmbeddingTable table, AdapterOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(table);
        ObjectDisposedException.ThrowIf(table.IsDisposed, table);
        Options = options ?? new AdapterOptions();
        Options.Validate(table.Name);
        if (Options.MaxRank > table.Dim)
            throw new ArgumentOutOfRangeException(nameof(options), Options.MaxRank, $"table '{table.Name}': adapter MaxRank {Options.MaxRank} exceeds the table dim {table.Dim} (a rank above dim adds nothing)");
        if (table.Rows > AdapterGeneration.MaxRows)
            throw new ArgumentOutOfRangeException(nameof(table), table.Rows, $"table '{table.Name}': {table.Rows} rows exceed the adapter map's limit of {AdapterGeneration.MaxRows}");
        Table = table;
        BudgetBytes = (long)Math.Floor(Options.BudgetFraction * table.ByteSize);
        SlotBudgetBytes = BudgetBytes;
        if (Options.HotRowFraction > 0)
        {
            // Each step re-quantises a hot row whole; int8 rowwise would lose every update below half a step
            // ((max − min)/255) with round-to-nearest, and stochastic rounding is not built.
            if (table.Storage == EmbeddingStorage.Int8Rowwise)
                throw new ArgumentException($"table '{table.Name}': adapter option HotRowFraction needs an fp32 or fp16 table (int8 rows would lose hot-row updates below half a quantisation step)", nameof(options));
            _hot = new HotRowSet((int)Math.Min(int.MaxValue / 2, (long)(Options.HotRowFraction * BudgetBytes) / HotRowSet.BytesFor(1, Options.InitialRank)), Options.InitialRank);
            SlotBudgetBytes = BudgetBytes - _hot.Bytes;
        }
        if (Options.InPlaceRows)
        {
            // Each in-place step re-quantises the row whole: int8 rowwise would lose every update below half a step.
            if (table.Storage == EmbeddingStorage.Int8Rowwise)
                throw new ArgumentException($"table '{table.Name}': adapter option InPlaceRows needs an fp32 or fp16 table (int8 rows would lose in-place updates below half a quantisation step)", nameof(options));
            // In-place rows continue a row-wise accumulator; without the base trainer's, every row starts from the
            // adapter's initial value (replaced by RowState's setter when the caller has the base's).
            var initial = new float[table.Rows];
            Array.Fill(initial, Options.AdagradInitialAccumulator);
            _rowState = new RowAccumulators(initial);
        }
        var (slots, mapCapacity) = SizeFor(SlotBudgetBytes, Options.InitialRank, table.Dim);
        if (slots < 1)
            throw new ArgumentException($"table '{table.Name}': the adapter budget of {BudgetBytes} bytes ({Options.BudgetFraction:P3} of {table.ByteSize}) cannot hold B at rank {Options.InitialRank} and one adapter row; raise BudgetFraction or lower InitialRank", nameof(options));
        _rng = new Random(Options.Seed);
        _merger = new AdapterMerger(this, table);
        _touchedByStep = slot => IsTouched(Current.Record(slot), slot);
        _gen = NewGeneration(slots, mapCapacity);
    }

    /// <summary>See <see cref="AdapterBudget.SizeFor"/>.</summary>
    internal static (int Slots, long MapCapacity) SizeFor(long budget, int rank, int dim) => AdapterBudget.SizeFor(budget, rank, dim);

    AdapterGeneration Current => _gen ?? throw new ObjectDisposedException(nameof(TableAdapter), $"adapter of table '{Table.Name}' is disposed");

    public int Rank => Current.Rank;
    /// <summary>Generation number; increases on every rank change, map rebuild and full merge.</summary>
    public long Version => Current.Version;
    public int ActiveRows => Current.Live;
    public int SlotCapacity => Current.SlotCapacity;
    /// <summary>Bytes the current generation holds (pool + map + B + B optimizer state + free list) plus the hot set's
    /// reserved capacity; ≤ <see cref="BudgetBytes"/>.</summary>
    public long AllocatedBytes => Current.Bytes + (_hot?.Bytes ?? 0);
    public double MemoryFraction => (double)AllocatedBytes / Table.ByteSize;

    public IReadOnlyList<RankEvent> History { get { lock (_history) return _history.ToArray(); } }

    // ------------------------------------------------------------------ readers

    /// <summary>Pins the current generation for one batch. Never waits for the trainer: it retries only when a new
    /// generation was published between its two reads.</summary>
    internal AdapterGeneration Pin()
    {
        while (true)
        {
            var g = Volatile.Read(ref _gen) ?? throw new ObjectDisposedException(nameof(TableAdapter), $"adapter of table '{Table.Name}' is disposed");
            Interlocked.Increment(ref g.Readers);                 // full fence: the re-read below happens after it
            if (ReferenceEquals(Volatile.Read(ref _gen), g)) return g;
            Interlocked.Decrement(ref g.Readers);                 // retired meanwhile: its memory may go away, use the new one
        }
    }

    internal static void Unpin(AdapterGeneration g) => Interlocked.Decrement(ref g.Readers);

    /// <summary>Reader side of the slot seqlock: if <paramref name="slot"/> still belongs to <paramref name="row"/>,
    /// copies its A into <paramref name="a"/> and W[row] (dequantised) into <paramref name="w"/> as one consistent
    /// snapshot and returns true; returns false (W untouched) when the slot was merged or reused meanwhile.</summary>
    internal static bool ReadSlot(AdapterGeneration g, int slot, long row, EmbeddingTable table, float* a, float* w)
    {
        var snapshot = new ARowSnapshot
        {
            A = new ASnapshot { Source = g.APointer(slot), Copy = a, Rank = g.Rank },
            Row = table.RowPointer(row), Storage = table.Storage, Dim = table.Dim, W = w,
        };
        return SlotSeqlock.TryRead(g.Record(slot), row, ref snapshot);
    }

    /// <summary>Copies row <paramref name="row"/>'s A vector (if it has one) into <paramref name="a"/> and returns its
    /// length (the rank at that moment), or 0 when the row has no adapter. <paramref name="a"/> must hold
    /// <see cref="AdapterOptions.MaxRank"/> floats (the rank can change between calls). Reader-safe.</summary>
    public int ReadRow(long row, Span<float> a)
    {
        CheckRow(row);
        if (a.Length < Options.MaxRank) throw new ArgumentException($"table '{Table.Name}': the A destination holds {a.Length} floats; it needs MaxRank = {Options.MaxRank}", nameof(a));
        var g = Pin();
        try
        {
            int slot = g.Find(row);
            if (slot < 0) return 0;
            float* w = stackalloc float[Table.Dim];
            fixed (float* pa = a)
                return ReadSlot(g, slot, row, Table, pa, w) ? g.Rank : 0;
        }
        finally { Unpin(g); }
    }

    /// <summary>The effective row W[row] + A[row]·B as one consistent snapshot. Reader-safe. An adapted row is read
    /// under its slot's seqlock; a row without a slot is read between two equal, even values of the write epoch,
    /// because a merge of the row (added and merged again after the probe found no slot) rewrites W with no slot
    /// section this reader could see. That read waits while a merge batch or a step's publish is in progress.</summary>
    public void ReadEffectiveRow(long row, Span<float> destination)
    {
        CheckRow(row);
        int dim = Table.Dim;
        if (destination.Length < dim) throw new ArgumentException($"table '{Table.Name}': destination holds {destination.Length} floats, row has {dim}", nameof(destination));
        var g = Pin();
        try
        {
            float[] b = Volatile.Read(ref g.B);
            float* a = stackalloc float[g.Rank];
            var spin = new SpinWait();
            fixed (float* pd = destination)
            fixed (float* pb = b)
            {
                while (true)
                {
                    int epoch = Volatile.Read(ref *g.WriteEpochPointer);
                    int slot = g.Find(row);
                    if (slot >= 0 && ReadSlot(g, slot, row, Table, a, pd))
                    {
                        for (int k = 0; k < g.Rank; k++) LoraMath.Axpy(a[k], pb + k * dim, pd, dim);
                        return;
                    }
                    if ((epoch & 1) == 0)
                    {
                        StoredRows.Dequantise(Table, row, pd);
                        Volatile.ReadBarrier();
                        if (Volatile.Read(ref *g.WriteEpochPointer) == epoch) return;
                    }
                    spin.SpinOnce(sleep1Threshold: -1);
                }
            }
        }
        finally { Unpin(g); }
    }

    /// <summary>A copy of B (rank × dim row-major) with its rank, as one snapshot. Reader-safe.</summary>
    public float[] CopyB(out int rank)
    {
        var g = Pin();
        try
        {
            rank = g.Rank;
            return (float[])Volatile.Read(ref g.B).Clone();
        }
        finally { Unpin(g); }
    }

    // ------------------------------------------------------------------ trainer: direct writes

    /// <summary>Trainer: sets A[row] (length = current <see cref="Rank"/>), allocating a slot (and merging the least
    /// recently updated rows if the pool is full).</summary>
    public void SetRow(long row, ReadOnlySpan<float> a)
    {
        EnterWriter();
        try
        {
            CheckRow(row);
            var g = Current;
            if (a.Length != g.Rank) throw new ArgumentException($"table '{Table.Name}': A row needs rank = {g.Rank} values, got {a.Length}", nameof(a));
            if (!LoraMath.AllFinite(a)) throw new ArgumentException($"table '{Table.Name}': A row {row} has a non-finite value", nameof(a));
            _clock++;
            int slot = FindOrAllocate(row, protectTouched: false);
            g = Current;
            SlotRecord* p = g.Record(slot);
            g.BeginEpochWrite();
            SlotSeqlock.BeginWrite(p);
            a.CopyTo(new Span<float>(g.APointer(slot), g.Rank));
            SlotSeqlock.EndWrite(p);
            g.EndEpochWrite();
            p->Stamp = _clock;
        }
        finally { ExitWriter(); }
    }

    /// <summary>Trainer: replaces B (rank × dim row-major, rank = current <see cref="Rank"/>) and resets its
    /// optimizer state. A wholesale replacement changes what every A row means, so it publishes a new generation
    /// (with a copy of the slot pool): a lookup uses the old B with the old A rows or the new B with the new ones.</summary>
    public void SetB(ReadOnlySpan<float> b)
    {
        EnterWriter();
        try
        {
            var g = Current;
            if (b.Length != g.Rank * Table.Dim) throw new ArgumentException($"table '{Table.Name}': B needs rank × dim = {g.Rank} × {Table.Dim} values, got {b.Length}", nameof(b));
            if (!LoraMath.AllFinite(b)) throw new ArgumentException($"table '{Table.Name}': B has a non-finite value", nameof(b));
            Publish(g.WithCopiedPool(++_version, b.ToArray()));
        }
        finally { ExitWriter(); }
    }

    // ------------------------------------------------------------------ trainer: merges

    /// <summary>The observer told about every merge batch (see <see cref="IAdapterMergeObserver"/>), or null. One at a
    /// time: setting a second one throws. Set it before training starts; a merge in progress keeps the observer it began with.</summary>
    public IAdapterMergeObserver? MergeObserver
    {
        get => _merger.Observer;
        set => _merger.Observer = value;
    }

    /// <summary>Trainer: merges the <paramref name="count"/> least recently updated rows into the base table.
    /// Returns how many were merged.</summary>
    public int MergeOldest(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        EnterWriter();
        try { return _merger.EvictOldest(Current, count, isProtected: null); }
        finally { ExitWriter(); }
    }

    /// <summary>Trainer: folds every adapter row into the base (W[i] += A[i]·B, quantised back) and resets the adapter
    /// to its initial rank with a fresh B (e.g. when a new base model arrives). Effective rows are unchanged up to the
    /// storage's quantisation.</summary>
    public void MergeAll()
    {
        EnterWriter();
        try
        {
            var g = Current;
            _merger.MergeAllLive(g);
            var (slots, mapCapacity) = SizeFor(SlotBudgetBytes, Options.InitialRank, Table.Dim);
            Publish(NewGeneration(slots, mapCapacity));
        }
        finally { ExitWriter(); }
    }

    /// <summary>The slot of <paramref name="row"/>, allocating one (A = 0, so the effective row is unchanged) if it
    /// has none. Returns -1 only when the pool is full of rows the current step protects.</summary>
    int FindOrAllocate(long row, bool protectTouched)
    {
        var g = Current;
        int slot = g.Find(row);
        if (slot >= 0) return slot;
        if (g.FreeCount == 0)
        {
            // A step that already found every slot protected will find that again: skip the O(slots) scan.
            if (protectTouched && _exhaustedAtClock == _clock) return -1;
            _merger.EvictOldest(g, Math.Max(1, (int)(g.SlotCapacity * Options.EvictFraction)), protectTouched ? _touchedByStep : null);
            if (g.FreeCount == 0)
            {
                if (protectTouched) _exhaustedAtClock = _clock;
                return -1;
            }
        }
        if (g.MapNeedsRebuild)
        {
            Publish(g.WithRebuiltMap(++_version));
            g = Current;
        }
        float initial = Options.AdagradInitialAccumulator;
        if (_rowState is { } state) initial = state[row];
        if (_hot?.Remove(row) is float hotAdagrad) initial = hotAdagrad;   // SetRow on a hot row: it is slot-served again
        return g.Allocate(row, _clock, initial);
    }

    /// <summary>Publishes <paramref name="next"/>, waits for readers of the old generation to drain, frees it.</summary>
    void Publish(AdapterGeneration next)
    {
        var old = Current;
        _staleFilterRows = 0;                // every new generation builds its filter from its live rows
        // Hot rows keep W = W_base + A_hot·B for the current B; a new B (rank change, SetB, MergeAll, restore) was not
        // trained with their A, so their A·B stays in W as a merge leaves it and their A restarts from zero.
        if (_hot is not null && (next.Rank != old.Rank || !ReferenceEquals(next.B, old.B))) _hot.Reshape(next.Rank, DropHot);
        Volatile.Write(ref _gen, next);
        Interlocked.MemoryBarrier();     // pairs with the reader's Interlocked.Increment: Dekker-style, see Pin()
        var spin = new SpinWait();
        while (Volatile.Read(ref old.Readers) != 0) spin.SpinOnce();
        old.Free();
    }

    /// <summary>An empty generation at the initial rank with a random B whose Adagrad state starts at
    /// <see cref="AdapterOptions.BAdagradInitialAccumulator"/>.</summary>
    AdapterGeneration NewGeneration(int slots, long mapCapacity)
    {
        var g = AdapterGeneration.CreateEmpty(++_version, Options.InitialRank, Table.Dim, slots, mapCapacity, RandomB(Options.InitialRank, Table.Dim));
        Array.Fill(g.BAdagrad, Options.BAdagradInitialAccumulator);
        return g;
    }

    float[] RandomB(int rank, int dim)
    {
        var b = new float[rank * dim];
        double sigma = Options.BInitScale / Math.Sqrt(dim);
        for (int i = 0; i < b.Length; i++) b[i] = (float)(sigma * Normal());
        return b;
    }

    double Normal()
    {
        double u1 = 1.0 - _rng.NextDouble(), u2 = _rng.NextDouble();
        _rngDraws += 2;
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void CheckRow(long row)
    {
        if ((ulong)row >= (ulong)Table.Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"table '{Table.Name}': row {row} is outside [0, {Table.Rows})");
    }

    void EnterWriter()
    {
        ObjectDisposedException.ThrowIf(_gen is null, this);
        if (Interlocked.CompareExchange(ref _writer, 1, 0) != 0)
            throw new InvalidOperationException($"table '{Table.Name}': two threads called trainer-side adapter methods at once; the adapter supports a single writer thread");
    }

    void ExitWriter() => Volatile.Write(ref _writer, 0);

    /// <summary>Frees the adapter's native memory. No lookup may be running on it (the caller's shutdown order).</summary>
    public void Dispose()
    {
        var g = Interlocked.Exchange(ref _gen, null);
        g?.Free();
    }
}
