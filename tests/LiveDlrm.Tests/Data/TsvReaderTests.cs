using System.IO.Hashing;
using System.Text;
using LiveDlrm.Data;

namespace LiveDlrm.Tests.Data;

internal class TsvReaderTests
{
    string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("ldlm-tsv-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>label, ts, two dense (log1p, none), a hashed single-valued column, a multi-valued hashed column, an
    /// integer column.</summary>
    internal static StreamSchema SmallSchema(long hashRows = 1000) => new(
        "small", ["label", "ts", "count", "score", "site", "tags", "slot"], "label",
        [new DenseColumn("count", DenseTransform.Log1p), new DenseColumn("score", DenseTransform.None)],
        [new SparseColumn("site", "site", hashRows, SparseMapping.Hash, HashSeed: 42),
         new SparseColumn("tags", "tags", hashRows, SparseMapping.Hash, HashSeed: 7, Separator: ","),
         new SparseColumn("slot", "slot", 10, SparseMapping.Integer)],
        timestamp: "ts");

    string Write(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, Encoding.UTF8.GetBytes(content));
        return path;
    }

    static long Hash(string token, ulong seed, long rows) => (long)(XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(token), (long)seed) % (ulong)rows);

    static List<EventBatch> ReadAll(IEventSource source, int batchSize)
    {
        var list = new List<EventBatch>();
        while (true)
        {
            var b = new EventBatch(source.Schema.Layout, batchSize);
            if (source.Read(b) == 0) return list;
            list.Add(b);
        }
    }

    [Test]
    public void ParsesValuesTransformsAndMappings()
    {
        string path = Write("a.tsv", "1\t100\t3\t-1.5\tabc\tx,y,z\t4\n0\t101\t\t2e1\t\t\t9\n");
        using var source = new TsvEventSource(path, SmallSchema());
        var b = new EventBatch(source.Schema.Layout, 8);
        Assert.That(source.Read(b), Is.EqualTo(2));

        Assert.That(b.Labels.ToArray(), Is.EqualTo(new[] { 1f, 0f }));
        Assert.That(b.Timestamps.ToArray(), Is.EqualTo(new[] { 100L, 101L }));
        Assert.That(b.RequestIds.ToArray(), Is.EqualTo(new[] { 0L, 1L }));
        // count: log(1 + 3); empty → 0. score as is.
        Assert.That(b.Dense.ToArray(), Is.EqualTo(new[] { (float)Math.Log(4), -1.5f, 0f, 20f }));
        // site: XxHash64(seed 42) mod 1000; second event's field is empty → empty bag.
        Assert.That(b.Offsets(0).ToArray(), Is.EqualTo(new long[] { 0, 1, 1 }));
        Assert.That(b.Indices(0).ToArray(), Is.EqualTo(new[] { Hash("abc", 42, 1000) }));
        // tags: multi-valued, three tokens in the first bag.
        Assert.That(b.Offsets(1).ToArray(), Is.EqualTo(new long[] { 0, 3, 3 }));
        Assert.That(b.Indices(1).ToArray(), Is.EqualTo(new[] { Hash("x", 7, 1000), Hash("y", 7, 1000), Hash("z", 7, 1000) }));
        Assert.That(b.Indices(2).ToArray(), Is.EqualTo(new long[] { 4, 9 }));
        Assert.That(source.Read(b), Is.EqualTo(0));
        Assert.That(source.Report.Events, Is.EqualTo(2));
        Assert.That(source.Report.BadLines, Is.Zero);
    }

    [Test]
    public void CrlfAndMissingFinalNewlineGiveTheSameEventsAsLf()
    {
        string lf = "1\t5\t2\t0.5\ta\tp,q\t1\n0\t6\t7\t1\tb\tq\t2\n1\t7\t1\t2\tc\t\t3\n";
        string crlf = lf.Replace("\n", "\r\n");
        string noFinal = lf.TrimEnd('\n');
        var reference = ReadAll(new TsvEventSource(Write("lf.tsv", lf), SmallSchema()), 16).Single();
        foreach (var (name, text) in new[] { ("crlf.tsv", crlf), ("nofinal.tsv", noFinal) })
        {
            using var source = new TsvEventSource(Write(name, text), SmallSchema());
            var b = ReadAll(source, 16).Single();
            Assert.That(source.Report.BadLines, Is.Zero, name);
            EventBatchAssert.Equal(b, reference, name);
        }
    }

    [Test]
    public void MultiValuedFieldSkipsEmptyTokens()
    {
        using var source = new TsvEventSource(Write("m.tsv", "1\t1\t0\t0\ts\t,a,,b,\t0\n"), SmallSchema());
        var b = ReadAll(source, 4).Single();
        Assert.That(b.Indices(1).ToArray(), Is.EqualTo(new[] { Hash("a", 7, 1000), Hash("b", 7, 1000) }));
    }

    [Test]
    public void BadLinesAreSkippedCountedAndReportedWithLineNumbers()
    {
        string text =
            "1\t1\t0\t0\ta\tb\t1\n" +      // 1 good
            "1\t1\t0\t0\ta\tb\n" +         // 2 too few columns
            "0\t2\tzz\t0\ta\tb\t1\n" +     // 3 unparsable number
            "2\t3\t0\t0\ta\tb\t1\n" +      // 4 label not 0/1
            "0\t4\t0\t0\ta\tb\t1\textra\n" + // 5 too many columns
            "0\t5\t0\t0\ta\tb\t10\n" +     // 6 integer row out of range
            "0\t\t0\t0\ta\tb\t1\n" +       // 7 empty timestamp
            "0\t8\t1\t1\ta\tb\t2\n";       // 8 good
        var log = new List<string>();
        using var source = new TsvEventSource(Write("bad.tsv", text), SmallSchema(), new TsvReaderOptions { Logger = new ListLogger(log) });
        var batches = ReadAll(source, 3);
        Assert.That(batches.Sum(b => b.Count), Is.EqualTo(2));
        Assert.That(batches.SelectMany(b => b.Timestamps.ToArray()), Is.EqualTo(new[] { 1L, 8L }));
        // Request ids keep the data-line ordinal, so skipped lines leave gaps rather than shifting later events.
        Assert.That(batches.SelectMany(b => b.RequestIds.ToArray()), Is.EqualTo(new[] { 0L, 7L }));
        var r = source.Report;
        Assert.That(r.BadLines, Is.EqualTo(6));
        Assert.That(r.Lines, Is.EqualTo(8));
        Assert.That(r.FirstBadLines.Select(b => b.LineNumber), Is.EqualTo(new long[] { 2, 3, 4, 5, 6, 7 }));
        Assert.That(r.FirstBadLines[0].Reason, Does.Contain("expected 7 columns, found 6"));
        Assert.That(r.FirstBadLines[1].Reason, Does.Contain("column 3 (count)").And.Contain("'zz' is not a number"));
        Assert.That(r.FirstBadLines[2].Reason, Does.Contain("label '2' is not 0 or 1"));
        Assert.That(r.FirstBadLines[3].Reason, Does.Contain("found more"));
        Assert.That(r.FirstBadLines[4].Reason, Does.Contain("row 10 is outside [0, 10)"));
        Assert.That(r.FirstBadLines[5].Reason, Does.Contain("empty timestamp"));
        Assert.That(log, Has.Some.Contains("line 3"));
    }

    [Test]
    public void BadLineIsFatalWhenAsked()
    {
        string path = Write("f.tsv", "1\t1\t0\t0\ta\tb\t1\n1\t2\tNaN\t0\ta\tb\t1\n");
        using var source = new TsvEventSource(path, SmallSchema(), new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
        var b = new EventBatch(source.Schema.Layout, 8);
        var e = Assert.Throws<DataFormatException>(() => source.Read(b))!;
        Assert.That(e.Message, Does.Contain("f.tsv line 2").And.Contain("(count)"));
    }

    [Test]
    public void BatchesSplitTheStreamAndKeepTheCsrContract()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 11; i++) sb.Append($"{i % 2}\t{i}\t{i}\t0\ts{i}\t{string.Join(',', Enumerable.Range(0, i % 4).Select(t => "t" + t))}\t{i % 10}\n");
        using var source = new TsvEventSource(Write("s.tsv", sb.ToString()), SmallSchema());
        var batches = ReadAll(source, 4);
        Assert.That(batches.Select(b => b.Count), Is.EqualTo(new[] { 4, 4, 3 }));
        long expectedTags = 0;
        foreach (var b in batches)
            for (int f = 0; f < b.SparseCount; f++)
            {
                var o = b.Offsets(f);
                Assert.That(o.Length, Is.EqualTo(b.Count + 1));
                Assert.That(o[0], Is.Zero);
                Assert.That(o[^1], Is.EqualTo(b.Indices(f).Length));
                for (int i = 0; i < b.Count; i++) Assert.That(o[i + 1], Is.GreaterThanOrEqualTo(o[i]));
                if (f == 1) expectedTags += b.Indices(f).Length;
            }
        Assert.That(expectedTags, Is.EqualTo(Enumerable.Range(0, 11).Sum(i => i % 4)));
        Assert.That(batches.SelectMany(b => b.Timestamps.ToArray()), Is.EqualTo(Enumerable.Range(0, 11).Select(i => (long)i)));
    }

    [Test]
    public void WithoutTimestampEventTimeIsLineOverEventsPerSecond()
    {
        var schema = new StreamSchema("t", ["label", "x"], "label", [new DenseColumn("x", DenseTransform.None)], [],
                                      eventsPerSecond: 2, startTime: 1000);
        using var source = new TsvEventSource(Write("t.tsv", "0\t1\n1\t2\n0\t3\nbad\n1\t5\n"), schema);
        var b = ReadAll(source, 16).Single();
        Assert.That(b.Timestamps.ToArray(), Is.EqualTo(new long[] { 1000, 1000, 1001, 1002 }));
        Assert.That(source.Report.FirstBadLines.Single().LineNumber, Is.EqualTo(4));
    }

    [Test]
    public void HeaderLineIsCheckedAndSkipped()
    {
        var schema = new StreamSchema("h", ["label", "x"], "label", [new DenseColumn("x", DenseTransform.None)], [], header: true);
        using (var ok = new TsvEventSource(Write("h.tsv", "label\tx\r\n1\t2\r\n"), schema))
            Assert.That(ReadAll(ok, 4).Single().Dense.ToArray(), Is.EqualTo(new[] { 2f }));
        var e = Assert.Throws<DataFormatException>(() => new TsvEventSource(Write("h2.tsv", "label\ty\n1\t2\n"), schema))!;
        Assert.That(e.Message, Does.Contain("line 1").And.Contain("header"));
    }

    [Test]
    public void VocabularyMapsKnownTokensAndSendsOthersToTheOutOfVocabularyRow()
    {
        File.WriteAllText(Path.Combine(_dir, "vocab.txt"), "red\r\ngreen\nblue\n");
        string json = """
            { "columns": ["label", "color"], "label": "label",
              "sparse": [ { "name": "color", "rows": 4, "mapping": "vocabulary", "vocabulary": "vocab.txt" } ] }
            """;
        File.WriteAllText(Path.Combine(_dir, "v.schema.json"), json);
        var schema = StreamSchema.Load(Path.Combine(_dir, "v.schema.json"));
        using var source = new TsvEventSource(Write("v.tsv", "1\tgreen\n0\tpurple\n1\tred\n"), schema);
        Assert.That(ReadAll(source, 4).Single().Indices(0).ToArray(), Is.EqualTo(new long[] { 1, 3, 0 }));
    }

    [Test]
    public void VocabularyTooLargeForTheTableIsASchemaErrorNamingTheField()
    {
        File.WriteAllText(Path.Combine(_dir, "vocab.txt"), "a\nb\nc\n");
        var schema = new StreamSchema("v", ["label", "c"], "label", [],
                                      [new SparseColumn("c", "c", 3, SparseMapping.Vocabulary, VocabularyFile: Path.Combine(_dir, "vocab.txt"))]);
        var e = Assert.Throws<SchemaException>(() => new TsvEventSource(Write("v.tsv", "1\ta\n"), schema))!;
        Assert.That(e.Message, Does.StartWith("sparse[0].rows"));
    }

    [Test]
    public void LinesLongerThanTheReadBufferAreRead()
    {
        string tags = string.Join(',', Enumerable.Range(0, 3000).Select(i => "tag" + i));
        string path = Write("long.tsv", $"1\t1\t0\t0\ta\t{tags}\t1\n0\t2\t0\t0\ta\tb\t1\n");
        using var source = new TsvEventSource(path, SmallSchema(), new TsvReaderOptions { ReadBufferBytes = 4096 });
        var b = ReadAll(source, 4).Single();
        Assert.That(b.Bag(1, 0).Length, Is.EqualTo(3000));
        Assert.That(b.Bag(1, 1).Length, Is.EqualTo(1));
    }

    [Test]
    public void ResetReadsTheSameEventsAgain()
    {
        using var source = new TsvEventSource(Write("r.tsv", "1\t1\t0\t0\ta\tb\t1\n0\t2\t1\t1\tc\td\t2\n"), SmallSchema());
        var first = ReadAll(source, 4).Single();
        source.Reset();
        EventBatchAssert.Equal(ReadAll(source, 4).Single(), first, "after Reset");
    }
}

