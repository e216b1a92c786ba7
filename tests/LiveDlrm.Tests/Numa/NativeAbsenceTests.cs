using System.Diagnostics;

namespace LiveDlrm.Tests.Numa;

/// <summary>Missing libnuma/hwloc must leave the engine working. NativeLibraries.Hidden only acts before a
/// library's first use, which this test process is long past, so the check runs the CLI in a child process.</summary>
internal class NativeAbsenceTests
{
    static (int Exit, string Output) RunCli(params string[] args)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "livedlrm.dll");
        Assert.That(File.Exists(cli), $"{cli} (the CLI is a project reference of the tests)");
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + stderr.Result);
    }

    [Test]
    public void WithoutHwlocAndLibNumaTheTopologyComesFromSysfs()
    {
        var (exit, output) = RunCli("topology", "--hide", "livedlrm:hwloc,livedlrm:numa");
        Assert.That(exit, Is.Zero, output);
        Assert.That(output, Does.Contain("hwloc             unavailable"));
        Assert.That(output, Does.Contain("libnuma           unavailable"));
        Assert.That(output, Does.Contain("source            Sysfs"));
        Assert.That(output, Does.Contain($"PUs               {Environment.ProcessorCount}"));
        Assert.That(output, Does.Contain("inference worker 0"));
    }

    [Test]
    public void WithoutHwlocTheTopologyComesFromLibNuma()
    {
        var (exit, output) = RunCli("topology", "--hide", "livedlrm:hwloc");
        Assert.That(exit, Is.Zero, output);
        Assert.That(output, Does.Contain("source            LibNuma"));
    }

    [Test]
    public void WithEverythingTheTopologyComesFromHwloc()
    {
        // In-process: nothing is hidden here, so the process-wide resolver state is what the command sees.
        var run = LiveDlrm.Tests.Cli.CliRun.Invoke("topology");
        Assert.That(run.Code, Is.Zero, run.Output);
        var output = run.Out;
        Assert.That(output, Does.Contain("source            Hwloc"));
        if (!Directory.Exists("/sys/fs/resctrl"))
            Assert.That(output, Does.Contain("resctrl           unavailable: not mounted"));
    }

    [Test]
    public void UnknownLibraryNameIsAUsageError()
    {
        var (message, _) = LiveDlrm.Tests.Cli.CliRun.AssertBadInput("topology", "--hide", "libfoo");
        Assert.That(message, Does.Contain("unknown library 'libfoo'"));
        Assert.That(LiveDlrm.Interop.NativeLibraries.Hidden, Does.Not.Contain("libfoo"));
    }
}
