using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LiveDlrm.Tests.Hosting;

/// <summary>
/// The packages as a host meets them: <c>./build.sh pack</c>, then a copy of samples/ restored against
/// artifacts/packages with its own NuGet packages folder (artifacts/consumer/packages; the LiveDlrm packages can come
/// only from the local feed, everything else from the machine's packages or nuget.org), built and run. Checks that
/// TorchSharp loads through the package's own buildTransitive targets (the patched copy in the sample's output on
/// Debian 12, the NuGet folder's file untouched), that the native parts arrive, and that the sample's adapters learn
/// and restore. The packages folder is kept between runs (libtorch is ~0.9 GB unpacked) with the LiveDlrm packages
/// removed before each restore, so a stale copy can never be used.
/// </summary>
[Category("Package")]
internal class PackageConsumerTests
{
    static readonly string Root = FindRepoRoot();

    [Test]
    public void TheSampleBuildsAndRunsFromThePackagesAlone()
    {
        var total = Stopwatch.StartNew();
        string consumer = Path.Combine(Root, "artifacts", "consumer");
        string packages = Path.Combine(consumer, "packages");
        string work = Path.Combine(consumer, "work");

        var step = Stopwatch.StartNew();
        Run(Path.Combine(Root, "build.sh"), Root, TimeSpan.FromMinutes(10), "pack");
        var packTime = step.Elapsed;
        Assert.That(Directory.GetFiles(Path.Combine(Root, "artifacts", "packages"), "LiveDlrm.*.nupkg"), Has.Length.EqualTo(2));

        // A clean copy of samples/ (its Directory.Build.* files keep the repository's build out) and a NuGet
        // configuration that maps LiveDlrm.* to the local feed only.
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        CopyDirectory(Path.Combine(Root, "samples"), Path.Combine(work, "samples"));
        File.Delete(Path.Combine(work, "samples", "MinimalHost", "nuget.config"));
        Directory.CreateDirectory(packages);
        foreach (var stale in Directory.GetDirectories(packages, "livedlrm.*")) Directory.Delete(stale, recursive: true);
        string machinePackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string config = Path.Combine(work, "nuget.config");
        File.WriteAllText(config, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="livedlrm-local" value="{Path.Combine(Root, "artifacts", "packages")}" />
                <add key="machine" value="{machinePackages}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
              <packageSourceMapping>
                <packageSource key="livedlrm-local"><package pattern="LiveDlrm.*" /></packageSource>
                <packageSource key="machine"><package pattern="*" /></packageSource>
                <packageSource key="nuget.org"><package pattern="*" /></packageSource>
              </packageSourceMapping>
            </configuration>
            """);

        string project = Path.Combine(work, "samples", "MinimalHost");
        step.Restart();
        Run("dotnet", work, TimeSpan.FromMinutes(10), "restore", project, "--packages", packages, "--configfile", config, "-nologo");
        var restoreTime = step.Elapsed;
        using (var assets = JsonDocument.Parse(File.ReadAllText(Path.Combine(project, "obj", "project.assets.json"))))
        {
            var folders = assets.RootElement.GetProperty("packageFolders").EnumerateObject()
                .Select(p => Path.TrimEndingDirectorySeparator(Path.GetFullPath(p.Name))).ToList();
            Assert.That(folders, Is.EqualTo(new[] { Path.GetFullPath(packages) }), "the sample restores into its own packages folder only");
            var libraries = assets.RootElement.GetProperty("libraries").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetProperty("type").GetString());
            Assert.That(libraries.Keys, Has.Some.StartsWith("LiveDlrm.Engine/"));
            Assert.That(libraries.Values, Has.All.EqualTo("package"), "the sample references packages, no project");
        }

        step.Restart();
        Run("dotnet", work, TimeSpan.FromMinutes(10), "build", project, "-c", "Release", "--no-restore", "-nologo", "-v:q");
        var buildTime = step.Elapsed;
        string output = Path.Combine(project, "bin", "Release", "net10.0");
        string native = Path.Combine(output, "runtimes", "linux-x64", "native");
        Assert.That(File.Exists(Path.Combine(native, "liblivedlrm_pim.so")), "the PIM shim from LiveDlrm.Interop");
        Assert.That(File.Exists(Path.Combine(native, "livedlrm_pim_kernel.dpu")), "the PIM kernel descriptor beside it");

        // The package's targets patch only the copy: the file in the packages folder is byte-identical to the
        // machine's (unpatched) one, and on a libstdc++ without GLIBCXX_3.4.32 the output copy differs from it.
        string inPackages = Directory.GetFiles(Path.Combine(packages, "torchsharp"), "libLibTorchSharp.so", SearchOption.AllDirectories).Single();
        string inMachine = Path.Combine(machinePackages, Path.GetRelativePath(packages, inPackages));
        if (File.Exists(inMachine))
            Assert.That(Hash(inPackages), Is.EqualTo(Hash(inMachine)), "the NuGet packages folder's copy is never modified");
        if (!SystemLibstdcxxHas("GLIBCXX_3.4.32"))
            Assert.That(Hash(Path.Combine(native, "libLibTorchSharp.so")), Is.Not.EqualTo(Hash(inPackages)), "the output copy is patched");

        step.Restart();
        string stdout = Run("dotnet", work, TimeSpan.FromMinutes(5), Path.Combine(output, "MinimalHost.dll"), "--rounds", "40");
        var runTime = step.Elapsed;
        TestContext.Out.WriteLine(stdout);
        TestContext.Out.WriteLine(FormattableString.Invariant(
            $"pack {packTime.TotalSeconds:F0} s, restore {restoreTime.TotalSeconds:F0} s, build {buildTime.TotalSeconds:F0} s, run {runTime.TotalSeconds:F0} s, total {total.Elapsed.TotalSeconds:F0} s"));

        var torch = Regex.Match(stdout, @"^torch: libLibTorchSharp\.so loaded from (.+)$", RegexOptions.Multiline);
        Assert.That(torch.Success, "the sample names the loaded libLibTorchSharp.so");
        Assert.That(Path.GetFullPath(torch.Groups[1].Value.Trim()), Is.EqualTo(Path.GetFullPath(Path.Combine(native, "libLibTorchSharp.so"))));
        var result = Regex.Match(stdout, @"^result: logloss-first=(\S+) logloss-last=(\S+) trained=(\d+) adapted-rows=(\d+) restored-identical=(\w+) instruments=(\d+)$", RegexOptions.Multiline);
        Assert.That(result.Success, "the sample prints its result line");
        double first = double.Parse(result.Groups[1].Value, CultureInfo.InvariantCulture), last = double.Parse(result.Groups[2].Value, CultureInfo.InvariantCulture);
        Assert.Multiple(() =>
        {
            Assert.That(last, Is.LessThan(first - 0.1), "the adapters learn the hot items");
            Assert.That(last, Is.LessThan(0.619), "better than always predicting the click rate");
            Assert.That(long.Parse(result.Groups[3].Value, CultureInfo.InvariantCulture), Is.EqualTo(40 * 512), "every label was trained on");
            Assert.That(long.Parse(result.Groups[4].Value, CultureInfo.InvariantCulture), Is.GreaterThan(0));
            Assert.That(result.Groups[5].Value, Is.EqualTo("true"), "restored adapters score exactly as the saved ones");
            Assert.That(int.Parse(result.Groups[6].Value, CultureInfo.InvariantCulture), Is.GreaterThan(0), "the meters publish instruments");
        });
    }

    static string Run(string file, string directory, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', args)}: no exit within {timeout}");
        }
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, $"{file} {string.Join(' ', args)} failed:\n{stdout.Result}\n{stderr.Result}");
        return stdout.Result;
    }

    static bool SystemLibstdcxxHas(string version)
    {
        foreach (var dir in new[] { "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib" })
        {
            string lib = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(lib)) return File.ReadAllBytes(lib).AsSpan().IndexOf(System.Text.Encoding.ASCII.GetBytes(version + "\0")) >= 0;
        }
        return false;
    }

    static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
        {
            string name = Path.GetFileName(dir);
            if (name is "bin" or "obj") continue;
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        }
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(from, file);
            if (rel.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj")) continue;
            File.Copy(file, Path.Combine(to, rel));
        }
    }

    static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LiveDlrm.slnx"))) return d.FullName;
        throw new InvalidOperationException("repository root (LiveDlrm.slnx) not found above " + AppContext.BaseDirectory);
    }
}
