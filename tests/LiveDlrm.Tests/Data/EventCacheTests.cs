using LiveDlrm.Data;

namespace LiveDlrm.Tests.Data;

internal class EventCacheTests
{
    string _dir = "";
    string _tsv = "";
    StreamSchema _schema = null!;

    /// <summary>A synthetic stream of a bit more than two cache groups (so group boundaries are crossed) plus a
    /// few bad lines, an empty bag and a multi-valued column's worth of variety via the small schema below.</summary>
    string _master = "";

    [OneTimeSetUp]
    public void WriteStream()
    {
        _master = Directory.CreateTempSubdirectory("ldlm-cache-master-").FullName;
        string tsv = Path.Combine(_master, "s.tsv");
        var config = new SyntheticStreamConfig { Users = 2000, InitialItems = 500, MaxNewItems = 100, Seed = 3 };
        SyntheticStreamFiles.Write(tsv, config, EventCache.GroupEvents * 2 + 123);
        File.AppendAllText(tsv, "garbage line\n1\t2\n");
    }

    [OneTimeTearDown]
    public void DeleteStream() => Directory.Delete(_master, recursive: true);

    [SetUp]
    public void SetUp()
    {
        _dir = Directory.CreateTempSubdirectory("ldlm-cache-").FullName;
        _tsv = Path.Combine(_dir, "s.tsv");
        File.Copy(Path.Combine(_master, "s.tsv"), _tsv);
        File.Copy(Path.Combine(_master, "s.schema.json"), Path.Combine(_dir, "s.schema.json"));
        _schema = StreamSchema.Load(SyntheticStreamFiles.SchemaPathFor(_tsv));
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    string CachePath => _tsv + ".ldcache";

    EventBatch Read(CacheMode mode, out DataReadReport report, List<string>? log = null, int batch = 1000)
    {
        using var source = new TsvEventSource(_tsv, _schema, new TsvReaderOptions { Cache = mode, Logger = log is null ? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance : new ListLogger(log) });
        var all = EventBatchAssert.Drain(source, batch);
        report = source.Report;
        return all;
    }

    [Test]
    public void CacheRoundTripEqualsParse()
    {
        var parsed = Read(CacheMode.Off, out var parseReport);
        Assert.That(File.Exists(CachePath), Is.False);
        var building = Read(CacheMode.Auto, out var buildReport);
        Assert.That(buildReport.FromCache, Is.False);
        Assert.That(File.Exists(CachePath), Is.True);
        var cached = Read(CacheMode.Auto, out var cacheReport, batch: 777); // batch size unrelated to the group size
        Assert.That(cacheReport.FromCache, Is.True);
        EventBatchAssert.Equal(building, parsed, "parse while building");
        EventBatchAssert.Equal(cached, parsed, "from cache");
        Assert.That(cacheReport.Lines, Is.EqualTo(parseReport.Lines));
        Assert.That(cacheReport.BadLines, Is.EqualTo(2));
        Assert.That(cacheReport.Events, Is.EqualTo(EventCache.GroupEvents * 2 + 123));
    }

    [Test]
    public void MultiValuedEmptyBagsGapsAndWideTimestampsSurviveTheCache()
    {
        // Bad lines every 97 lines leave gaps in the request ids and one far-future timestamp defeats the
        // int32-delta timestamp encoding: the cache's general encodings must round-trip too.
        string tsv = Path.Combine(_dir, "m.tsv");
        var lines = Enumerable.Range(0, 5000).Select(i =>
            $"{(i % 97 == 5 ? "x" : (i % 2).ToString())}\t{(i == 2500 ? 5_000_000_000_000L : i)}\t{i % 7}\t{i * 0.25}\t{(i % 3 == 0 ? "" : "s" + (i % 50))}\t{string.Join(',', Enumerable.Range(0, i % 5).Select(t => $"t{(i + t) % 40}"))}\t{i % 10}");
        File.WriteAllLines(tsv, lines);
        var schema = TsvReaderTests.SmallSchema();
        EventBatch Pass(CacheMode mode)
        {
            using var s = new TsvEventSource(tsv, schema, new TsvReaderOptions { Cache = mode });
            return EventBatchAssert.Drain(s, 333);
        }
        var parsed = Pass(CacheMode.Off);
        Pass(CacheMode.Rebuild);
        EventBatchAssert.Equal(Pass(CacheMode.Auto), parsed, "multi-valued from cache");
        Assert.That(parsed.Bag(0, 0).Length, Is.Zero);
        Assert.That(parsed.Bag(1, 4).Length, Is.EqualTo(4));
        Assert.That(parsed.RequestIds[5], Is.EqualTo(6), "line 6 was bad");
        Assert.That(parsed.Timestamps.ToArray(), Has.Member(5_000_000_000_000L));
    }

    [Test]
    public void ResetAfterTheFirstPassSwitchesToTheCache()
    {
        using var source = new TsvEventSource(_tsv, _schema, new TsvReaderOptions { Cache = CacheMode.Auto });
        var first = EventBatchAssert.Drain(source);
        source.Reset();
        var second = EventBatchAssert.Drain(source);
        Assert.That(source.Report.FromCache, Is.True);
        EventBatchAssert.Equal(second, first, "second pass");
    }

    [Test]
    public void CorruptGroupIsAClearError()
    {
        Read(CacheMode.Auto, out _);
        using (var f = new FileStream(CachePath, FileMode.Open, FileAccess.ReadWrite))
        {
            // A byte inside the second group's payload (the first group is 16384 events of well over 8 bytes).
            f.Position = f.Length - 1000;
            int b = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(b ^ 0x40));
        }
        using var source = new TsvEventSource(_tsv, _schema, new TsvReaderOptions { Cache = CacheMode.Auto });
        Assert.That(source.Report.FromCache, Is.True);
        var e = Assert.Throws<DataFormatException>(() => EventBatchAssert.Drain(source))!;
        Assert.That(e.Message, Does.Contain(CachePath).And.Contain("corrupt event cache at group 2").And.Contain("checksum"));
    }

