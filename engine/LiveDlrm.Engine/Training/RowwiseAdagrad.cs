using System.Runtime.Intrinsics;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Training;

/// <summary>
/// Row-wise Adagrad (FBGEMM's <c>rowwise_adagrad</c>): one accumulator per row instead of one per element, so the
/// optimizer state is 4 bytes a row rather than 4·d. For a row with gradient g (already summed over every
/// occurrence of the row in the minibatch):
/// <code>G += mean(g²);   w −= lr · g / (√G + ε)</code>
/// fp32 rows are updated in place; fp16 and int8-rowwise rows are dequantised, updated in fp32 and quantised
/// back (so an update smaller than the row's quantisation step can be lost; int8 rows are re-scaled to the
/// updated row's min/max each time).
/// </summary>
internal static unsafe class RowwiseAdagrad
{
    /// <summary>Applies one update to <paramref name="row"/> of <paramref name="table"/>. <paramref name="scratch"/>
    /// (≥ dim floats) is used for non-fp32 storage.</summary>
    public static void Update(EmbeddingTable table, long row, ReadOnlySpan<float> gradient, ref float accumulator,
                              float learningRate, float epsilon, Span<float> scratch)
    {
        int dim = table.Dim;
        if (gradient.Length != dim) throw new ArgumentException($"table '{table.Name}': gradient has {gradient.Length} values, dim is {dim}", nameof(gradient));
        float g2 = SumOfSquares(gradient) / dim;
        if (!float.IsFinite(g2)) throw new ArgumentException($"table '{table.Name}': row {row} gradient is not finite", nameof(gradient));
        accumulator += g2;
        float step = -learningRate / (MathF.Sqrt(accumulator) + epsilon);
        if (table.Storage == EmbeddingStorage.Fp32)
        {
            if ((ulong)row >= (ulong)table.Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"table '{table.Name}': row outside [0, {table.Rows})");
            Axpy(new Span<float>(table.RowPointer(row), dim), gradient, step);
        }
        else
        {
            var values = scratch[..dim];
            table.ReadRow(row, values);
            Axpy(values, gradient, step);
            table.WriteRow(row, values);
        }
    }

    /// <summary>y += alpha · x (Vector512 → Vector256 → scalar).</summary>
    public static void Axpy(Span<float> y, ReadOnlySpan<float> x, float alpha)
    {
        if (x.Length != y.Length) throw new ArgumentException($"lengths differ: {x.Length} vs {y.Length}");
        int n = y.Length, i = 0;
        fixed (float* py = y)
        fixed (float* px = x)
        {
            if (Vector512.IsHardwareAccelerated && n >= 16)
            {
                var a = Vector512.Create(alpha);
                for (; i <= n - 16; i += 16)
                    Vector512.Store(Vector512.FusedMultiplyAdd(Vector512.Load(px + i), a, Vector512.Load(py + i)), py + i);
            }
            if (Vector256.IsHardwareAccelerated && n - i >= 8)
            {
                var a = Vector256.Create(alpha);
                for (; i <= n - 8; i += 8)
                    Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(px + i), a, Vector256.Load(py + i)), py + i);
            }
            for (; i < n; i++) py[i] = MathF.FusedMultiplyAdd(px[i], alpha, py[i]);
        }
    }

    /// <summary>Σ x².</summary>
    public static float SumOfSquares(ReadOnlySpan<float> x)
    {
        int n = x.Length, i = 0;
        float sum = 0;
        fixed (float* px = x)
        {
            if (Vector512.IsHardwareAccelerated && n >= 16)
            {
                var acc = Vector512<float>.Zero;
                for (; i <= n - 16; i += 16) { var v = Vector512.Load(px + i); acc = Vector512.FusedMultiplyAdd(v, v, acc); }
                sum += Vector512.Sum(acc);
            }
            if (Vector256.IsHardwareAccelerated && n - i >= 8)
            {
                var acc = Vector256<float>.Zero;
                for (; i <= n - 8; i += 8) { var v = Vector256.Load(px + i); acc = Vector256.FusedMultiplyAdd(v, v, acc); }
                sum += Vector256.Sum(acc);
            }
            for (; i < n; i++) sum = MathF.FusedMultiplyAdd(px[i], px[i], sum);
        }
        return sum;
    }

    /// <summary>The scalar twin of <see cref="Update"/> on a plain fp32 row (the test oracle).</summary>
    public static void UpdateReference(Span<float> row, ReadOnlySpan<float> gradient, ref float accumulator, float learningRate, float epsilon)
    {
        double g2 = 0;
        foreach (float g in gradient) g2 += (double)g * g;
        accumulator += (float)(g2 / gradient.Length);
        float step = learningRate / (MathF.Sqrt(accumulator) + epsilon);
        for (int i = 0; i < row.Length; i++) row[i] -= step * gradient[i];
    }
}
