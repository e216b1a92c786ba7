using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;

namespace LiveDlrm.CommandLine;

/// <summary>A command that handles SIGINT/SIGTERM itself (a server's graceful drain, exit code 0) instead of the
/// host's one line and exit code 3.</summary>
internal interface IHandlesOwnInterrupts { }

/// <summary>
/// Runs a root command the way both hosts (<c>livedlrm</c>, the bench runner) end: exit code 0, or exactly one line
/// <c>PROGRAM CMD: message</c> on stderr with code 2 (bad input or usage), 1 (runtime failure) or 3 (interrupted).
/// Exceptions are mapped by <see cref="CliErrors.Map"/>; stack traces only with <c>--verbose</c> or
/// <c>LIVEDLRM_DEBUG=1</c>.
/// </summary>
internal static class CommandLineHost
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "more log lines, and the stack trace of a failure", Recursive = true };
    public static readonly Option<bool> NoColor = new("--no-color") { Description = "plain output without colours or live progress (also NO_COLOR=1)", Recursive = true };

    /// <summary>Adds the global options every host has.</summary>
    public static RootCommand WithGlobalOptions(this RootCommand root)
    {
        root.Options.Add(Verbose);
        root.Options.Add(NoColor);
        return root;
    }

    /// <summary>The names from the root down to <paramref name="command"/> ("fleet replica"), so an error names the
    /// whole command, not only its last word.</summary>
    static IEnumerable<string> CommandPath(CommandResult command)
    {
        var names = new Stack<string>();
        for (SymbolResult? r = command; r is CommandResult c && c.Command is not RootCommand; r = c.Parent)
            names.Push(c.Command.Name);
        return names;
    }

    /// <summary>Parses and runs <paramref name="args"/>; returns the process exit code. Output goes to
    /// <see cref="Console.Out"/>, errors to <see cref="Console.Error"/> (tests redirect them).</summary>
    public static int Run(RootCommand root, string program, string[] args)
    {
        var result = root.Parse(args);
        string who = string.Join(' ', [program, .. CommandPath(result.CommandResult)]);
        bool verbose = result.GetValue(Verbose);
        Terminal.Configure(result.GetValue(NoColor));
        using var logging = CliLogging.Configure(verbose);

        // Help, version and the [suggest] directive run even when the rest of the line has errors; only a parse
        // error action means the line was wrong.
        if (result.Action is ParseErrorAction || (result.Errors.Count > 0 && result.Action is null))
        {
            // An unknown token or a bad value explains the rest (a missing required option is often the misspelt one).
            string first = result.Errors.OrderBy(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal) ? 0
                                                      : e.Message.Contains("required", StringComparison.OrdinalIgnoreCase) ? 2 : 1).First().Message;
            string more = result.Errors.Count > 1 ? $" (and {result.Errors.Count - 1} more error{(result.Errors.Count > 2 ? "s" : "")})" : "";
            Terminal.Error(who, CliErrors.Escape(first) + more + $" (see {who} --help)");
            return ExitCodes.BadInput;
        }

        using var interrupt = result.CommandResult.Command is IHandlesOwnInterrupts ? null : new InterruptHandler(who);
        try
        {
            return result.Invoke(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
                Output = Console.Out,
                Error = Console.Error,
            });
        }
        catch (Exception e)
        {
            // The signal handler is already exiting: what fails here is the run being torn down under it (libtorch
            // unloads while a tensor op is running). Its line is said; a second one would only confuse.
            if (InterruptHandler.Interrupted) Thread.Sleep(Timeout.Infinite);
            var (code, message) = CliErrors.Map(e);
            Console.Out.Flush();
            Terminal.Error(who, CliErrors.Escape(message));
            if (CliErrors.Debug(verbose)) Console.Error.WriteLine(e);
            return code;
        }
    }

    /// <summary>SIGINT/SIGTERM: one line and exit code 3. The engine does not poll for cancellation, so the run stops
    /// where it is (as after a kill); checkpoints are written to a temporary path and renamed into place.</summary>
    sealed class InterruptHandler : IDisposable
    {
        readonly PosixSignalRegistration[] _registrations;
        static int s_interrupted;

        public static bool Interrupted => Volatile.Read(ref s_interrupted) != 0;

        public InterruptHandler(string who)
        {
            void Handle(PosixSignalContext context)
            {
                context.Cancel = true;
                if (Interlocked.Exchange(ref s_interrupted, 1) != 0) return;
                Console.Out.Flush();
                Terminal.Error(who, $"interrupted ({(context.Signal == PosixSignal.SIGINT ? "SIGINT" : "SIGTERM")})");
                LiveDlrm.Runtime.ImmediateExit.Now(ExitCodes.Interrupted);
            }
            _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
        }

        public void Dispose() { foreach (var r in _registrations) r.Dispose(); }
    }
}
