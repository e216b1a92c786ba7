using System.Reflection;
using TorchSharp;

namespace LiveDlrm.Runtime;

/// <summary>Process-wide TorchSharp setup. The engine owns its threads (the embedding worker pool, the trainer),
/// so libtorch's intra-op pool is sized deliberately instead of defaulting to every core.</summary>
internal static class TorchRuntime
{
    static int _initialised;

    /// <summary>Loads libtorch (throws a clear error if it cannot) and sets its intra-op thread count once.</summary>
    public static void EnsureInitialised(int? intraOpThreads = null)
    {
        if (Interlocked.Exchange(ref _initialised, 1) == 1) return;
        try
        {
            torch.set_num_threads(intraOpThreads ?? Math.Max(1, Environment.ProcessorCount / 2));
        }
        catch (TypeInitializationException e)
        {
            Interlocked.Exchange(ref _initialised, 0);
            throw new InvalidOperationException(
                "libtorch could not be loaded. On Debian 12 the build patches libLibTorchSharp.so in the output " +
                "directory (README, Platform notes); run through ./build.sh so that step runs. " + (e.InnerException?.Message ?? e.Message), e);
        }
    }

    public static string TorchSharpVersion =>
        typeof(torch).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown";

    public static string LibTorchVersion { get { EnsureInitialised(); return torch.__version__; } }
}
