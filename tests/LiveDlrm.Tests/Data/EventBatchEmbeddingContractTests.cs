using System.Text;
using LiveDlrm.Data;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Data;

/// <summary>Batches from every source feed EmbeddingBag.Forward as they are: the CSR passes the kernel's validation
/// and pools exactly the bag each event holds (multi-valued and empty bags included).</summary>
internal class EventBatchEmbeddingContractTests
{
    const int Dim = 4;

    static EventBatch FromTsv()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 300; i++)
            sb.Append($"{i % 2}\t{i}\t{i % 5}\t1\t{(i % 4 == 0 ? "" : "s" + i % 13)}\t{string.Join(',', Enumerable.Range(0, i % 6).Select(t => "t" + (i * 7 + t) % 50))}\t{i % 10}\n");
        string path = Path.Combine(Path.GetTempPath(), $"ldlm-contract-{Guid.NewGuid():N}.tsv");
        File.WriteAllText(path, sb.ToString());
        try
        {
            using var source = new TsvEventSource(path, TsvReaderTests.SmallSchema(hashRows: 97), new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
            var b = new EventBatch(source.Schema.Layout, 300);
            source.Read(b);
            return b;
        }
        finally { File.Delete(path); }
    }

    static EventBatch FromSynthetic()
    {
        using var source = new SyntheticEventSource(new SyntheticStreamConfig { Users = 300, InitialItems = 100, MaxNewItems = 50, Drift = 2, EventsPerSecond = 1 }, 2000);
        return EventBatchAssert.Drain(source, 512);
    }

    static IEnumerable<TestCaseData> Batches()
    {
        yield return new TestCaseData((Func<EventBatch>)FromTsv).SetName("Tsv");
        yield return new TestCaseData((Func<EventBatch>)FromSynthetic).SetName("Synthetic");
    }

    [TestCaseSource(nameof(Batches))]
    public void BatchCsrPoolsEachEventsBag(Func<EventBatch> make)
    {
        var batch = make();
        for (int f = 0; f < batch.SparseCount; f++)
        {
            var layout = batch.Layout.Sparse[f];
            using var table = EmbeddingTable.Create(layout.Table, layout.Rows, Dim, EmbeddingStorage.Fp32);
            var row = new float[Dim];
            for (long r = 0; r < layout.Rows; r++)
            {
                for (int d = 0; d < Dim; d++) row[d] = (r % 97) + d * 0.25f;
                table.WriteRow(r, row);
            }
            var kernel = new float[batch.Count * Dim];
            var reference = new float[batch.Count * Dim];
            EmbeddingBag.Forward(table, batch.Indices(f), batch.Offsets(f), kernel, PoolingMode.Sum, pool: null);
            EmbeddingBagReference.Forward(table, batch.Indices(f), batch.Offsets(f), reference, PoolingMode.Sum);
            var expected = new float[batch.Count * Dim];
            for (int e = 0; e < batch.Count; e++)
                foreach (long r in batch.Bag(f, e))
                    for (int d = 0; d < Dim; d++) expected[e * Dim + d] += (r % 97) + d * 0.25f;
            Assert.That(reference, Is.EqualTo(expected).Within(1e-3f), $"reference, table {layout.Table}");
            Assert.That(kernel, Is.EqualTo(expected).Within(1e-3f), $"kernel, table {layout.Table}");
        }
    }
}
