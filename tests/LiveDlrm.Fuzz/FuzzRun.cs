using System.Collections.Concurrent;
using System.IO.Hashing;
using CsCheck;

namespace LiveDlrm.Fuzz;

/// <summary>What a fuzz run saw: executions, and each unexpected exception (type + where it was thrown) once,
/// with the input that raised it first.</summary>
internal sealed class FuzzResult
{
    public long Executions;
    public long AllowedExceptions;
    public readonly ConcurrentDictionary<string, (Exception Error, byte[] Input)> Unexpected = new();
}

internal static class FuzzRun
{
    /// <summary>Runs <paramref name="target"/> for <paramref name="seconds"/> (or <paramref name="iterations"/>)
    /// on one thread, collecting unexpected exceptions instead of stopping at the first.</summary>
    public static FuzzResult Collect(FuzzTarget target, string scratch, int seconds = -1, long iterations = -1, string? lastInput = null)
    {
        var (seeds, run) = target.Setup(scratch);
        var result = new FuzzResult();
        Mutator.Of(seeds).Sample(input =>
        {
            Interlocked.Increment(ref result.Executions);
            // A native crash kills the process before anything is reported: the input is on disk first.
            if (lastInput is not null) File.WriteAllBytes(lastInput, input);
            try { run(input); }
            catch (Exception e) when (target.IsAllowed(e)) { Interlocked.Increment(ref result.AllowedExceptions); }
            catch (Exception e) { result.Unexpected.TryAdd(Signature(e), (e, input)); }
        }, iter: iterations, time: seconds, threads: 1, writeLine: _ => { });
        return result;
    }

    /// <summary>Runs <paramref name="target"/> as a CsCheck property: an unexpected exception fails it, shrunk.</summary>
    public static void Check(FuzzTarget target, string scratch, long iterations)
    {
        var (seeds, run) = target.Setup(scratch);
        Mutator.Of(seeds).Sample(input =>
        {
            try { run(input); }
            catch (Exception e) when (target.IsAllowed(e)) { }
        }, iter: iterations, threads: 1, writeLine: _ => { });
    }

    /// <summary>Replays one saved input; returns the unexpected exception, or null.</summary>
    public static Exception? Replay(FuzzTarget target, string scratch, byte[] input)
    {
        var (_, run) = target.Setup(scratch);
        try { run(input); }
        catch (Exception e) when (target.IsAllowed(e)) { }
        catch (Exception e) { return e; }
        return null;
    }

    public static string Signature(Exception e)
    {
        string frame = e.StackTrace?.Split('\n').FirstOrDefault()?.Trim() ?? "";
        return $"{e.GetType().Name} {frame}";
    }

    public static string CorpusName(byte[] input) => XxHash64.HashToUInt64(input).ToString("x16") + ".bin";
}
