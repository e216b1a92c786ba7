using LiveDlrm.Interop;

namespace LiveDlrm.Runtime;

/// <summary>Ends the process at once with an exit code, as a kill would but with a code of our choosing. Used when a
/// signal stops a run that cannot be cancelled cooperatively: <see cref="Environment.Exit"/> would run libtorch's
/// static destructors while another thread is still inside a tensor op, which crashes (SIGSEGV) instead of exiting.
/// Everything the engine writes is made durable by rename, so nothing is left half-written.</summary>
internal static class ImmediateExit
{
    public static void Now(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        LibC.Exit(exitCode);
    }
}
