using System.Text;
using CsCheck;

namespace LiveDlrm.Fuzz;

/// <summary>
/// Inputs for the fuzz properties: a valid seed input changed by a short list of mutations (bit flips, interesting
/// bytes, deletions, duplications, dictionary tokens such as extreme numbers or a byte order mark, truncation,
/// splices with another seed). The mutations are read from a byte tape CsCheck generates, so a failing input
/// shrinks towards fewer and simpler mutations and is reproduced from its CsCheck seed.
/// </summary>
internal static class Mutator
{
    static readonly byte[] Interesting = [0, 0xFF, 0x7F, 0x80, (byte)'\t', (byte)'\n', (byte)'\r', (byte)',', (byte)'"', (byte)'\\',
                                          0xEF, 0xBB, 0xBF, (byte)'-', (byte)'9', (byte)'|', (byte)':', (byte)'{', (byte)'}', (byte)'[', (byte)']', 0x1B, 0xC0];

    static readonly byte[][] Tokens = new[]
    {
        "0", "-1", "1e308", "-1e308", "1e12", "1e-320", "NaN", "Infinity", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "18446744073709551615", "2147483647", "2147483648", "-2147483649", "0.5", "1.0", "007",
        "null", "true", "false", "[]", "{}", "\"\"", "\"a\"", "[1,2]", "{\"a\":1}", "\uFEFF", "\u202E", "\u0000", "\t\t\t", "\r\n",
        "\"..\"", "\"/dev/zero\"", "\"/\"", "\"../x\"", "ffffffffffffffff", "-0", "+5", "1_000", " ", "\\u0000", "\"\\ud800\"",
    }.Select(Encoding.UTF8.GetBytes).ToArray();

    /// <summary>Seed inputs mutated by up to 8 operations from a generated tape.</summary>
    public static Gen<byte[]> Of(IReadOnlyList<byte[]> seeds) =>
        Gen.Select(Gen.Int[0, seeds.Count - 1], Gen.Byte.Array[0, 48], (i, tape) => Apply(seeds, i, tape));

    public static byte[] Apply(IReadOnlyList<byte[]> seeds, int seedIndex, byte[] tape)
    {
        var data = new List<byte>(seeds[seedIndex]);
        int t = 0;
        int Next() => t < tape.Length ? tape[t++] : 0;
        int Pos() => data.Count == 0 ? 0 : ((Next() << 8) | Next()) % (data.Count + 1);
        int ops = tape.Length / 6;
        for (int op = 0; op < ops && op < 8; op++)
        {
            int kind = Next() % 9;
            int p = Pos();
            switch (kind)
            {
                case 0 when p < data.Count: data[p] ^= (byte)(1 << (Next() & 7)); break;
                case 1 when p < data.Count: data[p] = Interesting[Next() % Interesting.Length]; break;
                case 2: data.RemoveRange(Math.Min(p, data.Count), Math.Min(data.Count - Math.Min(p, data.Count), 1 + Next() % 16)); break;
                case 3:
                    int len = Math.Min(data.Count - Math.Min(p, data.Count), 1 + Next() % 32);
                    data.InsertRange(Math.Min(p, data.Count), data.GetRange(Math.Min(p, data.Count), len));
                    break;
                case 4: data.InsertRange(p, Tokens[Next() % Tokens.Length]); break;
                case 5:
                    // Replace the number (or word) at p with a token: reaches the fields' value checks.
                    int s = p;
                    while (s < data.Count && !IsWordByte(data[s])) s++;
                    int e = s;
                    while (e < data.Count && IsWordByte(data[e])) e++;
                    data.RemoveRange(s, e - s);
                    data.InsertRange(s, Tokens[Next() % Tokens.Length]);
                    break;
                case 6: if (data.Count > 0) data.RemoveRange(p, data.Count - p); break;
                case 7:
                    var other = seeds[Next() % seeds.Count];
                    int q = other.Length == 0 ? 0 : ((Next() << 8) | Next()) % other.Length;
                    data.RemoveRange(p, data.Count - p);
                    data.AddRange(other.AsSpan(q).ToArray());
                    break;
                case 8 when p < data.Count: data.Insert(p, data[p]); break;
            }
        }
        return data.ToArray();
    }

    static bool IsWordByte(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or (byte)'.' or (byte)'-' or (byte)'+';
}
