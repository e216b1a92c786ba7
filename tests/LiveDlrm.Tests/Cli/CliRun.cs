using LiveDlrm.Cli;

namespace LiveDlrm.Tests.Cli;

/// <summary>Runs <c>livedlrm ARGS</c> in-process through the same host as the executable (parse, invoke, error
/// mapping) with stdout and stderr captured: the exit code and the text a user would see.</summary>
internal static class CliRun
{
    static readonly object Gate = new();

    public sealed record Result(int Code, string Out, string Err)
    {
        public string Output => Out + Err;
    }

    public static Result Invoke(params string[] args)
    {
        lock (Gate)
        {
            var (savedOut, savedErr) = (Console.Out, Console.Error);
            var (o, e) = (new StringWriter(), new StringWriter());
            Console.SetOut(o);
            Console.SetError(e);
            try { return new Result(CliApp.Run(args), o.ToString(), e.ToString()); }
            finally { Console.SetOut(savedOut); Console.SetError(savedErr); }
        }
    }

    /// <summary>The failure of a bad-input run: exit code 2 and exactly one stderr line starting
    /// <c>livedlrm CMD:</c>, without a stack trace. Returns that line (as Message).</summary>
    public static (string Message, string Out) AssertBadInput(params string[] args)
    {
        var r = Invoke(args);
        Assert.That(r.Code, Is.EqualTo(2), $"livedlrm {string.Join(' ', args)}\n{r.Output}");
        AssertOneLine(r.Err, args);
        return (r.Err.TrimEnd(), r.Out);
    }

    public static void AssertOneLine(string err, string[] args)
    {
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), $"one error line expected for: {string.Join(' ', args)}\n{err}");
        bool known = args.Length > 0 && CliApp.CreateCommands().Any(c => c.Name == args[0]);
        string prefix = known ? $"livedlrm {args[0]}: " : "livedlrm: ";
        Assert.That(lines[0], Does.StartWith(prefix));
        Assert.That(err, Does.Not.Contain("   at ").And.Not.Contain("Unhandled exception"));
    }
}
