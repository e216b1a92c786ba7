using System.Diagnostics;

namespace LiveDlrm.Tests.Cli;

/// <summary>SIGTERM during a long run (a child <c>livedlrm</c> process, as a user or a scheduler stops it): exit code
/// 3 and one line, no stack trace. Bounded: the run is stopped as soon as it has started working.</summary>
internal class InterruptTests
{
    [Test]
    public void SigtermEndsWithExitCodeThreeAndOneLine()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "livedlrm.dll");
        Assert.That(File.Exists(dll), Is.True, dll);
        string dir = Path.Combine(Path.GetTempPath(), $"livedlrm-interrupt-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir); // --out's folder must exist
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in new[] { dll, "train", "--out", Path.Combine(dir, "ckpt"), "--events", "50000000" }) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        try
        {
            var stderr = process.StandardError.ReadToEndAsync();
            // The "model" line comes after parsing and setup: the signal handler is installed by then.
            string? line;
            while ((line = process.StandardOutput.ReadLine()) is not null && !line.StartsWith("model", StringComparison.Ordinal)) { }
            Assert.That(line, Is.Not.Null, "the run ended before it started training");
            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
            Assert.That(process.WaitForExit(TimeSpan.FromSeconds(30)), Is.True, "no exit within 30 s of SIGTERM");
            process.StandardOutput.ReadToEnd();
            string err = stderr.Result;
            Assert.That(process.ExitCode, Is.EqualTo(3), err);
            Assert.That(err.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "livedlrm train: interrupted (SIGTERM)" }));
            Assert.That(Directory.Exists(Path.Combine(dir, "ckpt")), Is.False, "no checkpoint from an interrupted run");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