internal static class EventBatchAssert
{
    public static void Equal(EventBatch actual, EventBatch expected, string what)
    {
        Assert.That(actual.Count, Is.EqualTo(expected.Count), what + ": count");
        Same(actual.Labels, expected.Labels, what + ": labels");
        Same(actual.Timestamps, expected.Timestamps, what + ": timestamps");
        Same(actual.RequestIds, expected.RequestIds, what + ": request ids");
        Same(actual.TrueProbabilities, expected.TrueProbabilities, what + ": true probabilities");
        Same(actual.Dense, expected.Dense, what + ": dense");
        for (int f = 0; f < expected.SparseCount; f++)
        {
            Same(actual.Offsets(f), expected.Offsets(f), $"{what}: offsets of feature {f}");
            Same(actual.Indices(f), expected.Indices(f), $"{what}: indices of feature {f}");
        }
    }

    /// <summary>Bit-exact span equality; NUnit's element-wise comparison (slow on long arrays) only to describe a mismatch.</summary>
    static void Same<T>(ReadOnlySpan<T> actual, ReadOnlySpan<T> expected, string what) where T : unmanaged, IEquatable<T>
    {
        if (System.Runtime.InteropServices.MemoryMarshal.AsBytes(actual).SequenceEqual(System.Runtime.InteropServices.MemoryMarshal.AsBytes(expected))) return;
        Assert.That(actual.ToArray(), Is.EqualTo(expected.ToArray()), what);
        Assert.Fail($"{what}: differs bitwise");
    }

    /// <summary>All events of a source concatenated into one batch (small streams only).</summary>
    public static EventBatch Drain(IEventSource source, int batchSize = 1000)
    {
        var all = new List<EventBatch>();
        int total = 0;
        while (true)
        {
            var b = new EventBatch(source.Schema.Layout, batchSize);
            if (source.Read(b) == 0) break;
            total += b.Count;
            all.Add(b);
        }
        var merged = new EventBatch(source.Schema.Layout, Math.Max(1, total));
        foreach (var b in all) merged.AppendRange(b, 0, b.Count);
        return merged;
    }
}
