using System.Text;
using LiveDlrm.Data;

namespace LiveDlrm.Tests.Data;

internal class InputHardeningTests
{
    string _root = "";

    [SetUp]
    public void CreateRoot() => _root = Directory.CreateTempSubdirectory("livedlrm-input-").FullName;

    [TearDown]
    public void DeleteRoot() { if (Directory.Exists(_root)) Directory.Delete(_root, true); }

    string P(string name) => Path.Combine(_root, name);

    (string Tsv, StreamSchema Schema) Data(int events = 300)
    {
        string tsv = P("data.tsv");
        SyntheticStreamFiles.Write(tsv, new SyntheticStreamConfig { Users = 30, InitialItems = 10, MaxNewItems = 5 }, events);
        return (tsv, StreamSchema.Load(SyntheticStreamFiles.SchemaPathFor(tsv)));
    }

    static long ReadAll(TsvEventSource source)
    {
        var batch = new EventBatch(source.Schema.Layout, 64, 2);
        long n = 0;
        while (source.Read(batch) > 0) n += batch.Count;
        return n;
    }

    [Test]
    public void AByteOrderMarkDoesNotCostTheFirstLine()
    {
        var (tsv, schema) = Data();
        File.WriteAllBytes(P("bom.tsv"), [0xEF, 0xBB, 0xBF, .. File.ReadAllBytes(tsv)]);
        using var source = new TsvEventSource(P("bom.tsv"), schema, new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
        Assert.That(ReadAll(source), Is.EqualTo(300));
    }

    [Test]
    public void ASchemaWithAByteOrderMarkLoads()
    {
        var (_, schema) = Data();
        File.WriteAllText(P("bom.schema.json"), "\uFEFF" + schema.ToJson(), new UTF8Encoding(true));
        Assert.That(StreamSchema.Load(P("bom.schema.json")).Columns, Is.EqualTo(schema.Columns));
        Assert.That(StreamSchema.Parse("\uFEFF" + schema.ToJson()).Columns, Is.EqualTo(schema.Columns));
    }

    [Test]
    public void ControlBytesInADataErrorAreEscaped()
    {
        var (tsv, schema) = Data(5);
        File.WriteAllText(P("esc.tsv"), "\u001b[2Jx\t" + File.ReadAllLines(tsv)[0].Split('\t', 2)[1] + "\n");
        using var source = new TsvEventSource(P("esc.tsv"), schema, new TsvReaderOptions { OnBadLine = BadLinePolicy.Fail });
        var e = Assert.Throws<DataFormatException>(() => ReadAll(source))!;
        Assert.That(e.Message, Does.Contain("\\x1b[2Jx").And.Not.Contain("\u001b"));
    }

    static string VocabularySchema(string vocabulary, bool outside = false) =>
        "{ \"columns\": [\"label\", \"c\"], \"label\": \"label\", \"sparse\": [ { \"name\": \"c\", \"rows\": 10, \"mapping\": \"vocabulary\", \"vocabulary\": \"" + vocabulary + "\" } ]" +
        (outside ? ", \"filesOutsideSchemaFolder\": true" : "") + " }";

    [Test]
    public void AVocabularyMustBeABoundedRegularFileInTheSchemasFolder()
    {
        Directory.CreateDirectory(P("s"));
        File.WriteAllText(P("v.txt"), "a\nb\n");
        File.WriteAllText(P("s/v.txt"), "a\nb\n");
        File.WriteAllText(P("s/zero.json"), VocabularySchema("/dev/zero", outside: true));
        File.WriteAllText(P("s/out.json"), VocabularySchema("../v.txt"));
        File.WriteAllText(P("s/allowed.json"), VocabularySchema("../v.txt", outside: true));
        File.WriteAllText(P("s/in.json"), VocabularySchema("v.txt"));
        Assert.That(() => new TsvLineParser(StreamSchema.Load(P("s/zero.json"))), Throws.TypeOf<SchemaException>().With.Message.Contains("regular file"));
        Assert.That(() => StreamSchema.Load(P("s/out.json")), Throws.TypeOf<SchemaException>().With.Message.Contains("outside"));
        Assert.That(() => new TsvLineParser(StreamSchema.Load(P("s/allowed.json"))), Throws.Nothing);
        Assert.That(() => new TsvLineParser(StreamSchema.Load(P("s/in.json"))), Throws.Nothing);
        Assert.That(() => StreamSchema.Load("/dev/zero"), Throws.TypeOf<SchemaException>().With.Message.Contains("regular file"));
    }

    [Test]
    public void BadLinesFailIsHonouredWhenACacheBuiltUnderSkipExists()
    {
        var (tsv, schema) = Data();
        var lines = File.ReadAllLines(tsv);
        lines[2] = "oops";
        File.WriteAllText(P("bad.tsv"), string.Join("\n", lines) + "\n");
        using (var build = new TsvEventSource(P("bad.tsv"), schema, new TsvReaderOptions { Cache = CacheMode.Rebuild }))
            Assert.That(ReadAll(build), Is.EqualTo(299));
        Assert.That(File.Exists(P("bad.tsv.ldcache")));
        using var strict = new TsvEventSource(P("bad.tsv"), schema, new TsvReaderOptions { Cache = CacheMode.Auto, OnBadLine = BadLinePolicy.Fail });
        Assert.That(() => ReadAll(strict), Throws.TypeOf<DataFormatException>().With.Message.Contains("line 3"));
    }

    [Test]
    public void ASameSizeEditWithTheMtimeRestoredMakesTheCacheStale()
    {
        var (tsv, schema) = Data();
        using (var build = new TsvEventSource(tsv, schema, new TsvReaderOptions { Cache = CacheMode.Rebuild })) ReadAll(build);
        var key = EventCacheKey.For(schema, tsv);
        Assert.That(EventCache.CheckUsable(tsv + ".ldcache", key, schema.Layout), Is.Null);
        var time = File.GetLastWriteTimeUtc(tsv);
        var bytes = File.ReadAllBytes(tsv);
        bytes[bytes.Length / 2] = bytes[bytes.Length / 2] == (byte)'1' ? (byte)'2' : (byte)'1';
        File.WriteAllBytes(tsv, bytes);
        File.SetLastWriteTimeUtc(tsv, time);
        Assert.That(EventCache.CheckUsable(tsv + ".ldcache", EventCacheKey.For(schema, tsv), schema.Layout), Does.Contain("changed"));
    }
}
