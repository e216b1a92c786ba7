using Microsoft.Extensions.Logging;

namespace LiveDlrm.Tests;

/// <summary>A logger that keeps each formatted message in a list (thread-safe), so a test can assert on what the
/// engine reported.</summary>
sealed class ListLogger(List<string> lines) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (lines) lines.Add(formatter(state, exception));
    }
}
