using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LiveDlrm.CommandLine;

/// <summary>The one logger factory of a CLI or bench-runner process: engine notices go to stderr, through
/// <see cref="Terminal"/> so they do not tear a live progress display, coloured by level on a terminal and plain
/// otherwise. <c>--verbose</c> lowers the level from Information to Debug.</summary>
internal static class CliLogging
{
    static ILoggerFactory s_factory = NullLoggerFactory.Instance;

    /// <summary>Builds the factory; <see cref="CommandLineHost.Run"/> calls it once the command line is parsed.</summary>
    public static ILoggerFactory Configure(bool verbose)
    {
        s_factory = LoggerFactory.Create(b => b
            .SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.Information)
            .AddProvider(new TerminalLoggerProvider()));
        return s_factory;
    }

    public static ILoggerFactory Factory => s_factory;

    /// <summary>A logger named after the command or component it speaks for.</summary>
    public static ILogger For(string category) => s_factory.CreateLogger(category);

    sealed class TerminalLoggerProvider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new TerminalLogger();
        public void Dispose() { }
    }

    sealed class TerminalLogger : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        // The factory's minimum level filters before a logger is asked.
        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            string message = formatter(state, exception);
            if (exception is not null) message += $": {exception.Message}";
            Terminal.LogLine(logLevel, message);
        }
    }
}
