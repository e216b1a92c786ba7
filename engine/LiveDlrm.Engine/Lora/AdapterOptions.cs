namespace LiveDlrm.Lora;

/// <summary>How adapter rows and B are stepped by <see cref="TableAdapter.ApplyGradients"/>.</summary>
internal enum AdapterOptimizer
{
    /// <summary>Row-wise Adagrad for A (one accumulator per row: the mean of the squared row gradient, as in
    /// FBGEMM/TorchRec), element-wise Adagrad for B.</summary>
    Adagrad,
    /// <summary>Plain SGD for both.</summary>
    Sgd,
}

/// <summary>Configuration of one table's LoRA adapter. Validated by <see cref="Validate"/> (called by the
/// <see cref="TableAdapter"/> constructor) with messages naming the offending option.</summary>
internal sealed record AdapterOptions
{
    /// <summary>Rank at creation.</summary>
    public int InitialRank { get; init; } = 16;
    public int MinRank { get; init; } = 1;
    public int MaxRank { get; init; } = 64;

    /// <summary>Adapter bytes (slot pool + map + B and its optimizer state + free list) may use at most this
    /// fraction of the base table's bytes.</summary>
    public double BudgetFraction { get; init; } = 0.01;
    internal const double MaxBudgetFraction = 16;

    /// <summary>Every this many <see cref="TableAdapter.ApplyGradients"/> steps the rank is re-chosen from the
    /// singular values of ΔW = A·B; 0 turns automatic adaptation off (<see cref="TableAdapter.AdaptRank"/> still works).</summary>
    public int RankAdaptInterval { get; init; } = 0;

    /// <summary>τ: keep the smallest k whose singular values hold at least this fraction of ΔW's energy (Σσ²).</summary>
    public double EnergyToKeep { get; init; } = 0.9;

    /// <summary>ε: grow when no truncation is possible and the last singular value still holds more than this
    /// fraction of the energy (the adapter is using all its directions).</summary>
    public double GrowThreshold { get; init; } = 0.05;

    /// <summary>Directions added per growth.</summary>
    public int GrowStep { get; init; } = 4;

    /// <summary>When the slot pool is full, this fraction of the slots (at least one) is merged into the base at
    /// once, least recently updated first; batching amortises the O(n) selection of the oldest rows.</summary>
    public double EvictFraction { get; init; } = 1.0 / 16;

    public AdapterOptimizer Optimizer { get; init; } = AdapterOptimizer.Adagrad;
    public float LearningRateA { get; init; } = 0.05f;
    public float LearningRateB { get; init; } = 0.01f;
    public float AdagradEpsilon { get; init; } = 1e-8f;
    /// <summary>Row-wise Adagrad accumulator of an A row when it gets a slot (TF-style initial accumulator value).
    /// With 0, a row's first step has size LearningRateA whatever its gradient's scale, and rows that are merged and
    /// later re-added restart from 0 each time, so frequently evicted rows keep taking full-size steps.</summary>
    public float AdagradInitialAccumulator { get; init; } = 0f;
    /// <summary>Element-wise Adagrad accumulator B starts with. With 0, B's first steps are LearningRateB per entry
    /// whatever the gradient, against entries of about BInitScale/√dim: the first few steps turn the basis every
    /// adapter row is expressed in, which on a sparse stream scrambles rows trained long ago (docs/replay.md).</summary>
    public float BAdagradInitialAccumulator { get; init; } = 0f;

    /// <summary>Scale of B's initial rows and of rows added by growth (entries ~ N(0, scale²/dim), so a row's norm
    /// is about scale). B must be nonzero for gradients to reach A, since new A rows start at zero.</summary>
    public float BInitScale { get; init; } = 1f;

    /// <summary>Fraction of the budget reserved for hot rows served from W itself (0 = off): a row updated in
    /// <see cref="HotAfterSteps"/> steps while it held a slot is merged (exactly) and from then on each of its steps
    /// is added straight into W[row] inside the write epoch, with its Adagrad accumulator kept in the hot set, so the
    /// lookup's map and filter no longer see it (docs/lora.md, "Hot rows served from W"). Not for int8 tables.</summary>
    public double HotRowFraction { get; init; } = 0;
    /// <summary>Steps a row must be updated in while it holds a slot before it is moved to the hot set.</summary>
    public int HotAfterSteps { get; init; } = 4;

    /// <summary>Rows the adapter cannot hold are trained in W itself instead of being dropped: a row that finds the
    /// pool full of the step's own rows (or every row, with <see cref="InPlaceOnly"/>) takes its full row gradient
    /// as a row-wise Adagrad step on W (<see cref="InPlaceLearningRate"/>, accumulator in
    /// <see cref="TableAdapter.RowState"/>), written inside the write epoch and told to the merge observer
    /// (docs/lora.md, "Rows trained in place"). Not for int8 tables.</summary>
    public bool InPlaceRows { get; init; }
    /// <summary>With <see cref="InPlaceRows"/>: no row gets a slot; the adapter only carries the write epoch, the
    /// observer and the row state (a table whose budget holds too few adapter rows to be worth a pool).</summary>
    public bool InPlaceOnly { get; init; }
    /// <summary>Row-wise Adagrad learning rate of rows trained in place (the base trainer's embedding rate is the
    /// natural choice: those rows continue its accumulators).</summary>
    public float InPlaceLearningRate { get; init; } = 0.05f;

    /// <summary>Seed for B's random initial and grown rows.</summary>
    public int Seed { get; init; } = 12345;

