using System.IO.Hashing;
using LiveDlrm.Interop;

namespace LiveDlrm.Files;

/// <summary>
/// A state file written whole or not at all, with an XxHash3-64 of its body as the last 8 bytes: written to a
/// temporary sibling, fsynced, renamed over the old file, and the directory fsynced, so a crash at any point leaves
/// the previous file or the new one, never a mix. The adapter file and a fleet replica's checkpoint are both this.
/// </summary>
internal static class ChecksummedFile
{
    /// <summary>XxHash3-64 of a body: what the trailer holds.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> body) => XxHash3.HashToUInt64(body);

    /// <summary>Writes <paramref name="body"/> and its checksum to <paramref name="path"/> atomically (creating its
    /// directory); a failure leaves the previous file untouched and no temporary behind.</summary>
    public static void Write(string path, ReadOnlySpan<byte> body)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        try
        {
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                f.Write(body);
                Span<byte> sum = stackalloc byte[8];
                BitConverter.TryWriteBytes(sum, Checksum(body));
                f.Write(sum);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
            FileSyncInterop.SyncDirectory(dir);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { /* the target is untouched either way */ }
            throw;
        }
    }

    /// <summary>The body of <paramref name="path"/> with its checksum verified, or null when there is no file.
    /// <paramref name="damaged"/> makes the exception for a file shorter than <paramref name="minBody"/> bytes or
    /// with a wrong checksum (its argument says which).</summary>
    public static byte[]? ReadVerified(string path, int minBody, Func<string, Exception> damaged)
    {
        if (!File.Exists(path)) return null;
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < minBody + 8) throw damaged($"truncated ({bytes.Length} bytes)");
        var body = bytes.AsSpan(0, bytes.Length - 8);
        if (BitConverter.ToUInt64(bytes, bytes.Length - 8) != Checksum(body)) throw damaged("checksum mismatch (damaged file)");
        return body.ToArray();
    }
}
