using System.Diagnostics;
using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Readers racing one writer that sets rows, merges (single rows, LRU batches, everything) and changes the
/// rank. Rows carry a checkable pattern: the effective row of hot row i is always (s, s, s, s, 0, …, 0) with s an
/// integer that only grows, so
/// <list type="bullet">
/// <item>a torn A (half old, half new) breaks the equality of the first four elements;</item>
/// <item>a torn W (read mid-merge) does too;</item>
/// <item>W new + A still present (double count) gives 2s − W_old, above any value the row has had;</item>
/// <item>old W without A gives W_old, below the value the row had when the read started.</item>
/// </list>
/// The writer publishes, per row, the value it is about to write (started) and the last value it finished writing
/// (done); a read of row i must lie in [done before the read, started after the read].</summary>
[Category("Stress")]
internal class AdapterConcurrencyTests
{
    const int Dim = 16, Pattern = 4, HotRows = 150;

    [Test]
    public void ReadersNeverSeeATornOrDoubleCountedRow()
    {
        var duration = TimeSpan.FromSeconds(10);
        LiveDlrm.Runtime.TorchRuntime.EnsureInitialised();     // loading libtorch inside the first AdaptRank would eat the run
        using var table = EmbeddingTable.Create("stress", 4000, Dim, EmbeddingStorage.Fp32);
        var options = new AdapterOptions { InitialRank = Pattern, MinRank = 1, MaxRank = 8, GrowStep = 2, EnergyToKeep = 1.0, GrowThreshold = 0.01, BudgetFraction = 0.02 };
        using var adapter = new TableAdapter(table, options);
        Assert.That(adapter.SlotCapacity, Is.LessThan(HotRows), "the pool must be smaller than the hot set so that sets evict");
        adapter.SetB(UnitRows(Pattern));

        var started = new long[HotRows];
        var done = new long[HotRows];
        using var stop = new CancellationTokenSource(duration);
        long reads = 0, rankChanges = 0, fullMerges = 0, batchMerges = 0, sets = 0, fastBlocks = 0, redoneBlocks = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();

        var writer = new Thread(() =>
        {
            var rng = new Random(1);
            var w = new float[Dim];
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    int op = rng.Next(10000);
                    if (op < 20) { adapter.AdaptRank(); rankChanges++; }
                    else if (op < 22)
                    {
                        adapter.MergeAll();
                        adapter.SetB(UnitRows(adapter.Rank));     // MergeAll draws a random B; restore the pattern basis
                        fullMerges++;
                    }
                    else if (op < 100) { adapter.MergeOldest(8); batchMerges++; }
                    else
                    {
                        int i = rng.Next(HotRows);
                        long s = Volatile.Read(ref done[i]) + 1;
                        Volatile.Write(ref started[i], s);
                        table.ReadRow(i, w);                       // only this thread writes W (merges), so it is stable here
                        var b = adapter.CopyB(out int rank);
                        var x = SolvePattern(b, rank, failures);

                        var a = new float[rank];
                        for (int k = 0; k < rank; k++) a[k] = (float)((s - w[0]) * x[k]);
                        adapter.SetRow(i, a);
                        Volatile.Write(ref done[i], s);
                        sets++;
                    }
                }
            }
            catch (Exception e) { failures.Enqueue("writer: " + e); }
        }) { Name = "stress-writer" };

        void Reader(int id)
        {
            // Counted per reader thread (the kernels' block counts are thread-scoped), summed when the reader stops.
            using var counts = LoraKernelScopes.CountBlocks();
            try { ReadUntilStopped(id); }
            finally
            {
                Interlocked.Add(ref fastBlocks, counts.Fast);
                Interlocked.Add(ref redoneBlocks, counts.Redone);
            }
        }

        void ReadUntilStopped(int id)
        {
            var rng = new Random(100 + id);
            const int bags = 32;
            var indices = new long[bags];
            var offsets = Enumerable.Range(0, bags + 1).Select(i => (long)i).ToArray();
            var output = new float[bags * Dim];
            var lo = new long[bags];
            var row = new float[Dim];
            try
            {
                while (!stop.IsCancellationRequested && failures.IsEmpty)
                {
                    for (int b = 0; b < bags; b++) { indices[b] = rng.Next(HotRows); lo[b] = Volatile.Read(ref done[indices[b]]); }
                    switch ((id + reads) % 3)
                    {
                        case 0: LoraEmbeddingBag.Forward(adapter, indices, offsets, output); break;
                        case 1: LoraEmbeddingBagReference.Forward(adapter, indices, offsets, output); break;
                        default:
                            for (int b = 0; b < bags; b++) { adapter.ReadEffectiveRow(indices[b], row); row.CopyTo(output, b * Dim); }
                            break;
                    }
                    for (int b = 0; b < bags; b++)
                    {
                        long hi = Volatile.Read(ref started[indices[b]]);
                        string? problem = Check(output.AsSpan(b * Dim, Dim), lo[b], hi);
                        if (problem is not null) failures.Enqueue($"reader {id}, row {indices[b]}: {problem}");
                    }
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception e) { failures.Enqueue($"reader {id}: " + e); }
        }

        var readers = Enumerable.Range(0, 2).Select(id => new Thread(() => Reader(id)) { Name = $"stress-reader-{id}" }).ToList();
        var clock = Stopwatch.StartNew();
        writer.Start();
        readers.ForEach(t => t.Start());
        writer.Join();
        readers.ForEach(t => t.Join());

        TestContext.Out.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {reads} read batches, {sets} row sets, {batchMerges} LRU merges, {fullMerges} full merges, " +
                                  $"{rankChanges} rank decisions ({adapter.History.Count(h => h.NewRank != h.OldRank)} changes), {adapter.MergedRows} rows merged, version {adapter.Version}; " +
                                  $"kernel blocks: {fastBlocks} served on the fast path, {redoneBlocks} redone row by row");
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(5)));
        Assert.That(reads, Is.GreaterThan(1000));
        Assert.That(adapter.History.Count(h => h.NewRank != h.OldRank), Is.GreaterThan(5), "rank changes must have raced the readers");
        Assert.That(fullMerges, Is.GreaterThan(0));
        Assert.That(adapter.MergedRows, Is.GreaterThan(1000));
        // Both kernel paths must have raced the writer: blocks validated against the write epoch, and blocks redone
        // under the per-slot seqlocks because a write overlapped them.
        Assert.That(fastBlocks, Is.GreaterThan(100), "no block passed the write-epoch check while the writer ran");
        Assert.That(redoneBlocks, Is.GreaterThan(100), "no block overlapped a write");
    }

    /// <summary>B = the first <paramref name="rank"/> unit vectors: u = (1, 1, 1, 1, 0, …) is in its row space.</summary>
    static float[] UnitRows(int rank)
    {
        var b = new float[rank * Dim];
        for (int k = 0; k < rank; k++) b[k * Dim + k] = 1;
        return b;
    }

    /// <summary>x with x·B = u, u = (1, 1, 1, 1, 0, …): least squares through the normal equations (rank ≤ 8).</summary>
    static double[] SolvePattern(float[] b, int rank, System.Collections.Concurrent.ConcurrentQueue<string> failures)
    {
        var m = new double[rank, rank + 1];
        for (int i = 0; i < rank; i++)
        {
            for (int j = 0; j < rank; j++)
                for (int d = 0; d < Dim; d++) m[i, j] += (double)b[i * Dim + d] * b[j * Dim + d];
            for (int d = 0; d < Pattern; d++) m[i, rank] += b[i * Dim + d];
        }
        for (int c = 0; c < rank; c++)
        {
            int p = c;
            for (int r = c + 1; r < rank; r++) if (Math.Abs(m[r, c]) > Math.Abs(m[p, c])) p = r;
            for (int j = 0; j <= rank; j++) (m[c, j], m[p, j]) = (m[p, j], m[c, j]);
            for (int r = 0; r < rank; r++)
            {
                if (r == c) continue;
                double f = m[r, c] / m[c, c];
                for (int j = c; j <= rank; j++) m[r, j] -= f * m[c, j];
            }
        }
        var x = new double[rank];
        for (int i = 0; i < rank; i++) x[i] = m[i, rank] / m[i, i];
        for (int d = 0; d < Dim; d++)
        {
            double v = 0;
            for (int k = 0; k < rank; k++) v += x[k] * b[k * Dim + d];
            if (Math.Abs(v - (d < Pattern ? 1 : 0)) > 1e-4) { failures.Enqueue($"writer: pattern not in the row space of B (element {d}: {v})"); break; }
        }
        return x;
    }

    static string? Check(ReadOnlySpan<float> row, long lo, long hi)
    {
        double v = row[0];
        double tol = 0.02 + 1e-5 * Math.Abs(v);
        for (int d = 1; d < Pattern; d++)
            if (Math.Abs(row[d] - v) > tol) return $"torn: elements 0 and {d} are {v} and {row[d]}";
        for (int d = Pattern; d < Dim; d++)
            if (Math.Abs(row[d]) > tol) return $"element {d} is {row[d]}, expected 0";
        long s = (long)Math.Round(v);
        if (Math.Abs(v - s) > tol) return $"value {v} is not one the row ever had (not an integer)";
        if (s < lo || s > hi) return $"value {s} outside [{lo}, {hi}] (a merge seen twice or not at all)";
        return null;
    }
}
