using LiveDlrm.Checkpoints;
using LiveDlrm.Serving.Persistence;

namespace LiveDlrm.Serving;

/// <summary>The process shape of <c>livedlrm serve</c>: log lines to stdout, a start-up failure as one line on
/// stderr with exit code 1, a graceful stop (SIGTERM/SIGINT) with exit code 0.</summary>
public static class ServeRunner
{
    public static int Run(ServeOptions options, TextWriter output, TextWriter error)
    {
        var log = (string line) => { lock (output) { output.WriteLine(line); output.Flush(); } };
        ServingHost host;
        try { host = ServingHost.Create(options, log); }
        catch (Exception e) when (e is CheckpointException or AdapterStoreException or IOException or InvalidDataException or UnauthorizedAccessException)
        {
            error.WriteLine($"livedlrm serve: {e.Message}");
            return 1;
        }
        try
        {
            host.RunAsync().GetAwaiter().GetResult();
        }
        catch (IOException e)   // e.g. the port is taken
        {
            error.WriteLine($"livedlrm serve: {e.Message}");
            host.DisposeAsync().AsTask().GetAwaiter().GetResult();
            return 1;
        }
        host.DisposeAsync().AsTask().GetAwaiter().GetResult();
        log("stopped");
        return 0;
    }
}
