using System.Globalization;
using System.Text;

namespace LiveDlrm.Data;

/// <summary>Bytes from a data file made safe to echo in a one-line message: control characters (a terminal escape,
/// a line break), invisible formatting characters and invalid UTF-8 are shown as <c>\xNN</c> / <c>\u{NNNN}</c>;
/// long text is cut.</summary>
internal static class EscapedText
{
    public static string Of(ReadOnlySpan<byte> bytes, int maxChars = 40)
    {
        var sb = new StringBuilder(Math.Min(bytes.Length, maxChars) + 8);
        while (!bytes.IsEmpty)
        {
            if (sb.Length >= maxChars) { sb.Append("..."); break; }
            var status = Rune.DecodeFromUtf8(bytes, out Rune rune, out int consumed);
            if (status != System.Buffers.OperationStatus.Done)
            {
                sb.Append("\\x").Append(bytes[0].ToString("x2", CultureInfo.InvariantCulture));
                bytes = bytes[1..];
                continue;
            }
            Append(sb, rune);
            bytes = bytes[consumed..];
        }
        return sb.ToString();
    }

    public static string Of(string text, int maxChars = 200)
    {
        var sb = new StringBuilder(Math.Min(text.Length, maxChars) + 8);
        foreach (var rune in text.EnumerateRunes())
        {
            if (sb.Length >= maxChars) { sb.Append("..."); break; }
            Append(sb, rune);
        }
        return sb.ToString();
    }

    static void Append(StringBuilder sb, Rune rune)
    {
        var category = Rune.GetUnicodeCategory(rune);
        if (rune.Value < 0x80 && !Rune.IsControl(rune)) sb.Append((char)rune.Value);
        else if (Rune.IsControl(rune) || category is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse)
            sb.Append(rune.Value < 0x100 ? $"\\x{rune.Value:x2}" : $"\\u{{{rune.Value:x4}}}");
        else sb.Append(rune.ToString());
    }
}
