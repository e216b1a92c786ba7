using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>An adapter restored from its saved state continues bit for bit like the one that never stopped — also
/// after merges, where the free-slot order decides which slots new rows get and which rows the next merge picks (a
/// fleet replica restarted from its checkpoint depends on it).</summary>
internal class AdapterStateContinuationTests
{
    const int Rows = 3000, Dim = 8, Rank = 4;
    static readonly long[] Hot = Enumerable.Range(0, 20).Select(i => (long)i * 7).ToArray();

    static byte[] State(TableAdapter a)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) a.WriteState(w);
        return ms.ToArray();
    }

    static void Step(TableAdapter a, int step)
    {
        var rng = new Random(1000 + step);   // the same batch for both adapters
        var batch = LoraTestData.RandomBatch(rng, Rows, bags: 4, maxLen: 4, hot: Hot, weighted: false);   // a few new rows a step
        Assert.That(a.ApplyGradients(batch.Indices, batch.Offsets, LoraTestData.RandomVector(rng, batch.Bags * Dim), PoolingMode.Sum), Is.True);
    }

    [Test]
    public void ARestoredAdapterContinuesExactlyAfterMerges()
    {
        var options = new AdapterOptions { InitialRank = Rank, MaxRank = Rank, BudgetFraction = 0.05, EvictFraction = 0.25, LearningRateA = 0.05f };
        using var steadyTable = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var restoredTable = LoraTestData.Table(EmbeddingStorage.Fp32, Rows, Dim, seed: 3);
        using var steady = new TableAdapter(steadyTable, options);
        // Save where a merge has left several slots free (their order is the merge's, not ascending).
        int step = 0;
        while (step < 2000 && !(steady.MergedRows > 0 && steady.SlotCapacity - steady.ActiveRows >= 3)) Step(steady, step++);
        Assert.That(steady.SlotCapacity - steady.ActiveRows, Is.GreaterThanOrEqualTo(3), "a merge must have left free slots");

        // The restored one: the base rows as merged so far, then the adapter state.
        using var restored = new TableAdapter(restoredTable, options);
        for (long r = 0; r < Rows; r++) steadyTable.StoredRow(r).CopyTo(restoredTable.StoredRow(r));
        using (var reader = new BinaryReader(new MemoryStream(State(steady)))) restored.ReadState(reader);
        Assert.That(State(restored), Is.EqualTo(State(steady)));

        for (int s = step; s < step + 40; s++) { Step(steady, s); Step(restored, s); }
        Assert.That(State(restored), Is.EqualTo(State(steady)));
        for (long r = 0; r < Rows; r++)
            Assert.That(restoredTable.StoredRow(r).SequenceEqual(steadyTable.StoredRow(r)), Is.True, $"base row {r}");
    }
}
