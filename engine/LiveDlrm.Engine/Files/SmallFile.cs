using System.Text;
using LiveDlrm.Interop;

namespace LiveDlrm.Files;

/// <summary>Reads a small input file (a schema, a model config) whole: it must be a regular file of at most
/// <c>maxBytes</c> (a device such as /dev/zero or a huge file is refused, not read without end). A UTF-8 byte
/// order mark is dropped. Problems are returned as a message for the caller's own exception type.</summary>
internal static class SmallFile
{
    public const int DefaultMaxBytes = 16 << 20;

    public static bool TryReadText(string path, out string text, out string? error, int maxBytes = DefaultMaxBytes)
    {
        text = "";
        error = null;
        try
        {
            var stat = FileStatusInterop.Stat(path);
            if (stat.Kind == FileKind.Missing) { error = "does not exist"; return false; }
            if (stat.Kind == FileKind.Directory) { error = "is a directory, not a file"; return false; }
            if (stat.Kind != FileKind.Regular) { error = "is not a regular file"; return false; }
            if (stat.Size > maxBytes) { error = $"is {stat.Size} bytes, more than the {maxBytes} allowed"; return false; }
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
            var bytes = new byte[maxBytes + 1L > stat.Size + 1 ? stat.Size + 1 : maxBytes + 1];
            int n = f.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
            if (n > maxBytes) { error = $"is more than the {maxBytes} bytes allowed"; return false; }
            text = new UTF8Encoding(false, false).GetString(bytes, 0, n).TrimStart('\uFEFF');
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error = $"cannot be read ({e.Message})";
            return false;
        }
    }
}
