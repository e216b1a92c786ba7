using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>In-place rows (<see cref="AdapterOptions.InPlaceRows"/>): a row the adapter cannot hold — every row of an
/// in-place-only adapter, or a row that finds the pool full of the step's own rows — is not dropped: its full row
/// gradient is stepped straight into W by row-wise Adagrad (the base trainer's rule, on the base trainer's
/// accumulator in <see cref="RowState"/>), written inside the write epoch and told to the merge observer as a merge
/// batch, exactly as hot rows are (docs/lora.md, "Rows trained in place").</summary>
internal sealed unsafe partial class TableAdapter
{
    // In-place rows of one step: row, summed full-dim gradient, new accumulator, new W row.
    readonly Dictionary<long, int> _inPlaceIndex = new();
    long[] _inPlaceRows = new long[64];
    int _inPlaceCount;
    float[] _inPlaceGrad = Array.Empty<float>();
    float[] _inPlaceAdagrad = new float[64];
    float[] _inPlaceW = Array.Empty<float>();

    /// <summary>Row updates written straight into W because the adapter could not hold the row
    /// (<see cref="AdapterOptions.InPlaceRows"/>).</summary>
    public long InPlaceRowUpdates { get; private set; }

    /// <summary>The step-scratch index of in-place row <paramref name="row"/>, assigning one (zeroed) on first touch.</summary>
    int TouchInPlace(long row, int dim)
    {
        if (_inPlaceIndex.TryGetValue(row, out int t)) return t;
        t = _inPlaceCount++;
        if (t == _inPlaceRows.Length) { Array.Resize(ref _inPlaceRows, t * 2); Array.Resize(ref _inPlaceAdagrad, t * 2); }
        if ((t + 1) * dim > _inPlaceGrad.Length) Array.Resize(ref _inPlaceGrad, Math.Max(_inPlaceGrad.Length * 2, (t + 1) * dim));
        _inPlaceRows[t] = row;
        new Span<float>(_inPlaceGrad, t * dim, dim).Clear();
        _inPlaceIndex.Add(row, t);
        return t;
    }

    /// <summary>Adds <c>weight · g_bag</c> (the row's share of its bag's gradient) to in-place row <paramref name="row"/>.</summary>
    void AddInPlace(long row, float weight, float* bagGradient, int dim)
    {
        int t = TouchInPlace(row, dim);
        fixed (float* ig = _inPlaceGrad)
            LoraMath.Axpy(weight, bagGradient, ig + (long)t * dim, dim);
    }

    /// <summary>Pass 3 for the step's in-place rows: <c>G += mean(g²); w −= lr·g/(√G + ε)</c> (as
    /// <c>RowwiseAdagrad</c>, the base trainer's rule) from the row's stored accumulator (under
    /// <see cref="AdapterOptimizer.Sgd"/>: <c>w −= lr·g</c>), into scratch; false on a non-finite value (nothing written).</summary>
    bool StepInPlaceRows(int dim)
    {
        var opt = Options;
        EnsureLength(ref _inPlaceW, _inPlaceCount * dim);
        var state = _rowState!;
        bool adagrad = opt.Optimizer == AdapterOptimizer.Adagrad;   // SGD: plain steps, the accumulator kept as it is
        fixed (float* ig = _inPlaceGrad)
        fixed (float* iw = _inPlaceW)
        {
            for (int t = 0; t < _inPlaceCount; t++)
            {
                float* grad = ig + (long)t * dim, w = iw + (long)t * dim;
                float acc = state[_inPlaceRows[t]], step = opt.InPlaceLearningRate;
                if (adagrad)
                {
                    acc += LoraMath.Dot(grad, grad, dim) / dim;
                    step /= MathF.Sqrt(acc) + opt.AdagradEpsilon;
                }
                _inPlaceAdagrad[t] = acc;
                StoredRows.Dequantise(Table, _inPlaceRows[t], w);
                LoraMath.Axpy(-step, grad, w, dim);
            }
        }
        return LoraMath.AllFinite(_inPlaceW.AsSpan(0, _inPlaceCount * dim)) && LoraMath.AllFinite(_inPlaceAdagrad.AsSpan(0, _inPlaceCount));
    }

    /// <summary>Pass 4 for the in-place rows: the new W rows written inside the write epoch (readers validate plain W
    /// reads against it, <see cref="ServesHotRowsFromW"/>), accumulators stored, the rows told to the merge observer
    /// as one merge batch (a persisted or PIM copy of W must follow).</summary>
    void WriteInPlaceRows(AdapterGeneration g, int dim)
    {
        var observer = MergeObserver;
        observer?.MergeStarting(this);
        try
        {
            g.BeginEpochWrite();
            try
            {
                for (int t = 0; t < _inPlaceCount; t++)
                {
                    Table.WriteRow(_inPlaceRows[t], _inPlaceW.AsSpan(t * dim, dim));
                    _rowState![_inPlaceRows[t]] = _inPlaceAdagrad[t];
                }
            }
            finally { g.EndEpochWrite(); }
        }
        finally { observer?.MergeFinished(this, _inPlaceRows.AsSpan(0, _inPlaceCount)); }
        InPlaceRowUpdates += _inPlaceCount;
        ClearInPlace();
    }

    void ClearInPlace()
    {
        _inPlaceCount = 0;
        _inPlaceIndex.Clear();
    }
}
