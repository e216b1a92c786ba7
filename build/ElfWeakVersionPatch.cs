// MSBuild task (compiled by RoslynCodeTaskFactory, see Directory.Build.targets).
//
// Why: TorchSharp 0.107's libLibTorchSharp.so was linked by GCC 13 and lists GLIBCXX_3.4.32 among its version
// needs. Debian 12's libstdc++ stops at GLIBCXX_3.4.30, so the dynamic loader refuses the file. The only symbol
// at that version is std::ios_base_library_init(), which GCC 13 emits as a bare .globl that no relocation uses.
// Marking that one version need VER_FLG_WEAK (0x2 in Elf64_Vernaux.vna_flags) makes the loader accept a
// libstdc++ that lacks the version. The task:
//   - does nothing where the system libstdc++ already defines the version (Ubuntu 24.04, Debian 13);
//   - refuses when any relocation references a symbol of that version (then weakening would be unsound);
//   - patches only the copy in a build output directory (never a file under the NuGet cache);
//   - is idempotent (an already-weak need is left as it is).
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class ElfWeakVersionPatch : Task
{
    const ushort VerFlgWeak = 0x2;
    const uint ShtRela = 4, ShtDynsym = 11, ShtGnuVerdef = 0x6ffffffd, ShtGnuVerneed = 0x6ffffffe, ShtGnuVersym = 0x6fffffff;

    [Required] public string Library { get; set; } = "";
    [Required] public string Version { get; set; } = "";
    /// <summary>Directories the patched file must not live under (the NuGet package cache).</summary>
    public string ForbiddenRoots { get; set; } = "";
    /// <summary>Override for the system library to probe (tests); default: the loader's libstdc++.so.6.</summary>
    public string SystemLibrary { get; set; } = "";

    public override bool Execute()
    {
        if (!System.Runtime.InteropServices.RuntimeInformation.IsOSPlatform(System.Runtime.InteropServices.OSPlatform.Linux)) return true;
        if (!File.Exists(Library)) { Log.LogMessage(MessageImportance.Low, $"ElfWeakVersionPatch: {Library} not present, nothing to do."); return true; }
        try
        {
            string system = SystemLibrary.Length > 0 ? SystemLibrary : FindSystemLibstdcxx();
            if (system.Length > 0 && Elf.Load(system).DefinedVersions().Contains(Version))
            {
                Log.LogMessage(MessageImportance.Low, $"ElfWeakVersionPatch: {system} defines {Version}; {Path.GetFileName(Library)} loads as shipped.");
                return true;
            }
            string full = Path.GetFullPath(Library);
            foreach (var root in ForbiddenRoots.Split(new[] { ';' }, StringSplitOptions.RemoveEmptyEntries).Select(r => r.Trim()).Where(r => r.Length > 0))
                if (full.StartsWith(Path.GetFullPath(root).TrimEnd('/') + "/", StringComparison.Ordinal))
                {
                    Log.LogError($"ElfWeakVersionPatch: refusing to patch {full}: it lies under {root} (patch build-output copies only).");
                    return false;
                }

            var elf = Elf.Load(full);
            var need = elf.FindVersionNeed(Version);
            if (need is null) { Log.LogMessage(MessageImportance.Low, $"ElfWeakVersionPatch: {full} does not need {Version}."); return true; }
            var (flagsOffset, flags, versionIndex) = need.Value;
            var users = elf.RelocationsUsingVersion(versionIndex);
            if (users.Count > 0)
            {
                Log.LogError($"ElfWeakVersionPatch: refusing to weaken {Version} in {full}: relocations reference symbols of that version ({string.Join(", ", users)}); the library would call code the system libstdc++ does not have.");
                return false;
            }
            if ((flags & VerFlgWeak) != 0) { Log.LogMessage(MessageImportance.Low, $"ElfWeakVersionPatch: {full}: {Version} already weak."); return true; }

            // Write a new file and rename it over the old one: never modify in place, so a hard link to the
            // NuGet cache (CreateHardLinksForCopyLocal) can never carry the patch back into the cache.
            byte[] bytes = elf.Bytes;
            ushort patched = (ushort)(flags | VerFlgWeak);
            bytes[flagsOffset] = (byte)patched;
            bytes[flagsOffset + 1] = (byte)(patched >> 8);
            string tmp = full + ".patching";
            File.Copy(full, tmp, overwrite: true);          // keeps the file mode
            using (var f = new FileStream(tmp, FileMode.Open, FileAccess.Write)) { f.Position = flagsOffset; f.Write(bytes, flagsOffset, 2); }
            File.Replace(tmp, full, null);                   // rename(2) over the original
            Log.LogMessage(MessageImportance.High, $"ElfWeakVersionPatch: marked {Version} weak in {full} (system libstdc++ lacks it; no relocation uses it).");
            return true;
        }
        catch (Exception e)
        {
            Log.LogError($"ElfWeakVersionPatch: {Library}: {e.Message}");
            return false;
        }
    }

    static string FindSystemLibstdcxx()
    {
        foreach (var p in new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
                                  "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" })
            if (File.Exists(p)) return p;
        return "";
    }

    /// <summary>Just enough ELF64 little-endian parsing for version sections and dynamic relocations.</summary>
    sealed class Elf
    {
        public byte[] Bytes = Array.Empty<byte>();
        readonly List<(uint Type, ulong Offset, ulong Size, uint Link, ulong EntSize, uint Info)> _sections = new();

        public static Elf Load(string path)
        {
            var e = new Elf { Bytes = File.ReadAllBytes(path) };
            var b = e.Bytes;
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
                throw new InvalidDataException($"{path} is not an ELF file");
            if (b[4] != 2 || b[5] != 1) throw new InvalidDataException($"{path} is not ELF64 little-endian");
            ulong shoff = e.U64(0x28);
            int shentsize = e.U16(0x3a), shnum = e.U16(0x3c);
            for (int i = 0; i < shnum; i++)
            {
                int h = checked((int)shoff + i * shentsize);
                e._sections.Add((e.U32(h + 4), e.U64(h + 0x18), e.U64(h + 0x20), e.U32(h + 0x28), e.U64(h + 0x38), e.U32(h + 0x2c)));
            }
            return e;
        }

        int U16(long o) => BitConverter.ToUInt16(Bytes, checked((int)o));
        uint U32(long o) => BitConverter.ToUInt32(Bytes, checked((int)o));
        ulong U64(long o) => BitConverter.ToUInt64(Bytes, checked((int)o));

        string Str(int strtabSection, uint offset)
        {
            int start = checked((int)(_sections[strtabSection].Offset + offset)), end = start;
            while (Bytes[end] != 0) end++;
            return Encoding.ASCII.GetString(Bytes, start, end - start);
        }

        public HashSet<string> DefinedVersions()
        {
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var s in _sections)
            {
                if (s.Type != ShtGnuVerdef) continue;
                long vd = (long)s.Offset;
                for (uint n = 0; n < s.Info; n++)
                {
                    long aux = vd + U32(vd + 12);               // vd_aux
                    names.Add(Str((int)s.Link, U32(aux)));      // vda_name
                    uint next = U32(vd + 16);                   // vd_next
                    if (next == 0) break;
                    vd += next;
                }
            }
            return names;
        }

        /// <summary>File offset of vna_flags, its value and vna_other (the version index) of the need named <paramref name="version"/>.</summary>
        public (int FlagsOffset, ushort Flags, ushort Index)? FindVersionNeed(string version)
        {
            foreach (var s in _sections)
            {
                if (s.Type != ShtGnuVerneed) continue;
                long vn = (long)s.Offset;
                for (uint n = 0; n < s.Info; n++)
                {
                    int cnt = U16(vn + 2);
                    long aux = vn + U32(vn + 8);                // vn_aux
                    for (int a = 0; a < cnt; a++)
                    {
                        if (Str((int)s.Link, U32(aux + 8)) == version)   // vna_name
                            return ((int)aux + 4, (ushort)U16(aux + 4), (ushort)U16(aux + 6));
                        uint anext = U32(aux + 12);
                        if (anext == 0) break;
                        aux += anext;
                    }
                    uint next = U32(vn + 12);
                    if (next == 0) break;
                    vn += next;
                }
            }
            return null;
        }

        /// <summary>Names of dynamic symbols with version index <paramref name="index"/> that some RELA entry references.</summary>
        public List<string> RelocationsUsingVersion(ushort index)
        {
            var found = new List<string>();
            int dynsym = _sections.FindIndex(s => s.Type == ShtDynsym);
            int versym = _sections.FindIndex(s => s.Type == ShtGnuVersym);
            if (dynsym < 0 || versym < 0) return found;
            foreach (var s in _sections)
            {
                if (s.Type != ShtRela || s.Link != (uint)dynsym) continue;
                ulong entsize = s.EntSize == 0 ? 24 : s.EntSize;
                for (ulong off = 0; off + entsize <= s.Size; off += entsize)
                {
                    ulong info = U64((long)(s.Offset + off + 8));
                    uint sym = (uint)(info >> 32);
                    if (sym == 0) continue;
                    int ver = U16((long)_sections[versym].Offset + 2L * sym) & 0x7fff;
                    if (ver == index)
                        found.Add(Str((int)_sections[dynsym].Link, U32((long)_sections[dynsym].Offset + 24L * sym)));
                }
            }
            return found;
        }
    }
}
