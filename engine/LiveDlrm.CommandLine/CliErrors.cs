using System.Globalization;
using System.Text;
using LiveDlrm.Checkpoints;
using LiveDlrm.Data;
using LiveDlrm.Interop;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Scheduling.Resctrl;

namespace LiveDlrm.CommandLine;

/// <summary>The exit codes of <c>livedlrm</c> and <c>./build.sh bench</c>.</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>Runtime failure: the input was acceptable but the work failed (disk full, device error, a bug).</summary>
    public const int Failure = 1;
    /// <summary>Bad input or usage: an option, a path, a data/schema/config/checkpoint file the user can fix.</summary>
    public const int BadInput = 2;
    /// <summary>Interrupted by SIGINT (Ctrl-C) or SIGTERM.</summary>
    public const int Interrupted = 3;
}

/// <summary>Thrown for bad command-line input that the option definitions cannot check on their own (combinations,
/// files that must exist): exit code 2.</summary>
internal sealed class UsageException(string message) : UserInputException(message);

/// <summary>
/// The one place that turns an exception escaping a command into what the user sees: an exit code and a one-line
/// message. Engine exception types that describe bad input map to 2, resource and I/O failures to 1. Messages are
/// escaped (control characters and invalid text from data files never reach the terminal raw).
/// </summary>
internal static class CliErrors
{
    public static (int ExitCode, string Message) Map(Exception e)
    {
        if (e is AggregateException { InnerExceptions.Count: 1 } a) return Map(a.InnerExceptions[0]);
        if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) return Map(inner);
        return e switch
        {
            UserInputException or SchemaException or DataFormatException or DlrmConfigException or CheckpointException
                => (ExitCodes.BadInput, e.Message),
            FileNotFoundException f => (ExitCodes.BadInput, f.FileName is { } n && !e.Message.Contains(n, StringComparison.Ordinal) ? $"{n}: {e.Message}" : e.Message),
            DirectoryNotFoundException or PathTooLongException => (ExitCodes.BadInput, e.Message),
            UnauthorizedAccessException => (ExitCodes.BadInput, $"permission denied: {e.Message}"),
            OperationCanceledException => (ExitCodes.Interrupted, "interrupted"),
            OutOfMemoryException or InsufficientMemoryException => (ExitCodes.Failure, "out of memory" + (e.Message.Length > 0 && e is InsufficientMemoryException ? $": {e.Message}" : "") + " (smaller tables or fewer events, or more memory)"),
            // A server that is down or unreachable (loadgen, bench serve): the peer's fault, named by its address.
            System.Net.Http.HttpRequestException => (ExitCodes.Failure, $"cannot reach the server: {e.Message}"),
            IOException => (ExitCodes.Failure, e.Message),
            PimException or ResctrlException => (ExitCodes.Failure, e.Message),
            _ => (ExitCodes.Failure, $"internal error ({e.GetType().Name}): {e.Message} (run with --verbose or LIVEDLRM_DEBUG=1 for the stack trace)"),
        };
    }

    /// <summary>True when stack traces are wanted: <c>--verbose</c> given or <c>LIVEDLRM_DEBUG=1</c>.</summary>
    public static bool Debug(bool verbose) => verbose || Environment.GetEnvironmentVariable("LIVEDLRM_DEBUG") is "1" or "true";

    /// <summary>One printable line: control characters, the replacement character left by invalid UTF-8 and other
    /// non-printables are written as escapes (\t, \n, \x1b, \u0085), so raw bytes from a data file cannot move the
    /// cursor, recolour the terminal or split the message.</summary>
    public static string Escape(string s)
    {
        StringBuilder? b = null;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            string? esc = c switch
            {
                '\t' => "\\t",
                '\n' => "\\n",
                '\r' => "\\r",
                '\uFFFD' => "\\uFFFD",
                _ when char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) => null,
                _ when char.IsLowSurrogate(c) && i > 0 && char.IsHighSurrogate(s[i - 1]) => null,
                _ when char.IsSurrogate(c) => $"\\u{(int)c:X4}",
                _ when c < 0x20 || c == 0x7F => $"\\x{(int)c:x2}",
                _ when char.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.Format
                    or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => $"\\u{(int)c:X4}",
                _ => null,
            };
            if (esc is null) { b?.Append(c); continue; }
            b ??= new StringBuilder(s.Length + 16).Append(s, 0, i);
            b.Append(esc);
        }
        return b?.ToString() ?? s;
    }
}
