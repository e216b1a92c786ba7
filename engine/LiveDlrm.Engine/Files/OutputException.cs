namespace LiveDlrm.Files;

/// <summary>An output path a command refuses before doing any work (it is an input, a directory where a file is
/// needed, not ours to replace, ...). <see cref="Option"/> names the option that gave the path; the message says
/// what is wrong and what to do. Bad input: the CLI exits with code 2.</summary>
internal sealed class OutputException(string option, string message) : Runtime.UserInputException($"{option}: {message}")
{
    public string Option { get; } = option;
}

/// <summary>The work ran but produced nothing worth keeping (0 valid events trained on or scored); nothing was
/// written or replaced. Bad input: the CLI exits with code 2.</summary>
internal sealed class NoResultException(string message) : Runtime.UserInputException(message);

/// <summary>A request that would need more memory (or another resource) than the machine has, refused before
/// anything is allocated; the message names the field and the bytes needed. The CLI exits with code 2.</summary>
internal sealed class ResourceLimitException(string message) : Runtime.UserInputException(message);
