using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

internal sealed unsafe partial class TableAdapter
{
    // Per-step trainer scratch, sized by the batch (distinct rows of one step), not by the table.
    int[] _touched = new int[256];
    int _touchedCount;
    float[] _rowGrad = new float[256 * 16];
    float[] _newA = new float[256 * 16];
    float[] _newAdagrad = new float[256];
    float[] _bagGradA = Array.Empty<float>();
    float[] _dB = Array.Empty<float>();
    float[] _pooledA = Array.Empty<float>();
    int[] _slotOf = Array.Empty<int>();   // pass 1's slots of a chunk of indices, from _slotBase
    int _slotBase;
    // Hot rows of one step (rows served from W): row, summed rank-space gradient, new accumulator, new A, new W row.
    long[] _hotTouched = new long[64];
    int _hotCount;
    float[] _hotGrad = new float[64 * 16];
    float[] _hotAdagrad = new float[64];
    float[] _hotNewA = new float[64 * 16];
    float[] _hotW = Array.Empty<float>();
    float[] _bDelta = Array.Empty<float>();   // B_new − B_old of the step, for the hot rows the step did not touch
    long[] _hotWritten = Array.Empty<long>();
    readonly List<int> _promote = new();
    int _staleFilterRows;   // rows promoted since the current generation's filter was built