    [TestCase("header")]
    [TestCase("truncated")]
    [TestCase("schema")]
    [TestCase("source")]
    public void StaleOrDamagedCacheIsRebuilt(string damage)
    {
        var reference = Read(CacheMode.Auto, out _);
        var schema = _schema;
        switch (damage)
        {
            case "header":
                using (var f = new FileStream(CachePath, FileMode.Open, FileAccess.ReadWrite)) { f.Position = 60; f.WriteByte(0xFF); }
                break;
            case "truncated":
                using (var f = new FileStream(CachePath, FileMode.Open, FileAccess.ReadWrite)) f.SetLength(f.Length - 10);
                break;
            case "schema":
                // Same columns, different hash seed on a hashed column would change rows; here: another events-per-second value.
                _schema = StreamSchema.Parse(schema.ToJson().Replace("\"eventsPerSecond\": 20", "\"eventsPerSecond\": 21"));
                Assert.That(_schema.ContentHash(), Is.Not.EqualTo(schema.ContentHash()));
                break;
            case "source":
                File.SetLastWriteTimeUtc(_tsv, DateTime.UtcNow.AddMinutes(1));
                break;
        }
        var log = new List<string>();
        var rebuilt = Read(CacheMode.Auto, out var report, log);
        Assert.That(report.FromCache, Is.False);
        Assert.That(log, Has.Some.Contains("not used"));
        EventBatchAssert.Equal(rebuilt, reference, "rebuilt pass");
        var again = Read(CacheMode.Auto, out var againReport);
        Assert.That(againReport.FromCache, Is.True);
        EventBatchAssert.Equal(again, reference, "from the rebuilt cache");
    }

    [Test]
    public void AnAbandonedPassPublishesNoCache()
    {
        using (var source = new TsvEventSource(_tsv, _schema, new TsvReaderOptions { Cache = CacheMode.Auto }))
        {
            var b = new EventBatch(source.Schema.Layout, 100);
            source.Read(b);
        }
        Assert.That(File.Exists(CachePath), Is.False);
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty);
    }
}
