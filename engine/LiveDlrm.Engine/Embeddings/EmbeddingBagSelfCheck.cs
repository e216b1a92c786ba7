namespace LiveDlrm.Embeddings;

/// <summary>Runs the SIMD kernels at the current ISA level against <see cref="EmbeddingBagReference"/> on random
/// tables and batches: every row format, a spread of dims (tails included), every pooling, int and long indices,
/// on the calling thread and on a pool. Used by <c>livedlrm demo --self-check</c>, which the tests run in child
/// processes with <c>DOTNET_EnableAVX512F=0</c> / <c>DOTNET_EnableAVX2=0</c> to cover the levels a process
/// selects by itself.</summary>
internal static class EmbeddingBagSelfCheck
{
    public static readonly int[] Dims = [1, 3, 16, 17, 64, 100, 128, 256];

    /// <summary>Relative tolerance against the sum of magnitudes of each output element's terms.</summary>
    public const double Tolerance = 1e-5;

    public sealed record Result(KernelIsa Isa, int Cases, IReadOnlyList<string> Failures);

    public static Result Run(int seed = 1)
    {
        var failures = new List<string>();
        int cases = 0;
        using var pool = new EmbeddingWorkerPool(1);
        using var callerOnly = new EmbeddingWorkerPool(0);
        foreach (var storage in Enum.GetValues<EmbeddingStorage>())
            foreach (int dim in Dims)
            {
                var rng = new Random(seed * 1000 + dim * 3 + (int)storage);
                int rows = 1 + rng.Next(60);
                var values = new float[rows * dim];
                for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 4 - 2);
                using var table = EmbeddingTable.FromFp32($"self-check-{storage}-{dim}", values, dim, storage);
                int bags = 300;
                var offsets = new long[bags + 1];
                var indices = new List<long>();
                for (int b = 0; b < bags; b++)
                {
                    int len = b % 5 == 0 ? 0 : rng.Next(1, 30);
                    for (int j = 0; j < len; j++) indices.Add(rng.NextInt64(rows));
                    offsets[b + 1] = indices.Count;
                }
                indices[^1] = rows - 1;
                var idx = indices.ToArray();
                var weights = new float[idx.Length];
                for (int i = 0; i < weights.Length; i++) weights[i] = (float)(rng.NextDouble() * 2 - 0.5);
                var intIdx = idx.Select(v => (int)v).ToArray();
                var intOff = offsets.Select(v => (int)v).ToArray();
                var expected = new float[bags * dim];
                var actual = new float[bags * dim];
                foreach (var pooling in Enum.GetValues<PoolingMode>())
                {
                    var w = pooling == PoolingMode.WeightedSum ? weights : [];
                    EmbeddingBagReference.Forward(table, idx, offsets, expected, pooling, w);
                    var scale = TermScale(table, idx, offsets, w, pooling);
                    foreach (var p in new[] { callerOnly, pool })
                        foreach (bool ints in new[] { false, true })
                        {
                            cases++;
                            Array.Fill(actual, float.NaN);
                            if (ints) EmbeddingBag.Forward(table, intIdx, intOff, actual, pooling, w, p);
                            else EmbeddingBag.Forward(table, idx, offsets, actual, pooling, w, p);
                            for (int i = 0; i < actual.Length; i++)
                                if (!(Math.Abs(actual[i] - expected[i]) <= Tolerance * scale[i] + 1e-30))
                                {
                                    failures.Add($"{storage} dim {dim} {pooling} {(ints ? "int" : "long")} threads {p.ThreadCount + 1}: element {i} = {actual[i]}, reference {expected[i]}");
                                    break;
                                }
                        }
                }
                // A bad index (negative, = rows, huge) at a random place: the kernels' check and the vectorised
                // search at this level must stop the lookup, name that position and leave no partial sums.
                foreach (long bad in new[] { -1L, rows, long.MaxValue })
                    foreach (var p in new[] { callerOnly, pool })
                        foreach (bool ints in new[] { false, true })
                        {
                            cases++;
                            int at = rng.Next(idx.Length);
                            var badIdx = (long[])idx.Clone();
                            badIdx[at] = ints && bad == long.MaxValue ? int.MinValue : bad;
                            Array.Fill(actual, float.NaN);
                            string? problem = null;
                            try
                            {
                                if (ints) EmbeddingBag.Forward(table, badIdx.Select(v => (int)v).ToArray(), intOff, actual, PoolingMode.Sum, default, p);
                                else EmbeddingBag.Forward(table, badIdx, offsets, actual, PoolingMode.Sum, default, p);
                                problem = "accepted";
                            }
                            catch (ArgumentOutOfRangeException e) when (e.Message.Contains($"indices[{at}] = "))
                            {
                                if (actual.Any(v => v != 0)) problem = "left partial sums in the output";
                            }
                            catch (Exception e) { problem = $"threw {e.GetType().Name}: {e.Message}"; }
                            if (problem is not null)
                                failures.Add($"{storage} dim {dim} bad index {badIdx[at]} at {at} {(ints ? "int" : "long")} threads {p.ThreadCount + 1}: {problem}");
                        }
            }
        return new Result(EmbeddingKernels.CurrentIsa, cases, failures);
    }

    /// <summary>Per output element, Σ|w·term| over the bag (for int8 rows the terms are q·scale and bias, which the
    /// kernels may add in another order), divided by the bag length for mean pooling.</summary>
    static double[] TermScale(EmbeddingTable table, long[] indices, long[] offsets, float[] weights, PoolingMode pooling)
    {
        int dim = table.Dim, bags = offsets.Length - 1;
        var scale = new double[bags * dim];
        var row = new float[dim];
        for (int b = 0; b < bags; b++)
        {
            for (long j = offsets[b]; j < offsets[b + 1]; j++)
            {
                double wj = pooling == PoolingMode.WeightedSum ? Math.Abs(weights[j]) : 1;
                if (table.Storage == EmbeddingStorage.Int8Rowwise)
                {
                    var stored = table.StoredRow(indices[j]);
                    float s = BitConverter.ToSingle(stored.Slice(dim, 4)), bias = BitConverter.ToSingle(stored.Slice(dim + 4, 4));
                    for (int d = 0; d < dim; d++) scale[b * dim + d] += wj * (Math.Abs(stored[d] * s) + Math.Abs(bias));
                }
                else
                {
                    table.ReadRow(indices[j], row);
                    for (int d = 0; d < dim; d++) scale[b * dim + d] += wj * Math.Abs(row[d]);
                }
            }
            long n = offsets[b + 1] - offsets[b];
            if (pooling == PoolingMode.Mean && n > 0)
                for (int d = 0; d < dim; d++) scale[b * dim + d] /= n;
        }
        return scale;
    }
}
