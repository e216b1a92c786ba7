using Microsoft.Extensions.Logging;

namespace LiveDlrm.Serving;

/// <summary>The process shape of <c>livedlrm serve</c>: logging to <paramref name="log"/>, running until
/// SIGTERM/SIGINT (graceful drain, adapters saved). A start-up failure throws — a bad checkpoint or adapter file as
/// bad input, a taken port as an <see cref="IOException"/> — with everything built so far disposed.</summary>
internal static class ServeRunner
{
    public static void Run(ServeOptions options, ILogger log)
    {
        var host = ServingHost.Create(options, log);
        try { host.RunAsync().GetAwaiter().GetResult(); }
        finally { host.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
        log.LogInformation("stopped");
    }
}
