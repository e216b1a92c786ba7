namespace LiveDlrm.Hosting;

/// <summary>A model or adapter file a <see cref="HostedModel"/> was given cannot be used: missing, damaged, of an
/// unknown format, or made for another model. The message is one line naming the file and what is wrong; the
/// model the call was made on (if any) is unchanged.</summary>
public sealed class HostedModelException : Exception
{
    /// <summary>An error with the one-line <paramref name="message"/>.</summary>
    public HostedModelException(string message) : base(message) { }
    /// <summary>An error with the one-line <paramref name="message"/>, caused by <paramref name="inner"/>.</summary>
    public HostedModelException(string message, Exception? inner) : base(message, inner) { }
}
