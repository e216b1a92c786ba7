using System.Text;
using LiveDlrm.Files;

namespace LiveDlrm.Serving.Fleet;

/// <summary>
/// A replica's checkpoint, <c>DIR/fleet-checkpoint.bin</c>: the stream it belongs to, the applied position
/// (sequence, and examples of the next message already applied),
/// the base checkpoint directory, and the adapter state exactly as the adapter file holds it (which names the base
/// fingerprint), then an XxHash3-64 of everything before it, written as a <see cref="ChecksummedFile"/> (the adapter
/// file's way): a crash leaves the old checkpoint or the new one. A checkpoint is portable: a new
/// replica can start from a peer's file and replay the log from its sequence.
/// </summary>
internal sealed record FleetCheckpoint(string Stream, ulong AppliedSequence, string BasePath, byte[] AdapterState, string Source)
{
    /// <summary>Examples of message <see cref="AppliedSequence"/> + 1 already in <see cref="AdapterState"/> (a
    /// training batch that ended inside a batched message).</summary>
    public int AppliedOffset { get; init; }

    public const string FileName = "fleet-checkpoint.bin";
    const string Magic = "LDFLEET1";
    const int Format = 2;   // 2 added AppliedOffset; format 1 files are read with offset 0

    public static FleetCheckpoint Of(FleetReplica replica, string stream) =>
        new(stream, replica.AppliedSequence, replica.BasePath, replica.ExportState(), "(live)") { AppliedOffset = replica.AppliedOffset };

    public void Save(string dir)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Encoding.ASCII.GetBytes(Magic));
            w.Write(Format);
            w.Write(Stream);
            w.Write(AppliedSequence);
            w.Write(AppliedOffset);
            w.Write(BasePath);
            w.Write(AdapterState.Length);
            w.Write(AdapterState);
        }
        ChecksummedFile.Write(Path.Combine(Path.GetFullPath(dir), FileName), ms.ToArray());
    }

    /// <summary>The checkpoint in <paramref name="dir"/>, or null when there is none; a damaged or foreign file is
    /// a <see cref="FleetCheckpointException"/> naming it.</summary>
    public static FleetCheckpoint? Load(string dir, string stream)
    {
        string path = Path.Combine(Path.GetFullPath(dir), FileName);
        var body = ChecksummedFile.ReadVerified(path, Magic.Length, why => new FleetCheckpointException(
            why.StartsWith("checksum", StringComparison.Ordinal) ? $"{path}: {why}; move it away to start this replica from the base and the whole log" : $"{path}: {why}"));
        if (body is null) return null;
        try
        {
            using var r = new BinaryReader(new MemoryStream(body), Encoding.UTF8);
            if (Encoding.ASCII.GetString(r.ReadBytes(Magic.Length)) != Magic) throw new FleetCheckpointException($"{path}: not a LiveDlrm fleet checkpoint");
            int format = r.ReadInt32();
            if (format is not (1 or Format)) throw new FleetCheckpointException($"{path}: format {format}, this engine reads {Format}");
            string s = r.ReadString();
            if (s != stream) throw new FleetCheckpointException($"{path}: written for stream '{s}', this replica reads '{stream}'");
            ulong applied = r.ReadUInt64();
            int offset = format >= 2 ? r.ReadInt32() : 0;
            if (offset < 0) throw new FleetCheckpointException($"{path}: applied offset {offset}");
            string basePath = r.ReadString();
            int n = r.ReadInt32();
            if (n < 0 || n > body.Length) throw new FleetCheckpointException($"{path}: adapter state of {n} bytes");
            var state = r.ReadBytes(n);
            if (state.Length != n || r.BaseStream.Position != body.Length) throw new FleetCheckpointException($"{path}: truncated or trailing bytes");
            return new FleetCheckpoint(s, applied, basePath, state, path) { AppliedOffset = offset };
        }
        catch (EndOfStreamException) { throw new FleetCheckpointException($"{path}: truncated"); }
    }
}

/// <summary>A fleet checkpoint that cannot be used (bad input: names the file).</summary>
internal sealed class FleetCheckpointException(string message) : LiveDlrm.Runtime.UserInputException(message);