    public void Validate(string table)
    {
        string Where(string option) => $"table '{table}': adapter option {option}";
        if (MinRank < 1) throw new ArgumentOutOfRangeException(nameof(MinRank), MinRank, Where("MinRank must be ≥ 1"));
        if (MaxRank < MinRank) throw new ArgumentOutOfRangeException(nameof(MaxRank), MaxRank, Where($"MaxRank must be ≥ MinRank ({MinRank})"));
        if (InitialRank < MinRank || InitialRank > MaxRank)
            throw new ArgumentOutOfRangeException(nameof(InitialRank), InitialRank, Where($"InitialRank must be in [MinRank, MaxRank] = [{MinRank}, {MaxRank}]"));
        // Above 1 only for tiny tables funded from a joint budget (OnlineTrainerOptions.SmallTableBudgetMultiple).
        if (!(BudgetFraction > 0 && BudgetFraction <= MaxBudgetFraction))
            throw new ArgumentOutOfRangeException(nameof(BudgetFraction), BudgetFraction, Where($"BudgetFraction must be in (0, {MaxBudgetFraction}]"));
        if (RankAdaptInterval < 0) throw new ArgumentOutOfRangeException(nameof(RankAdaptInterval), RankAdaptInterval, Where("RankAdaptInterval must be ≥ 0"));
        if (!(EnergyToKeep > 0 && EnergyToKeep <= 1))
            throw new ArgumentOutOfRangeException(nameof(EnergyToKeep), EnergyToKeep, Where("EnergyToKeep (τ) must be in (0, 1]"));
        if (!(GrowThreshold >= 0 && GrowThreshold <= 1))
            throw new ArgumentOutOfRangeException(nameof(GrowThreshold), GrowThreshold, Where("GrowThreshold (ε) must be in [0, 1]"));
        if (GrowStep < 1) throw new ArgumentOutOfRangeException(nameof(GrowStep), GrowStep, Where("GrowStep must be ≥ 1"));
        if (!(EvictFraction > 0 && EvictFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(EvictFraction), EvictFraction, Where("EvictFraction must be in (0, 1]"));
        if (!Enum.IsDefined(Optimizer)) throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, Where("Optimizer is unknown"));
        if (!(float.IsFinite(LearningRateA) && LearningRateA >= 0)) throw new ArgumentOutOfRangeException(nameof(LearningRateA), LearningRateA, Where("LearningRateA must be finite and ≥ 0"));
        if (!(float.IsFinite(LearningRateB) && LearningRateB >= 0)) throw new ArgumentOutOfRangeException(nameof(LearningRateB), LearningRateB, Where("LearningRateB must be finite and ≥ 0"));
        if (!(float.IsFinite(AdagradEpsilon) && AdagradEpsilon > 0)) throw new ArgumentOutOfRangeException(nameof(AdagradEpsilon), AdagradEpsilon, Where("AdagradEpsilon must be finite and > 0"));
        if (!(float.IsFinite(AdagradInitialAccumulator) && AdagradInitialAccumulator >= 0))
            throw new ArgumentOutOfRangeException(nameof(AdagradInitialAccumulator), AdagradInitialAccumulator, Where("AdagradInitialAccumulator must be finite and ≥ 0"));
        if (!(float.IsFinite(BAdagradInitialAccumulator) && BAdagradInitialAccumulator >= 0))
            throw new ArgumentOutOfRangeException(nameof(BAdagradInitialAccumulator), BAdagradInitialAccumulator, Where("BAdagradInitialAccumulator must be finite and ≥ 0"));
        if (!(HotRowFraction >= 0 && HotRowFraction < 1)) throw new ArgumentOutOfRangeException(nameof(HotRowFraction), HotRowFraction, Where("HotRowFraction must be in [0, 1)"));
        if (HotAfterSteps < 1) throw new ArgumentOutOfRangeException(nameof(HotAfterSteps), HotAfterSteps, Where("HotAfterSteps must be ≥ 1"));
        if (InPlaceOnly && !InPlaceRows) throw new ArgumentOutOfRangeException(nameof(InPlaceOnly), InPlaceOnly, Where("InPlaceOnly needs InPlaceRows"));
        if (!(float.IsFinite(InPlaceLearningRate) && InPlaceLearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(InPlaceLearningRate), InPlaceLearningRate, Where("InPlaceLearningRate must be finite and > 0"));
        if (!(float.IsFinite(BInitScale) && BInitScale > 0)) throw new ArgumentOutOfRangeException(nameof(BInitScale), BInitScale, Where("BInitScale must be finite and > 0"));
    }
}

/// <summary>One rank-adaptation decision, kept in <see cref="TableAdapter.History"/> for the report.</summary>
/// <param name="Step">Optimizer steps applied when the decision was taken.</param>
/// <param name="OldRank">Rank before.</param>
/// <param name="NewRank">Rank after.</param>
/// <param name="KeptEnergy">Fraction of ΔW's energy (Σσ²) the kept directions hold (1 when nothing was dropped; NaN when ΔW was zero).</param>
/// <param name="SingularValues">Singular values of ΔW before the decision, descending.</param>
/// <param name="ActiveRows">Adapter rows after the decision.</param>
/// <param name="AdapterBytes">Adapter bytes after the decision.</param>
/// <param name="BudgetBytes">The budget.</param>
/// <param name="EvictedRows">Rows merged into the base to make the new rank fit the budget.</param>
internal sealed record RankEvent(long Step, int OldRank, int NewRank, double KeptEnergy, double[] SingularValues,
                               int ActiveRows, long AdapterBytes, long BudgetBytes, int EvictedRows)
{
    public double MemoryFraction(long tableBytes) => (double)AdapterBytes / tableBytes;
}
