
namespace LiveDlrm.Lora;

internal sealed unsafe partial class TableAdapter
{
    /// <summary>Relative energy below which the τ comparison treats a shortfall as round-off, so τ = 1 drops singular
    /// values that are zero up to float precision (a rank-deficient ΔW really shrinks) and nothing else.</summary>
    const double EnergyRoundOff = 1e-10;

    /// <summary>Trainer: re-chooses the rank from the singular values of ΔW = A·B (see
    /// <see cref="AdapterOptions.EnergyToKeep"/>, <see cref="AdapterOptions.GrowThreshold"/>) and re-parameterises
    /// exactly on the kept subspace: A' = Q·U_k·Σ_k, B' = V_kᵀ, so A'·B' is ΔW truncated to its top k singular
    /// directions. Growth appends zero A columns and random B rows orthogonal to the kept ones (ΔW unchanged; the
    /// nonzero B rows let gradients reach the new A columns). Growth is refused when the larger slots would leave
    /// fewer than half the current slot count in the budget; if the active rows do not fit the new rank's pool,
    /// the least recently updated are merged first. Returns the event also appended to <see cref="History"/>.</summary>
    public RankEvent AdaptRank()
    {
        EnterWriter();
        try { return AdaptRankCore(); }
        finally { ExitWriter(); }
    }

    RankEvent AdaptRankCore()
    {
        var g = Current;
        int r = g.Rank, dim = Table.Dim;
        if (g.Live == 0 && (_hot?.Count ?? 0) == 0) return Record(r, r, double.NaN, Array.Empty<double>(), 0);

        // Hot rows are adapter rows too (their A in the hot set, their A·B in W): they take part in the factorisation
        // and are re-parameterised with the slots, so a rank change does not freeze their updates into W.
        var (hotRows, hotA) = HotRowsForRank(r);
        var f = RankFactorisation.Of(g, hotA, hotRows.Length);
        double energy = 0;
        foreach (double s in f.S) energy += s * s;
        if (energy == 0) return Record(r, r, double.NaN, f.S, 0);

        int k = 0;
        double cumulative = 0;
        while (k < f.M)
        {
            cumulative += f.S[k] * f.S[k];
            k++;
            if (cumulative >= (Options.EnergyToKeep - EnergyRoundOff) * energy) break;
        }
        int target = Math.Clamp(k, Options.MinRank, Options.MaxRank);
        if (k == r && r < Options.MaxRank && f.S[r - 1] * f.S[r - 1] > Options.GrowThreshold * energy)
        {
            int grown = Math.Min(Options.MaxRank, r + Options.GrowStep);
            if (SizeFor(SlotBudgetBytes, grown, dim).Slots >= Math.Max(1, g.SlotCapacity / 2)) target = grown;
        }
        if (target == r && k == r) return Record(r, r, 1.0, f.S, 0);

        var (slots, mapCapacity) = SizeFor(SlotBudgetBytes, target, dim);
        if (slots < 1) return Record(r, r, 1.0, f.S, 0);
        int evicted = 0;
        if (g.Live > slots)
        {
            evicted = _merger.EvictOldest(g, g.Live - slots, isProtected: null);
            if (g.Live == 0 && hotRows.Length == 0) return Record(r, r, double.NaN, f.S, evicted);
            f = RankFactorisation.Of(g, hotA, hotRows.Length);     // the merged rows left ΔW; decompose what remains
            energy = 0;
            foreach (double s in f.S) energy += s * s;
        }

        int kept = Math.Min(target, f.M);
        double keptEnergy = 0;
        for (int c = 0; c < kept; c++) keptEnergy += f.S[c] * f.S[c];

        // B' keeps the old B's scale (rms row norm) and A absorbs the rest: ΔW = A'·B' is the same, and the optimizer
        // states carried over (per-row Adagrad of A, B's mean accumulator) keep meaning the same step sizes.
        double bScale = RankFactorisation.RmsRowNorm(g.B, r);
        var b = f.Basis(kept, target, dim, bScale, Options.BInitScale, Normal);

        var next = AdapterGeneration.CreateEmpty(++_version, target, dim, slots, mapCapacity, b);
        // B's Adagrad state carries over as its mean: B' spans the old row space (plus new directions), and a zero
        // accumulator would make the first step after every rank change a full lr per coordinate, shaking every
        // adapted row at once (measured: a replay with rank adaptation every 200 steps lost 0.03 AUC that way).
        if (g.BAdagrad.Length > 0) Array.Fill(next.BAdagrad, g.BAdagrad.Average());
        for (int i = 0; i < f.Slots.Length; i++)
        {
            SlotRecord* src = g.Record(f.Slots[i]);
            int slot = next.FreeSlots[--next.FreeCount];
            SlotRecord* dst = next.Record(slot);
            long row = src->Row;
            *dst = *src with { Seq = 0, Touch = -1 };
            float* a = next.APointer(slot);
            for (int c = 0; c < kept; c++) a[c] = (float)(f.QU[(long)i * f.M + c] * f.S[c] / bScale);
            next.InsertNew(row, slot);
        }
        // The hot rows' A' (after the slots' rows of QU). Their W keeps W_base + A·B_old: the truncated part
        // A·B_old − A'·B' stays in W, as a merge of it would leave it, so no W row changes here.
        var newHotA = new float[hotRows.Length * target];
        for (int i = 0; i < hotRows.Length; i++)
            for (int c = 0; c < kept; c++) newHotA[(long)i * target + c] = (float)(f.QU[(long)(f.Slots.Length + i) * f.M + c] * f.S[c] / bScale);
        Publish(next);          // re-cuts the hot set's A store for the new rank (every A zero)
        for (int i = 0; i < hotRows.Length; i++)
        {
            ref var e = ref _hot!.Find(hotRows[i]);
            if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref e)) newHotA.AsSpan(i * target, target).CopyTo(_hot.A(e.AIndex));
        }
        return Record(r, target, keptEnergy / energy, f.S, evicted);
    }

    /// <summary>The hot rows and their A vectors (rank <paramref name="r"/> each, in the same order), empty when there are none.</summary>
    (long[] Rows, float[] A) HotRowsForRank(int r)
    {
        if (_hot is not { Count: > 0 } hot) return (Array.Empty<long>(), Array.Empty<float>());
        var rows = new long[hot.Count];
        var a = new float[hot.Count * r];
        int n = 0;
        for (int i = 0; i < hot.IndexLimit; i++)
        {
            long row = hot.RowAt(i);
            if (row < 0) continue;
            hot.A(i).CopyTo(a.AsSpan(n * r, r));
            rows[n++] = row;
        }
        return (rows, a);
    }

    RankEvent Record(int oldRank, int newRank, double keptEnergy, double[] singularValues, int evicted)
    {
        var g = Current;
        var e = new RankEvent(Step, oldRank, newRank, keptEnergy, singularValues, g.Live, g.Bytes, BudgetBytes, evicted);
        lock (_history) _history.Add(e);
        return e;
    }
}
