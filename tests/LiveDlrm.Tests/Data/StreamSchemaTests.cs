using LiveDlrm.Data;

namespace LiveDlrm.Tests.Data;

internal class StreamSchemaTests
{
    [Test]
    public void CriteoDefaultHasLabelThirteenDenseAndTwentySixSparse()
    {
        var s = StreamSchema.Criteo(rowsPerTable: 5000, eventsPerSecond: 50);
        Assert.That(s.Columns, Has.Count.EqualTo(40));
        Assert.That(s.Columns[0], Is.EqualTo("label"));
        Assert.That(s.Dense.Select(d => d.Name), Is.EqualTo(Enumerable.Range(1, 13).Select(i => $"I{i}")));
        Assert.That(s.Dense.All(d => d.Transform == DenseTransform.Log1p));
        Assert.That(s.Sparse.Select(c => c.Name), Is.EqualTo(Enumerable.Range(1, 26).Select(i => $"C{i}")));
        Assert.That(s.Sparse.All(c => c.Mapping == SparseMapping.Hash && c.Rows == 5000));
        Assert.That(s.Timestamp, Is.Null);
        Assert.That(s.EventsPerSecond, Is.EqualTo(50));
        Assert.That(s.Layout.DenseCount, Is.EqualTo(13));
        Assert.That(s.Layout.Sparse.Select(l => l.Table), Is.EqualTo(s.Sparse.Select(c => c.Table)));
    }

    [Test]
    public void JsonRoundTripKeepsEverything()
    {
        var s = TsvReaderTests.SmallSchema();
        var back = StreamSchema.Parse(s.ToJson());
        Assert.That(back.ToJson(), Is.EqualTo(s.ToJson()));
        Assert.That(back.ContentHash(), Is.EqualTo(s.ContentHash()));
        Assert.That(back.Sparse[1].Separator, Is.EqualTo(","));
        Assert.That(back.Sparse[0].HashSeed, Is.EqualTo(42UL));
        Assert.That(back.Timestamp, Is.EqualTo("ts"));
    }

    [Test]
    public void ContentHashChangesWithTheSchema()
    {
        var a = TsvReaderTests.SmallSchema(hashRows: 1000);
        var b = TsvReaderTests.SmallSchema(hashRows: 1001);
        Assert.That(a.ContentHash(), Is.Not.EqualTo(b.ContentHash()));
    }

    const string Valid = """
        { "columns": ["label", "x", "c"], "label": "label",
          "dense": [ { "name": "x", "transform": "log1p" } ],
          "sparse": [ { "name": "c", "rows": 10 } ] }
        """;

    [Test]
    public void MinimalJsonParsesWithDefaults()
    {
        var s = StreamSchema.Parse(Valid);
        Assert.That(s.Sparse[0].Table, Is.EqualTo("c"));
        Assert.That(s.Sparse[0].Mapping, Is.EqualTo(SparseMapping.Hash));
        Assert.That(s.Delimiter, Is.EqualTo('\t'));
        Assert.That(s.EventsPerSecond, Is.EqualTo(1000));
    }

    static IEnumerable<TestCaseData> Invalid()
    {
        TestCaseData Case(string from, string to, string field) => new TestCaseData(Valid.Replace(from, to), field).SetName($"Invalid_{field}");
        yield return Case("\"label\": \"label\",", "", "label");
        yield return Case("\"rows\": 10", "\"rows\": -3", "sparse[0].rows");
        yield return Case("\"rows\": 10", "\"rows\": 1.5", "sparse[0].rows");
        yield return Case("{ \"name\": \"c\", \"rows\": 10 }", "{ \"name\": \"c\" }", "sparse[0].rows");
        yield return Case("\"log1p\"", "\"sqrt\"", "dense[0].transform");
        yield return Case("\"name\": \"x\"", "\"name\": \"nope\"", "dense[0].name");
        yield return Case("\"name\": \"x\"", "\"name\": \"label\"", "dense[0].name");
        yield return Case("\"rows\": 10", "\"rows\": 10, \"mapping\": \"md5\"", "sparse[0].mapping");
        yield return Case("\"rows\": 10", "\"rows\": 10, \"separator\": \"\\t\"", "sparse[0].separator");
        yield return Case("\"rows\": 10", "\"rows\": 10, \"mapping\": \"vocabulary\"", "sparse[0].vocabulary");
        yield return Case("\"rows\": 10", "\"rows\": 10, \"bogus\": 1", "sparse[0].bogus");
        yield return Case("\"rows\": 10", "\"rows\": 10, \"hashSeed\": -1", "sparse[0].hashSeed");
        yield return Case("\"log1p\"", "\"log1p\", \"scale\": 2", "dense[0].scale");
        yield return Case("\"log1p\"", "7", "dense[0].transform: must be a string");
        yield return Case("\"label\": \"label\",", "\"label\": \"label\", \"colums\": [],", "colums");
        yield return Case("[\"label\", \"x\", \"c\"]", "[\"label\", \"x\", \"x\", \"c\"]", "columns[2]");
        yield return Case("\"label\": \"label\",", "\"label\": \"label\", \"eventsPerSecond\": 0,", "eventsPerSecond");
        yield return Case("\"label\": \"label\",", "\"label\": \"label\", \"timestamp\": \"when\",", "timestamp");
        yield return Case("{ \"name\": \"c\", \"rows\": 10 }", "{ \"name\": \"c\", \"rows\": 10 }, { \"name\": \"x\", \"table\": \"c\", \"rows\": 3 }", "sparse[1]");
    }

    [TestCaseSource(nameof(Invalid))]
    public void InvalidSchemaNamesTheField(string json, string field)
    {
        var e = Assert.Throws<SchemaException>(() => StreamSchema.Parse(json))!;
        Assert.That(e.Message, Does.StartWith(field), e.Message);
    }

    [Test]
    public void NotJsonIsASchemaError()
    {
        Assert.That(() => StreamSchema.Parse("{ nope"), Throws.TypeOf<SchemaException>().With.Message.Contains("not valid JSON"));
    }

    [Test]
    public void LoadErrorsNameTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ldlm-schema-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, Valid.Replace("\"rows\": 10", "\"rows\": 0"));
        try
        {
            Assert.That(() => StreamSchema.Load(path), Throws.TypeOf<SchemaException>().With.Message.StartsWith(path + ": sparse[0].rows"));
        }
        finally { File.Delete(path); }
        Assert.That(() => StreamSchema.Load(path), Throws.TypeOf<SchemaException>().With.Message.Contains("cannot read"));
    }
}
