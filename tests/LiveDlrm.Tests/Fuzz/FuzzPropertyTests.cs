using LiveDlrm.Fuzz;

namespace LiveDlrm.Tests.Fuzz;

/// <summary>Each fuzz target briefly as a CsCheck property (the long runs are <c>./build.sh fuzz</c>), and every
/// input in the crash corpus replayed: only the target's documented exception types may escape.</summary>
internal class FuzzPropertyTests
{
    string _scratch = "";

    [SetUp]
    public void CreateScratch() => _scratch = Directory.CreateTempSubdirectory("livedlrm-fuzztest-").FullName;

    [TearDown]
    public void DeleteScratch() { if (Directory.Exists(_scratch)) Directory.Delete(_scratch, true); }

    public static IEnumerable<string> Targets => FuzzTargets.All.Select(t => t.Name);

    [TestCaseSource(nameof(Targets))]
    public void OnlyDocumentedExceptionsEscape(string target) => FuzzRun.Check(FuzzTargets.Get(target), _scratch, iterations: 300);

    public static IEnumerable<TestCaseData> Corpus()
    {
        string root = Path.Combine(AppContext.BaseDirectory, "corpus");
        if (!Directory.Exists(root)) yield break;
        foreach (string file in Directory.GetFiles(root, "*.bin", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            yield return new TestCaseData(Path.GetFileName(Path.GetDirectoryName(file))!, file).SetArgDisplayNames(Path.GetRelativePath(root, file));
    }

    [Test]
    public void TheCrashCorpusIsThere() => Assert.That(Corpus().Count(), Is.GreaterThan(0), "corpus/ is copied next to the tests");

    [TestCaseSource(nameof(Corpus))]
    public void CrashCorpusInputsNoLongerCrash(string target, string file)
    {
        var error = FuzzRun.Replay(FuzzTargets.Get(target), _scratch, File.ReadAllBytes(file));
        Assert.That(error, Is.Null, () => $"{FuzzRun.Signature(error!)}: {error!.Message}");
    }
}
