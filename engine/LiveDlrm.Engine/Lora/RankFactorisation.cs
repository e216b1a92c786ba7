using LiveDlrm.Runtime;
using TorchSharp;

namespace LiveDlrm.Lora;

/// <summary>ΔW = A·B over a generation's active rows, factorised without forming the n × dim matrix:
/// A = Q·R (thin QR, Q n × m, R m × r, m = min(n, r)), R·B = U·Σ·Vᵀ (m × dim, small), so ΔW = (Q·U)·Σ·Vᵀ is an SVD.
/// The rank changes of <see cref="TableAdapter.AdaptRank"/> re-parameterise on its leading directions.</summary>
internal sealed unsafe record RankFactorisation(int[] Slots, int M, double[] QU, double[] S, double[] Vt)
{
    /// <summary>The factorisation of <paramref name="g"/>'s live slots (in slot order, <see cref="Slots"/>), followed by
    /// <paramref name="extraRows"/> more A rows (<paramref name="extraA"/>, rank floats each: the hot rows, whose A the
    /// hot set keeps; their rows of <see cref="QU"/> come after the slots').</summary>
    public static RankFactorisation Of(AdapterGeneration g, float[]? extraA = null, int extraRows = 0)
    {
        TorchRuntime.EnsureInitialised();
        int r = g.Rank, dim = g.Dim;
        var slots = new int[g.Live];
        int n = 0;
        for (int s = 0; s < g.SlotCapacity && n < slots.Length; s++)
            if (g.Record(s)->IsLive) slots[n++] = s;
        var a = new double[(long)(n + extraRows) * r];
        for (int i = 0; i < n; i++)
        {
            float* src = g.APointer(slots[i]);
            for (int k = 0; k < r; k++) a[(long)i * r + k] = src[k];
        }
        for (long i = 0; i < (long)extraRows * r; i++) a[(long)n * r + i] = extraA![i];
        n += extraRows;
        var b = new double[r * dim];
        for (int i = 0; i < b.Length; i++) b[i] = g.B[i];

        using var scope = torch.NewDisposeScope();
        var ta = torch.tensor(a, new long[] { n, r }, torch.float64);
        var tb = torch.tensor(b, new long[] { r, dim }, torch.float64);
        var (q, rr) = torch.linalg.qr(ta);
        var (u, s2, vt) = torch.linalg.svd(rr.matmul(tb), fullMatrices: false);
        var qu = q.matmul(u);
        int m = (int)s2.shape[0];
        return new RankFactorisation(slots, m, qu.contiguous().data<double>().ToArray(), s2.data<double>().ToArray(), vt.contiguous().data<double>().ToArray());
    }

    /// <summary>Root-mean-square row norm of a rank × dim B (1 for an all-zero B).</summary>
    public static double RmsRowNorm(float[] b, int rank)
    {
        double squares = 0;
        foreach (float v in b) squares += (double)v * v;
        return squares > 0 ? Math.Sqrt(squares / rank) : 1;
    }

    /// <summary>B' for a new rank <paramref name="target"/>: the <paramref name="kept"/> leading right singular vectors
    /// scaled by <paramref name="bScale"/>, then, for grown directions, random rows orthogonal to every earlier one with
    /// norm <paramref name="initScale"/> (so gradients reach the new, zero A columns).</summary>
    public float[] Basis(int kept, int target, int dim, double bScale, double initScale, Func<double> normal)
    {
        var bNew = new double[target * dim];
        for (int i = 0; i < kept * dim; i++) bNew[i] = Vt[i] * bScale;
        for (int c = kept; c < target; c++)
        {
            var v = bNew.AsSpan(c * dim, dim);
            for (int i = 0; i < dim; i++) v[i] = normal();
            for (int pass = 0; pass < 2; pass++)          // twice: classical Gram–Schmidt loses orthogonality once
                for (int prev = 0; prev < c; prev++)
                {
                    var u = bNew.AsSpan(prev * dim, dim);
                    double dot = 0, norm = 0;
                    for (int i = 0; i < dim; i++) { dot += v[i] * u[i]; norm += u[i] * u[i]; }
                    for (int i = 0; i < dim; i++) v[i] -= dot / norm * u[i];
                }
            double len = 0;
            for (int i = 0; i < dim; i++) len += v[i] * v[i];
            len = Math.Sqrt(len);
            for (int i = 0; i < dim; i++) v[i] *= initScale / len;
        }
        var b = new float[target * dim];
        for (int i = 0; i < b.Length; i++) b[i] = (float)bNew[i];
        return b;
    }
}
