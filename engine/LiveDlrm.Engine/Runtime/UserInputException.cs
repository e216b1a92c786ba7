namespace LiveDlrm.Runtime;

/// <summary>
/// A failure the user caused and can fix: a bad option value, an output path that may not be written, a file that
/// is not what it claims to be. The message is complete on its own, one line, naming what was wrong (the option,
/// file, line or field); hosts print it without a stack trace and exit with code 2. Throw it (or a subclass) from
/// any layer; exceptions that are not bad input (a full disk, a bug) must not use it.
/// </summary>
internal class UserInputException(string message, Exception? inner = null) : Exception(message, inner);
