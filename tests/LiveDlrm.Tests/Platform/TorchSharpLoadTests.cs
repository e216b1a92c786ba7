using LiveDlrm.Runtime;
using TorchSharp;

namespace LiveDlrm.Tests.Platform;

/// <summary>TorchSharp 0.107 must load here (Debian 12 needs the build's ELF patch) and compute.</summary>
internal class TorchSharpLoadTests
{
    [Test]
    public void TorchSharpLoadsAndRunsATinyOp()
    {
        TorchRuntime.EnsureInitialised();
        using var a = torch.tensor(new float[] { 1, 2, 3 });
        using var b = torch.tensor(new float[] { 4, 5, 6 });
        using var dot = a.dot(b);
        Assert.That(dot.item<float>(), Is.EqualTo(32f));
        Assert.That(TorchRuntime.LibTorchVersion, Does.StartWith("2.10"));
    }

    [Test]
    public void SvdvalsRunsInLibtorch()
    {
        TorchRuntime.EnsureInitialised();
        using var m = torch.diag(torch.tensor(new float[] { 3, 2, 1 }));
        using var s = torch.linalg.svdvals(m);
        Assert.That(s.data<float>().ToArray(), Is.EqualTo(new float[] { 3, 2, 1 }).Within(1e-5f));
    }

    /// <summary>The loaded libLibTorchSharp.so must be the copy in this output directory (patched where needed),
    /// not one that TorchSharp's cpu/ fallback copied from the NuGet cache.</summary>
    [Test]
    public void LoadedLibTorchSharpIsTheOutputCopy()
    {
        TorchRuntime.EnsureInitialised();
        var maps = File.ReadAllLines("/proc/self/maps").Where(l => l.EndsWith("libLibTorchSharp.so", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf('/'))..]).Distinct().ToList();
        Assert.That(maps, Has.Count.EqualTo(1));
        Assert.That(Path.GetFullPath(maps[0]), Does.StartWith(Path.GetFullPath(AppContext.BaseDirectory)));
    }
}