    /// <summary>The step-scratch index of hot row <paramref name="row"/>, or -1 when it is not hot.</summary>
    int TouchHot(long row, int r)
    {
        ref var e = ref _hot!.Find(row);
        if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref e)) return -1;
        if (e.TouchClock == _clock) return e.Touch;
        int t = _hotCount++;
        if (t == _hotTouched.Length) { Array.Resize(ref _hotTouched, t * 2); Array.Resize(ref _hotAdagrad, t * 2); }
        if ((t + 1) * r > _hotGrad.Length)
        {
            Array.Resize(ref _hotGrad, Math.Max(_hotGrad.Length * 2, (t + 1) * r));
            Array.Resize(ref _hotNewA, _hotGrad.Length);
        }
        _hotTouched[t] = row;
        new Span<float>(_hotGrad, t * r, r).Clear();
        e.Touch = t;
        e.TouchClock = _clock;
        return t;
    }

    bool IsTouched(SlotRecord* record, int slot)
    {
        int t = record->Touch;
        return (uint)t < (uint)_touchedCount && _touched[t] == slot;
    }

    /// <summary>The scratch index of <paramref name="slot"/> in this step, assigning one (zeroed) on first touch.</summary>
    int Touch(AdapterGeneration g, int slot)
    {
        SlotRecord* p = g.Record(slot);
        if (IsTouched(p, slot)) return p->Touch;
        int t = _touchedCount++;
        if (t == _touched.Length)
        {
            Array.Resize(ref _touched, t * 2);
            Array.Resize(ref _newAdagrad, t * 2);
        }
        int r = g.Rank;
        if ((t + 1) * r > _rowGrad.Length)
        {
            Array.Resize(ref _rowGrad, Math.Max(_rowGrad.Length * 2, (t + 1) * r));
            Array.Resize(ref _newA, _rowGrad.Length);
        }
        _touched[t] = slot;
        new Span<float>(_rowGrad, t * r, r).Clear();
        p->Touch = t;
        return t;
    }

    /// <summary>Trainer: one optimizer step from the loss gradient at the pooled outputs of a batch.
    /// With <c>pooled_b = s_b · Σ_j w_j (W[i_j] + A[i_j]·B)</c> (s_b = 1/len for Mean, else 1) and
    /// <c>g_b = dL/dpooled_b</c> (<paramref name="bagGradients"/>, bags × dim row-major):
    /// <c>dA[i] = Σ_{(b,j): i_j = i} s_b·w_j·(B·g_b)</c> (a rank vector per touched row, duplicates summed) and
    /// <c>dB = Σ_b (s_b·Σ_j w_j A[i_j])ᵀ·g_b</c>, both from the values before the step. Then row-wise Adagrad (or SGD)
    /// on every touched A row, Adagrad (or SGD) on B. Rows without an adapter get a slot (A = 0) first.
    /// Returns false, counting it in <see cref="RejectedSteps"/> and changing no effective row, when a gradient, a
    /// weight or a computed update is NaN/Inf. Bad shapes or indices throw before anything changes.
    /// Every <see cref="AdapterOptions.RankAdaptInterval"/> accepted steps it calls <see cref="AdaptRank"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool ApplyGradients(ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, ReadOnlySpan<float> bagGradients,
                               PoolingMode pooling = PoolingMode.Sum, ReadOnlySpan<float> weights = default)
    {
        EnterWriter();
        try
        {
            int dim = Table.Dim;
            int bags = EmbeddingBagValidation.Validate(Table, indices, offsets, bagGradients.Length, pooling, weights);
            if (bagGradients.Length != (long)bags * dim)
                throw new ArgumentException($"table '{Table.Name}': bagGradients holds {bagGradients.Length} floats, {bags} bags × dim {dim} need exactly {(long)bags * dim}", nameof(bagGradients));
            if (!LoraMath.AllFinite(bagGradients) || !LoraMath.AllFinite(weights)) { RejectedSteps++; return false; }

            var g = Current;
            int r = g.Rank;
            bool weighted = pooling == PoolingMode.WeightedSum;
            EnsureLength(ref _bagGradA, bags * r);
            EnsureLength(ref _dB, r * dim);
            EnsureLength(ref _pooledA, r);
            float[] b = g.B;
            Array.Clear(_dB, 0, r * dim);

            // Pass 1: per bag, the rank-space gradient s_b·B·g_b and the dB contribution. Reads A as it is before the step.
            fixed (float* pg = bagGradients)
            fixed (float* pw = weights)
            fixed (float* pb = b)
            fixed (float* gA = _bagGradA)
            fixed (float* dB = _dB)
            fixed (float* pa = _pooledA)
            {
                int chunkEnd = 0;
                for (int bag = 0; bag < bags; bag++)
                {
                    if (bag == chunkEnd) chunkEnd = FindSlotsAhead(g, indices, offsets, bag, bags);
                    int start = (int)offsets[bag], end = (int)offsets[bag + 1];
                    if (end == start) { new Span<float>(gA + bag * r, r).Clear(); continue; }
                    float scale = pooling == PoolingMode.Mean ? 1f / (end - start) : 1f;
                    float* grad = pg + (long)bag * dim;
                    for (int k = 0; k < r; k++) gA[bag * r + k] = scale * LoraMath.Dot(pb + k * dim, grad, dim);
                    bool any = false;
                    for (int j = start; j < end; j++)
                    {
                        int slot = _slotOf[j - _slotBase];
                        if (slot == -1) continue;
                        if (!any) { new Span<float>(pa, r).Clear(); any = true; }
                        if (slot >= 0) LoraMath.Axpy(weighted ? pw[j] : 1f, g.APointer(slot), pa, r);
                        else
                            fixed (float* ha = _hot!.A(-2 - slot))   // a hot row: its A is in the hot set, its A·B in W
                                LoraMath.Axpy(weighted ? pw[j] : 1f, ha, pa, r);
                    }
                    if (any)
                        for (int k = 0; k < r; k++) LoraMath.Axpy(scale * pa[k], grad, dB + k * dim, dim);
                }
            }
            if (!LoraMath.AllFinite(_bagGradA.AsSpan(0, bags * r)) || !LoraMath.AllFinite(_dB.AsSpan(0, r * dim))) { RejectedSteps++; return false; }

            // Pass 2: sum the row gradients per distinct row (a slot each, allocated with A = 0 if new: the effective
            // row is unchanged by the allocation, and merges done to make room keep effective rows too).
            _clock++;
            _touchedCount = 0;
            _hotCount = 0;
            ClearInPlace();
            bool inPlace = Options.InPlaceRows, inPlaceOnly = Options.InPlaceOnly;
            fixed (float* pw = weights)
            fixed (float* gA = _bagGradA)
            fixed (float* pg = bagGradients)
            {
                for (int bag = 0; bag < bags; bag++)
                {
                    int start = (int)offsets[bag], end = (int)offsets[bag + 1];
                    float scale = pooling == PoolingMode.Mean && end > start ? 1f / (end - start) : 1f;
                    for (int j = start; j < end; j++)
                    {
                        // A row already stepped in place this step stays in place (its W row is written once, below).
                        if (inPlace && (inPlaceOnly || _inPlaceIndex.ContainsKey(indices[j])))
                        {
                            AddInPlace(indices[j], (weighted ? pw[j] : 1f) * scale, pg + (long)bag * dim, dim);
                            continue;
                        }
                        if (_hot is not null)
                        {
                            int h = TouchHot(indices[j], r);
                            if (h >= 0)
                            {
                                fixed (float* hg = _hotGrad)
                                    LoraMath.Axpy(weighted ? pw[j] : 1f, gA + bag * r, hg + h * r, r);
                                IndicesOnHotRows++;
                                continue;
                            }
                        }
                        int slot = FindOrAllocate(indices[j], protectTouched: true);
                        if (slot < 0)
                        {
                            // The pool is full of this step's own rows: in place, or dropped.
                            if (inPlace) AddInPlace(indices[j], (weighted ? pw[j] : 1f) * scale, pg + (long)bag * dim, dim);
                            else DroppedRowUpdates++;
                            continue;
                        }
                        IndicesOnSlots++;
                        g = Current;                       // a map rebuild may have published a new generation (same pool)
                        int t = Touch(g, slot);
                        fixed (float* rg = _rowGrad)
                            LoraMath.Axpy(weighted ? pw[j] : 1f, gA + bag * r, rg + t * r, r);
                    }
                }
            }

            // Pass 3: new values into scratch, all checked before anything is written.
            var opt = Options;
            bool adagrad = opt.Optimizer == AdapterOptimizer.Adagrad;
            fixed (float* rg = _rowGrad)
            fixed (float* na = _newA)
            {
                for (int t = 0; t < _touchedCount; t++)
                {
                    SlotRecord* p = g.Record(_touched[t]);
                    _newAdagrad[t] = AdapterUpdateRule.StepRow(opt, g.APointer(_touched[t]), rg + t * r, p->Adagrad, na + t * r, r);
                }
            }
            if (!LoraMath.AllFinite(_newA.AsSpan(0, _touchedCount * r)) || (adagrad && !LoraMath.AllFinite(_newAdagrad.AsSpan(0, _touchedCount))))
            { RejectedSteps++; return false; }

            var (newB, newBAdagrad) = AdapterUpdateRule.StepB(opt, b, _dB.AsSpan(0, r * dim), g.BAdagrad);
            if (!LoraMath.AllFinite(newB) || !LoraMath.AllFinite(newBAdagrad)) { RejectedSteps++; return false; }
            if (_hot is { Count: > 0 } && !StepHotRows(r, dim, b, newB)) { RejectedSteps++; return false; }
            if (_inPlaceCount > 0 && !StepInPlaceRows(dim)) { RejectedSteps++; ClearInPlace(); return false; }

            // Pass 4: publish. Each A row inside its slot's seqlock; B as a new array (one reference write).
            fixed (float* na = _newA)
            {
                g.BeginEpochWrite();
                for (int t = 0; t < _touchedCount; t++)
                {
                    SlotRecord* p = g.Record(_touched[t]);
                    SlotSeqlock.BeginWrite(p);
                    Buffer.MemoryCopy(na + t * r, g.APointer(_touched[t]), r * sizeof(float), r * sizeof(float));
                    SlotSeqlock.EndWrite(p);
                    if (adagrad) p->Adagrad = _newAdagrad[t];
                    p->Stamp = _clock;
                    if (++p->Updates >= opt.HotAfterSteps && _hot is not null) _promote.Add(_touched[t]);
                }
                g.EndEpochWrite();
            }
            if (_hot is { Count: > 0 }) WriteHotRows(g, r, dim, adagrad);
            if (_inPlaceCount > 0) WriteInPlaceRows(g, dim);
            g.BAdagrad = newBAdagrad;
            Volatile.Write(ref g.B, newB);
            _touchedCount = 0;
            if (_promote.Count > 0) PromoteHot(g);
            Step++;
            if (opt.RankAdaptInterval > 0 && Step % opt.RankAdaptInterval == 0) AdaptRankCore();
            return true;
        }
        finally { ExitWriter(); }
    }

    /// <summary>Pass 3 for the step's hot rows. A touched hot row steps its A like a slot row (its kept accumulator,
    /// the same rule) into scratch, and its new W row, <c>W + A_new·B_new − A_old·B_old</c>, is computed into scratch
    /// too: W then holds <c>W_base + A_new·B_new</c>, the effective row a slot row would have. Everything is checked
    /// before anything is written; false on a non-finite value. The untouched hot rows' <c>A·(B_new − B_old)</c> is
    /// added while writing (<see cref="WriteHotRows"/>) from <c>_bDelta</c>, checked here.</summary>
    bool StepHotRows(int r, int dim, float[] oldB, float[] newB)
    {
        var opt = Options;
        EnsureLength(ref _hotW, _hotCount * dim);
        EnsureLength(ref _bDelta, r * dim);
        for (int i = 0; i < r * dim; i++) _bDelta[i] = newB[i] - oldB[i];
        if (!LoraMath.AllFinite(_bDelta.AsSpan(0, r * dim))) return false;
        fixed (float* hg = _hotGrad)
        fixed (float* hn = _hotNewA)
        fixed (float* hw = _hotW)
        fixed (float* pb = newB)
        fixed (float* ob = oldB)
        {
            for (int t = 0; t < _hotCount; t++)
            {
                long row = _hotTouched[t];
                ref var e = ref _hot!.Find(row);
                fixed (float* a = _hot.A(e.AIndex))
                {
                    _hotAdagrad[t] = AdapterUpdateRule.StepRow(opt, a, hg + t * r, e.Adagrad, hn + t * r, r);
                    float* w = hw + (long)t * dim;
                    StoredRows.Dequantise(Table, row, w);
                    for (int k = 0; k < r; k++)
                    {
                        LoraMath.Axpy(hn[t * r + k], pb + k * dim, w, dim);
                        LoraMath.Axpy(-a[k], ob + k * dim, w, dim);
                    }
                }
            }
        }
        return LoraMath.AllFinite(_hotW.AsSpan(0, _hotCount * dim)) && LoraMath.AllFinite(_hotAdagrad.AsSpan(0, _hotCount))
            && LoraMath.AllFinite(_hotNewA.AsSpan(0, _hotCount * r));
    }

    /// <summary>Pass 4 for the hot rows, inside the write epoch (a block that read one of them meanwhile is redone; the
    /// per-row readers validate plain W reads against the epoch while hot rows are served from W): the touched rows'
    /// new W rows from scratch, every other hot row's <c>W += A·(B_new − B_old)</c>, so each hot row's W follows B as
    /// its slot-served effective row would. The merge observer hears them as one merge batch (a backend's copy of W
    /// must follow). A refreshed row whose sum overflows is left as it was and leaves the set (its A·B_old stays in
    /// W, as a merge would leave it).</summary>
    void WriteHotRows(AdapterGeneration g, int r, int dim, bool adagrad)
    {
        var hot = _hot!;
        var observer = MergeObserver;
        if (_hotWritten.Length < hot.Count) _hotWritten = new long[Math.Max(hot.Count, 2 * _hotWritten.Length)];
        int written = 0;
        List<long>? overflowed = null;
        float* w = stackalloc float[dim];
        observer?.MergeStarting(this);
        try
        {
            g.BeginEpochWrite();
            try
            {
                for (int t = 0; t < _hotCount; t++)
                {
                    long row = _hotTouched[t];
                    Table.WriteRow(row, _hotW.AsSpan(t * dim, dim));
                    _hotWritten[written++] = row;
                    ref var e = ref hot.Find(row);
                    if (adagrad) e.Adagrad = _hotAdagrad[t];
                    e.Stamp = _clock;
                }
                fixed (float* d = _bDelta)
                {
                    for (int i = 0; i < hot.IndexLimit; i++)
                    {
                        long row = hot.RowAt(i);
                        if (row < 0) continue;
                        ref var e = ref hot.Find(row);
                        if (e.TouchClock == _clock) continue;   // touched by this step: written above
                        var a = hot.A(i);
                        StoredRows.Dequantise(Table, row, w);
                        for (int k = 0; k < r; k++)
                            if (a[k] != 0) LoraMath.Axpy(a[k], d + k * dim, w, dim);
                        if (!LoraMath.AllFinite(new ReadOnlySpan<float>(w, dim))) { (overflowed ??= new()).Add(row); continue; }
                        Table.WriteRow(row, new ReadOnlySpan<float>(w, dim));
                        _hotWritten[written++] = row;
                    }
                }
            }
            finally { g.EndEpochWrite(); }
        }
        finally { observer?.MergeFinished(this, _hotWritten.AsSpan(0, written)); }
        for (int t = 0; t < _hotCount; t++)
        {
            ref var e = ref hot.Find(_hotTouched[t]);
            _hotNewA.AsSpan(t * r, r).CopyTo(hot.A(e.AIndex));   // trainer-only state: no reader sees the hot A store
        }
        if (overflowed is not null)
            foreach (long row in overflowed) if (hot.Remove(row) is float acc) DropHot(row, acc);
        HotRowUpdates += _hotCount;
        _hotCount = 0;
    }

    /// <summary>Moves the slots that reached <see cref="AdapterOptions.HotAfterSteps"/> updates to the hot set: merged
    /// (exact, as any merge) to free their slots and map entries, their accumulators kept in the hot set. A full hot set
    /// drops its least recently updated rows first (their steps are in W already; their accumulators go to
    /// <see cref="RowState"/> when there is one).</summary>
    void PromoteHot(AdapterGeneration g)
    {
        var slots = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_promote);
        int r = g.Rank;
        var rows = new long[slots.Length];
        var acc = new float[slots.Length];
        var a = new float[slots.Length * r];
        for (int k = 0; k < slots.Length; k++)
        {
            rows[k] = g.Record(slots[k])->Row;
            acc[k] = g.Record(slots[k])->Adagrad;
            new ReadOnlySpan<float>(g.APointer(slots[k]), r).CopyTo(a.AsSpan(k * r, r));
        }
        _merger.MergeSlots(g, slots);
        _promote.Clear();
        int evict = Math.Max(1, (int)(_hot!.Capacity * Options.EvictFraction));
        for (int k = 0; k < rows.Length; k++)
            if (!_hot.Add(rows[k], acc[k], _clock, a.AsSpan(k * r, r), evict, DropHot) && _rowState is { } state) state[rows[k]] = acc[k];
        // A promoted row's filter bits stay set (bits are never cleared within a generation), and promoted rows are the
        // most looked-up ones: each lookup of one would pass the filter and probe the map for nothing (measured: with
        // every --hot row promoted, bench lora at 70 % stayed at 1.49x the plain lookup). A rebuilt map starts a clean
        // filter; rebuilt once promotions since the last new generation reach 1/16 of the pool (an O(map) copy).
        _staleFilterRows += rows.Length;
        if (_staleFilterRows >= Math.Max(8, g.SlotCapacity / 16)) Publish(g.WithRebuiltMap(++_version));
    }

    void DropHot(long row, float adagrad)
    {
        if (_rowState is { } state) state[row] = adagrad;
    }

    const int SlotChunkIndices = 128, MapPrefetchDistance = 16;

    /// <summary>Pass 1's slot lookups for the bags from <paramref name="firstBag"/> holding up to
    /// <see cref="SlotChunkIndices"/> indices (at least one bag) into <c>_slotOf</c>, prefetching each index's map
    /// line <see cref="MapPrefetchDistance"/> indices ahead and each found slot's A row for pass 1. A step's rows are
    /// spread over the whole adapter; profiled on the replay, pass 1 spent most of its time waiting on those two loads
    /// one index after the other. Chunked so the prefetched A rows (1 line each at rank ≤ 16) are still in L1 when pass 1
    /// reads them, whatever the batch size. Nothing is written before pass 2, so the slots stay valid through pass 1.
    /// Returns the bag after the chunk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    int FindSlotsAhead(AdapterGeneration g, ReadOnlySpan<long> indices, ReadOnlySpan<long> offsets, int firstBag, int bags)
    {
        int begin = (int)offsets[firstBag], lastBag = firstBag + 1;
        while (lastBag < bags && offsets[lastBag + 1] - begin <= SlotChunkIndices) lastBag++;
        int end = (int)offsets[lastBag];
        if (_slotOf.Length < end - begin) _slotOf = new int[Math.Max(end - begin, 2 * _slotOf.Length)];
        _slotBase = begin;
        int aBytes = g.Rank * sizeof(float);
        if (Sse.IsSupported)
            for (int j = begin; j < Math.Min(end, begin + MapPrefetchDistance); j++) Sse.Prefetch0(g.MapPointer + g.Bucket(indices[j]));
        for (int j = begin; j < end; j++)
        {
            if (Sse.IsSupported && j + MapPrefetchDistance < end) Sse.Prefetch0(g.MapPointer + g.Bucket(indices[j + MapPrefetchDistance]));
            int slot = g.Find(indices[j]);
            if (slot < 0 && _hot is not null)
            {
                ref var e = ref _hot.Find(indices[j]);
                if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref e)) { _slotOf[j - begin] = -2 - e.AIndex; continue; }
            }
            _slotOf[j - begin] = slot;
            if (slot >= 0 && Sse.IsSupported)
            {
                byte* a = (byte*)g.APointer(slot);
                Sse.Prefetch0(a);
                Sse.Prefetch0(a + aBytes - 1);
                Sse.Prefetch0(g.Record(slot));   // for pass 2's Touch (records are a separate array from A)
            }
        }
        return lastBag;
    }

    static void EnsureLength(ref float[] array, int length)
    {
        if (array.Length < length) array = new float[Math.Max(length, array.Length * 2)];
    }
}
