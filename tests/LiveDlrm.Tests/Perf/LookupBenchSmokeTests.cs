using System.Diagnostics;
using System.Text.Json;

namespace LiveDlrm.Tests.Perf;

/// <summary>Runs <c>bench lookup --quick</c> (the perf app, in a child process so its thread settings do not leak into
/// this test host) end to end and checks the JSON it writes. Proves the harness works; asserts no speed.</summary>
internal class LookupBenchSmokeTests
{
    static readonly string[] RequiredFields =
        ["case", "rows", "dim", "pooling", "batch", "dtype", "dist", "threads", "livedlrm_mlookups", "torchsharp_mlookups", "native_ref_mlookups"];

    /// <summary>LiveDlrm.Perf.dll of the same configuration as this test assembly (bin/CONFIG/TFM/).</summary>
    static string PerfDll()
    {
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = testBin.Name, config = testBin.Parent!.Name;
        for (var dir = testBin; dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LiveDlrm.slnx")))
            {
                string dll = Path.Combine(dir.FullName, "perf", "LiveDlrm.Perf", "bin", config, tfm, "LiveDlrm.Perf.dll");
                Assert.That(File.Exists(dll), Is.True, $"{dll} is missing: build the solution (./build.sh build) before the tests");
                return dll;
            }
        Assert.Fail($"no LiveDlrm.slnx above {testBin.FullName}");
        return "";
    }

    /// <summary>Runs the perf app with <paramref name="args"/> (up to 3 minutes); exit code and stdout + stderr.</summary>
    internal static (int ExitCode, string Output) RunPerf(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(PerfDll());
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"bench {string.Join(' ', args)} did not finish within 3 minutes");
        }
        return (process.ExitCode, stdout + stderr.Result);
    }

    [Test]
    public void QuickLookupRunWritesTheRequiredJson()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"livedlrm-bench-{Guid.NewGuid():N}");
        string json = Path.Combine(dir, "lookup.json");
        try
        {
            var (exit, output) = RunPerf("lookup", "--quick", "--threads", "2", "--out", json);
            Assert.That(exit, Is.EqualTo(0), output);
            Assert.That(File.Exists(json), Is.True, output);

            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var records = doc.RootElement.EnumerateArray().ToList();
            // --quick: 2 table sizes × {fp32, fp16, int8} × {uniform, zipf}
            Assert.That(records, Has.Count.EqualTo(12));
            Assert.That(records.Select(r => r.GetProperty("case").GetString()).Distinct().Count(), Is.EqualTo(12), "case names must be unique");
            foreach (var r in records)
            {
                string name = r.GetProperty("case").GetString()!;
                foreach (string field in RequiredFields)
                    Assert.That(r.TryGetProperty(field, out _), Is.True, $"{name}: field '{field}' missing");
                Assert.Multiple(() =>
                {
                    Assert.That(r.GetProperty("rows").GetInt64(), Is.AnyOf(4096L, 65536L), name);
                    Assert.That(r.GetProperty("dim").GetInt32(), Is.EqualTo(64), name);
                    Assert.That(r.GetProperty("pooling").GetInt32(), Is.EqualTo(32), name);
                    Assert.That(r.GetProperty("batch").GetInt32(), Is.EqualTo(256), name);
                    Assert.That(r.GetProperty("threads").GetInt32(), Is.EqualTo(2), name);
                    Assert.That(r.GetProperty("dist").GetString(), Is.AnyOf("uniform", "zipf1.05"), name);
                    string dtype = r.GetProperty("dtype").GetString()!;
                    Assert.That(dtype, Is.AnyOf("fp32", "fp16", "int8"), name);
                    Assert.That(name, Does.StartWith(dtype + "-"));

                    AssertRate(r, "livedlrm_mlookups", name);
                    AssertRate(r, "native_ref_mlookups", name);
                    if (dtype == "fp32") AssertRate(r, "torchsharp_mlookups", name);
                    else Assert.That(r.GetProperty("torchsharp_mlookups").ValueKind, Is.EqualTo(JsonValueKind.Null), $"{name}: TorchSharp has no {dtype} bag");

                    var sweep = r.GetProperty("native_ref_sweep").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
                    Assert.That(sweep.Keys, Is.EquivalentTo(new[] { "0", "16" }), name);
                    int best = r.GetProperty("native_ref_best_prefetch").GetInt32();
                    Assert.That(r.GetProperty("native_ref_mlookups").GetDouble(), Is.EqualTo(sweep[best.ToString()]).And.EqualTo(sweep.Values.Max()), $"{name}: best of the sweep");
                    foreach (var runs in r.GetProperty("run_mlookups").EnumerateObject())
                        Assert.That(runs.Value.GetArrayLength(), Is.GreaterThanOrEqualTo(5), $"{name} {runs.Name}: a median needs ≥ 5 runs");
                });
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    static void AssertRate(JsonElement record, string field, string name)
    {
        var v = record.GetProperty(field);
        Assert.That(v.ValueKind, Is.EqualTo(JsonValueKind.Number), $"{name}: {field} must be a number");
        double d = v.GetDouble();
        Assert.That(double.IsFinite(d) && d > 0, Is.True, $"{name}: {field} = {d}");
    }

    [Test]
    public void TooFewRunsIsRefusedByName()
    {
        var (exit, output) = RunPerf("lookup", "--quick", "--runs", "3");
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(output, Does.StartWith("bench lookup: --runs: 3 is outside [5, "));
    }
}
