using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace LiveDlrm.Serving.Fleet;

/// <summary>A real <c>nats-server -js</c> (Debian's package) on a free loopback port with a temporary store
/// directory, for tests and benchmarks; <see cref="Stop"/> kills it (the store stays, so <see cref="Start"/> brings
/// the same stream back on the same port), <see cref="DisposeAsync"/> kills it and deletes the store. Nothing is left
/// running. The monitoring endpoint (<see cref="MonitorPort"/>) serves /varz with the server's byte counters.</summary>
internal sealed class NatsServerProcess : IAsyncDisposable
{
    Process? _process;
    public string StoreDir { get; }
    public int Port { get; }
    public int MonitorPort { get; }
    public string Url => $"nats://127.0.0.1:{Port}";

    NatsServerProcess(string storeDir, int port, int monitorPort) { StoreDir = storeDir; Port = port; MonitorPort = monitorPort; }

    public static string? Executable =>
        new[] { "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server" }.FirstOrDefault(File.Exists);

    public static async Task<NatsServerProcess> StartAsync()
    {
        if (Executable is null) throw new InvalidOperationException("nats-server is not installed (./build.sh installs Debian's nats-server package)");
        var server = new NatsServerProcess(Path.Combine(Path.GetTempPath(), $"livedlrm-nats-{Guid.NewGuid():N}"), FreePort(), FreePort());
        Directory.CreateDirectory(server.StoreDir);
        await server.Start();
        return server;
    }

    static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    public async Task Start()
    {
        if (_process is not null) throw new InvalidOperationException("nats-server already running");
        // JetStream reserves each stream's MaxBytes against the server's store limit, which by default is a share of
        // the disk that is free now: a few 8 GiB streams on a machine with little free disk are refused ("insufficient
        // storage resources"). A stated limit makes the reservation independent of the machine; the temporary store
        // only ever holds what the test or bench writes.
        string config = Path.Combine(StoreDir, "nats.conf");
        File.WriteAllText(config, $"jetstream {{\n  store_dir: \"{StoreDir}\"\n  max_file_store: 1TB\n  max_memory_store: 256MB\n}}\n");
        var psi = new ProcessStartInfo(Executable!, ["-c", config, "-a", "127.0.0.1", "-p", Port.ToString(CultureInfo.InvariantCulture), "-m", MonitorPort.ToString(CultureInfo.InvariantCulture)])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        var p = Process.Start(psi) ?? throw new InvalidOperationException("nats-server did not start");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process = p;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(15))
        {
            if (p.HasExited) throw new InvalidOperationException($"nats-server exited with {p.ExitCode} at start");
            try
            {
                using var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) { await Task.Delay(50); }
        }
        Stop();
        throw new TimeoutException("nats-server did not listen within 15 s");
    }

    /// <summary>SIGKILL: what a crashed broker looks like to the clients.</summary>
    public void Stop()
    {
        var p = _process;
        _process = null;
        if (p is null) return;
        try { if (!p.HasExited) { p.Kill(); p.WaitForExit(10_000); } }
        finally { p.Dispose(); }
    }

    public ValueTask DisposeAsync()
    {
        Stop();
        try { Directory.Delete(StoreDir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        return ValueTask.CompletedTask;
    }
}
