using System.Text.Json;

namespace LiveDlrm.Tests.Perf;

/// <summary>Runs <c>bench lora --quick --known-slots</c> end to end (child process) and checks its JSON: every contender
/// timed, the adapter filled to its budget and hit. Proves the harness works; asserts no speed.</summary>
internal class LoraBenchSmokeTests
{
    [Test]
    public void QuickLoraRunTimesEveryContenderIncludingKnownSlots()
    {
        string dir = Path.Combine(Path.GetTempPath(), "livedlrm-lora-" + Guid.NewGuid().ToString("N"));
        string json = Path.Combine(dir, "lora.json");
        try
        {
            var (exit, output) = LookupBenchSmokeTests.RunPerf("lora", "--quick", "--hot", "0.5", "--known-slots", "--out", json);
            Assert.That(exit, Is.EqualTo(0), output);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var root = doc.RootElement;
            foreach (string name in new[] { "livedlrm", "livedlrm_lora", "lora_empty_adapter", "lora_known_slots" })
                Assert.That(root.GetProperty("runs_mlookups").GetProperty(name).EnumerateArray().All(r => r.GetDouble() > 0), Is.True, $"{name}: a run has no rate");
            Assert.That(root.GetProperty("adapter_memory_pct").GetDouble(), Is.InRange(0.5, 1.0), "adapter not filled to its 1 % budget");
            Assert.That(root.GetProperty("adapted_hit_fraction").GetDouble(), Is.InRange(0.4, 0.6), "--hot 0.5 did not send half the lookups to adapted rows");
            double known = root.GetProperty("known_slots_time_ratio_per_round").GetDouble();
            Assert.That(double.IsFinite(known) && known > 0, Is.True, $"known_slots_time_ratio_per_round = {known}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
