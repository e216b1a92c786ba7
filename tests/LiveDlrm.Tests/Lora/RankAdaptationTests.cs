using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>Rank truncation and growth against ΔW computed densely.</summary>
internal class RankAdaptationTests
{
    const int Rows = 300, Dim = 16;

    /// <summary>ΔW = effective − base, densely.</summary>
    static double[][] Delta(TableAdapter adapter)
    {
        var effective = LoraTestData.EffectiveRows(adapter);
        var w = new float[Dim];
        for (long i = 0; i < Rows; i++)
        {
            adapter.Table.ReadRow(i, w);
            for (int d = 0; d < Dim; d++) effective[i][d] -= w[d];
        }
        return effective;
    }

    static double FrobeniusSquared(double[][] x, double[][]? minus = null)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++)
            for (int d = 0; d < x[i].Length; d++) { double v = x[i][d] - (minus?[i][d] ?? 0); s += v * v; }
        return s;
    }

    [Test]
    public void TauOneShrinksToTheTrueRankAndKeepsAbExactly()
    {
        var rng = new Random(1);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 2);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.9, EnergyToKeep = 1.0 });
        // A = X·Y with X n×3, Y 3×8: ΔW = A·B has rank 3 although the adapter has rank 8.
        var y = LoraTestData.RandomVector(rng, 3 * 8);
        for (long i = 0; i < 80; i++)
        {
            var x = LoraTestData.RandomVector(rng, 3);
            var a = new float[8];
            for (int k = 0; k < 8; k++) a[k] = x[0] * y[k] + x[1] * y[8 + k] + x[2] * y[16 + k];
            adapter.SetRow(i * 3, a);
        }
        var before = Delta(adapter);
        var e = adapter.AdaptRank();
        Assert.That(e.OldRank, Is.EqualTo(8));
        Assert.That(e.NewRank, Is.EqualTo(3));
        Assert.That(adapter.Rank, Is.EqualTo(3));
        Assert.That(e.KeptEnergy, Is.EqualTo(1.0).Within(1e-9));
        Assert.That(e.SingularValues.Sum(s => s * s), Is.EqualTo(FrobeniusSquared(before)).Within(1e-6 * FrobeniusSquared(before)), "Σσ² = ‖ΔW‖²");
        Assert.That(LoraTestData.MaxAbsDiff(before, Delta(adapter)), Is.LessThan(1e-5));
        Assert.That(adapter.ActiveRows, Is.EqualTo(80));
        Assert.That(adapter.History, Has.Count.EqualTo(1));
    }

    /// <summary>A rank change keeps B's scale: the new B rows are orthogonal with the old B's rms row norm (A absorbs
    /// the singular values), so the optimizer states carried over keep meaning the same step sizes; ΔW is unchanged.</summary>
    [Test]
    public void ARankChangeKeepsTheScaleOfB()
    {
        var rng = new Random(8);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 9);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.9, EnergyToKeep = 0.8 });
        var b = LoraTestData.RandomVector(rng, 8 * Dim);
        for (int i = 0; i < b.Length; i++) b[i] *= 3;             // a scale far from 1, so unit rows would show
        adapter.SetB(b);
        LoraTestData.FillAdapter(adapter, rng, 100);
        double oldRms = Math.Sqrt(b.Sum(v => (double)v * v) / 8);
        var before = Delta(adapter);
        var e = adapter.AdaptRank();
        Assert.That(e.NewRank, Is.InRange(1, 7), "the test needs a truncation");
        var nb = adapter.CopyB(out int rank);
        for (int c = 0; c < rank; c++)
        {
            double norm = Math.Sqrt(Enumerable.Range(0, Dim).Sum(d => (double)nb[c * Dim + d] * nb[c * Dim + d]));
            Assert.That(norm, Is.EqualTo(oldRms).Within(1e-4 * oldRms), $"row {c} of the new B");
            for (int o = 0; o < c; o++)
            {
                double dot = Enumerable.Range(0, Dim).Sum(d => (double)nb[c * Dim + d] * nb[o * Dim + d]);
                Assert.That(Math.Abs(dot), Is.LessThan(1e-4 * oldRms * oldRms), $"rows {o} and {c} of the new B");
            }
        }
        double discarded = e.SingularValues.Skip(e.NewRank).Sum(s => s * s);
        Assert.That(FrobeniusSquared(before, Delta(adapter)), Is.EqualTo(discarded).Within(1e-4 * FrobeniusSquared(before)));
    }

    [Test]
    public void TruncationErrorIsTheDiscardedEnergy([Values(0.9, 0.6)] double tau)
    {
        var rng = new Random(3);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 4);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 8, MaxRank = 8, BudgetFraction = 0.9, EnergyToKeep = tau });
        LoraTestData.FillAdapter(adapter, rng, 100);
        var before = Delta(adapter);
        double energy = FrobeniusSquared(before);
        var e = adapter.AdaptRank();
        Assert.That(e.NewRank, Is.LessThan(8), "the test needs a truncation to happen");
        double discarded = e.SingularValues.Skip(e.NewRank).Sum(s => s * s);
        double error = FrobeniusSquared(before, Delta(adapter));
        Assert.That(error, Is.EqualTo(discarded).Within(1e-4 * energy), "‖ΔW − ΔW'‖² equals the discarded σ² (Eckart–Young)");
        Assert.That(error, Is.LessThanOrEqualTo((1 - tau) * energy * (1 + 1e-6)));
        Assert.That(e.KeptEnergy, Is.GreaterThanOrEqualTo(tau - 1e-9));
        // and it is the smallest such k
        double withoutLast = e.SingularValues.Take(e.NewRank - 1).Sum(s => s * s) / energy;
        Assert.That(withoutLast, Is.LessThan(tau));
    }

    [Test]
    public void GrowthAddsZeroADirectionsWithNonzeroOrthogonalBRowsThatLearn()
    {
        var rng = new Random(5);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 6);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MaxRank = 12, GrowStep = 4, GrowThreshold = 0.01, EnergyToKeep = 0.99, BudgetFraction = 0.9 });
        long[] rows = LoraTestData.FillAdapter(adapter, rng, 100);
        var before = Delta(adapter);
        var e = adapter.AdaptRank();
        Assert.That((e.OldRank, e.NewRank), Is.EqualTo((4, 8)));
        Assert.That(LoraTestData.MaxAbsDiff(before, Delta(adapter)), Is.LessThan(1e-5), "growth leaves ΔW unchanged");
        var b = adapter.CopyB(out int rank);
        Assert.That(rank, Is.EqualTo(8));
        for (int k = 4; k < 8; k++)
        {
            double norm = 0;
            for (int d = 0; d < Dim; d++) norm += b[k * Dim + d] * b[k * Dim + d];
            Assert.That(Math.Sqrt(norm), Is.EqualTo(adapter.Options.BInitScale).Within(1e-4), $"B row {k} norm");
            for (int j = 0; j < k; j++)
            {
                double dot = 0;
                for (int d = 0; d < Dim; d++) dot += b[k * Dim + d] * b[j * Dim + d];
                Assert.That(dot, Is.EqualTo(0).Within(1e-4), $"B rows {k} and {j} orthogonal");
            }
        }
        var a = new float[12];
        Assert.That(adapter.ReadRow(rows[0], a), Is.EqualTo(8));
        Assert.That(a[4..8], Is.All.EqualTo(0f));

        long[] indices = { rows[0] }, offsets = { 0, 1 };
        Assert.That(adapter.ApplyGradients(indices, offsets, LoraTestData.RandomVector(rng, Dim)), Is.True);
        adapter.ReadRow(rows[0], a);
        Assert.That(a[4..8].Count(x => x != 0), Is.EqualTo(4), "gradients reach the new A columns through the nonzero new B rows");
    }

    [Test]
    public void RankStaysWithinBoundsAndHistoryRecordsEveryDecision()
    {
        var rng = new Random(7);
        using var table = LoraTestData.Table(EmbeddingStorage.Fp16, Rows, Dim, seed: 8);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 4, MinRank = 2, MaxRank = 6, GrowStep = 4, GrowThreshold = 0.0, EnergyToKeep = 0.3, BudgetFraction = 0.9 });
        LoraTestData.FillAdapter(adapter, rng, 50);
        for (int i = 0; i < 6; i++)
        {
            var e = adapter.AdaptRank();
            Assert.That(e.NewRank, Is.InRange(2, 6));
            LoraTestData.FillAdapter(adapter, rng, 20);
        }
        Assert.That(adapter.History, Has.Count.EqualTo(6));
        Assert.That(adapter.History.All(h => h.AdapterBytes <= h.BudgetBytes));
    }
}
