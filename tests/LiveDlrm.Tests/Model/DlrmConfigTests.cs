using LiveDlrm.Embeddings;
using LiveDlrm.Model;

namespace LiveDlrm.Tests.Model;

internal class DlrmConfigTests
{
    const string Valid = """
        { "denseFeatures": 3, "bottomMlp": [8, 4], "topMlp": [6, 1], "interaction": "dot", "selfInteraction": false,
          "tables": [ { "name": "a", "rows": 10, "dim": 4, "pooling": "sum", "storage": "fp16" },
                      { "name": "b", "rows": 5, "dim": 4, "pooling": "mean", "storage": "int8" } ] }
        """;

    [Test]
    public void ParsesAndRoundTripsThroughJson()
    {
        var c = DlrmConfig.Parse(Valid);
        Assert.That(c.Dim, Is.EqualTo(4));
        Assert.That(c.Tables[0].Storage, Is.EqualTo(EmbeddingStorage.Fp16));
        Assert.That(c.Tables[1].Pooling, Is.EqualTo(PoolingMode.Mean));
        Assert.That(c.TopInput, Is.EqualTo(4 + 3));
        var again = DlrmConfig.Parse(c.ToJson());
        Assert.That(again.SameShape(c), Is.True);
    }

    [TestCase("\"dim\": 4, \"pooling\": \"sum\"", "\"dim\": 5, \"pooling\": \"sum\"", "tables[0].dim")]
    [TestCase("\"topMlp\": [6, 1]", "\"topMlp\": [6, 2]", "topMlp[1]")]
    [TestCase("\"bottomMlp\": [8, 4]", "\"bottomMlp\": []", "bottomMlp")]
    [TestCase("\"denseFeatures\": 3", "\"denseFeatures\": -1", "denseFeatures")]
    [TestCase("\"denseFeatures\": 3", "\"denseFeatures\": 0", "bottomMlp")]
    [TestCase("\"rows\": 5", "\"rows\": 0", "tables[1].rows")]
    [TestCase("\"name\": \"b\"", "\"name\": \"a\"", "tables[1].name")]
    [TestCase("\"storage\": \"int8\"", "\"storage\": \"int4\"", "tables[1].storage")]
    [TestCase("\"pooling\": \"mean\"", "\"pooling\": \"max\"", "tables[1].pooling")]
    [TestCase("\"pooling\": \"mean\"", "\"pooling\": \"weighted\"", "tables[1].pooling")]
    [TestCase("\"interaction\": \"dot\"", "\"interaction\": \"cat\"", "interaction")]
    [TestCase("\"selfInteraction\": false", "\"selfInteraction\": false, \"extra\": 1", "extra")]
    [TestCase("\"rows\": 10", "\"rows\": \"ten\"", "tables[0].rows")]
    [TestCase("\"bottomMlp\": [8, 4]", "\"bottomMlp\": [8, 4.5]", "bottomMlp[1]")]
    [TestCase("\"bottomMlp\": [8, 4]", "\"bottomMlp\": 8", "bottomMlp")]
    [TestCase("\"rows\": 5", "\"rows\": 5, \"colour\": 1", "tables[1].colour: unknown field")]
    [TestCase("\"selfInteraction\": false", "\"selfInteraction\": false, \"odd name\": 1", "odd name: unknown field")]
    [TestCase("\"selfInteraction\": false", "\"selfInteraction\": 1", "selfInteraction")]
    [TestCase("{ \"name\": \"b\"", "7, { \"name\": \"b\"", "tables[1]: must be an object")]
    [TestCase("\"name\": \"b\"", "\"name\": \"b\\uD800\"", "tables[1].name")]
    public void InvalidFieldIsNamed(string from, string to, string field)
    {
        string json = Valid.Replace(from, to);
        Assert.That(json, Is.Not.EqualTo(Valid));
        Assert.That(() => DlrmConfig.Parse(json), Throws.TypeOf<DlrmConfigException>().With.Message.StartsWith(field));
    }

    [Test]
    public void LoadNamesTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"dlrm-config-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{ not json");
        try { Assert.That(() => DlrmConfig.Load(path), Throws.TypeOf<DlrmConfigException>().With.Message.Contains(path)); }
        finally { File.Delete(path); }
    }
}
