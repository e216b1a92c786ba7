using System.Diagnostics;
using System.Security.Cryptography;

namespace LiveDlrm.Tests.Platform;

/// <summary>The build step that makes TorchSharp load on Debian 12 (build/ElfWeakVersionPatch.cs), run through real
/// MSBuild on scratch copies of the real libLibTorchSharp.so from the NuGet cache.</summary>
[NonParallelizable]
internal class ElfPatchTaskTests
{
    static readonly string RepoRoot = FindRepoRoot();
    static readonly string Original = Path.Combine(
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"),
        "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
    const string SystemLibstdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        Assume.That(File.Exists(Original), $"TorchSharp package not restored at {Original}");
        _dir = Directory.CreateTempSubdirectory("elfpatch-").FullName;
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void WeakensTheNeedOnACopyAndLeavesTheCacheAlone()
    {
        string before = Hash(Original);
        string copy = CopyOriginal();
        var (rc, output) = RunTask(copy, "GLIBCXX_3.4.32", system: "/bin/true");   // a "system" library that defines nothing
        Assert.That(rc, Is.EqualTo(0), output);
        Assert.That(NeedFlags(copy, "GLIBCXX_3.4.32"), Is.EqualTo("WEAK"));
        Assert.That(NeedFlags(Original, "GLIBCXX_3.4.32"), Is.EqualTo("none"));
        Assert.That(Hash(Original), Is.EqualTo(before));
        // Only the two flag bytes differ.
        var a = File.ReadAllBytes(Original); var b = File.ReadAllBytes(copy);
        Assert.That(a.Length, Is.EqualTo(b.Length));
        Assert.That(Enumerable.Range(0, a.Length).Count(i => a[i] != b[i]), Is.EqualTo(1));

        var written = File.GetLastWriteTimeUtc(copy);
        var (rc2, output2) = RunTask(copy, "GLIBCXX_3.4.32", system: "/bin/true");   // idempotent: not rewritten
        Assert.That(rc2, Is.EqualTo(0), output2);
        Assert.That(output2, Does.Contain("already weak"));
        Assert.That(File.GetLastWriteTimeUtc(copy), Is.EqualTo(written));
    }

    [Test]
    public void RefusesWhenARelocationUsesTheVersion()
    {
        // GLIBCXX_3.4 symbols (std::string, iostream...) are bound through relocations: weakening must be refused.
        string copy = CopyOriginal();
        string before = Hash(copy);
        var (rc, output) = RunTask(copy, "GLIBCXX_3.4", system: "/bin/true");
        Assert.That(rc, Is.Not.EqualTo(0));
        Assert.That(output, Does.Contain("refusing to weaken GLIBCXX_3.4 "));
        Assert.That(Hash(copy), Is.EqualTo(before));
    }

    [Test]
    public void DoesNothingWhereTheSystemLibraryDefinesTheVersion()
    {
        Assume.That(File.Exists(SystemLibstdcxx));
        string copy = CopyOriginal();
        string before = Hash(copy);
        // Debian 12's libstdc++ defines GLIBCXX_3.4.30: asking to weaken that need must be a no-op.
        var (rc, output) = RunTask(copy, "GLIBCXX_3.4.30", system: SystemLibstdcxx);
        Assert.That(rc, Is.EqualTo(0), output);
        Assert.That(Hash(copy), Is.EqualTo(before));
    }

    [Test]
    public void RefusesToPatchInsideAForbiddenRoot()
    {
        string copy = CopyOriginal();
        string before = Hash(copy);
        var (rc, output) = RunTask(copy, "GLIBCXX_3.4.32", system: "/bin/true", forbidden: _dir);
        Assert.That(rc, Is.Not.EqualTo(0));
        Assert.That(output, Does.Contain("refusing to patch"));
        Assert.That(Hash(copy), Is.EqualTo(before));
    }

    string CopyOriginal()
    {
        string copy = Path.Combine(_dir, "libLibTorchSharp.so");
        File.Copy(Original, copy);
        return copy;
    }

    static (int, string) RunTask(string lib, string version, string system, string forbidden = "")
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
            ArgumentList = { "msbuild", Path.Combine(RepoRoot, "tests", "LiveDlrm.Tests", "Platform", "ElfWeakVersionPatch.proj"),
                             "-nologo", "-v:d", "-t:Patch", $"-p:RepoRoot={RepoRoot}/", $"-p:Lib={lib}", $"-p:Ver={version}",
                             $"-p:Sys={system}", $"-p:Forbidden={forbidden}" },
        };
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }

    static string NeedFlags(string lib, string version)
    {
        var psi = new ProcessStartInfo("readelf", $"-V {lib}") { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var m = System.Text.RegularExpressions.Regex.Match(text, $@"Name: {System.Text.RegularExpressions.Regex.Escape(version)}\s+Flags: (\S+)");
        Assert.That(m.Success, $"readelf shows no need for {version} in {lib}");
        return m.Groups[1].Value;
    }

    static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LiveDlrm.slnx"))) return d.FullName;
        throw new InvalidOperationException("repository root (LiveDlrm.slnx) not found above " + AppContext.BaseDirectory);
    }
}
