using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace LiveDlrm.Files;

/// <summary>
/// Reads an input JSON document (model config, stream schema) through a source-generated <see cref="JsonTypeInfo"/>
/// and turns the serializer's errors into the one-line, field-naming form every input error takes
/// (<c>tables[2].dim: must be a 32-bit integer</c>, <c>colums: unknown field (known: …)</c>). The field and the
/// expected kind come from the serializer's JSON path walked through the type's metadata, not from its message text.
/// The context is expected to disallow unmapped members, so that a misspelt field is an error rather than ignored.
/// </summary>
internal static class JsonFieldReader
{
    /// <summary>Deserializes <paramref name="json"/>; <paramref name="document"/> names the whole (e.g. "the schema")
    /// for errors about the root; <paramref name="error"/> makes the exception to throw from a message.</summary>
    public static T Read<T>(string json, JsonTypeInfo<T> typeInfo, string document, Func<string, Exception> error) where T : class
    {
        T? value;
        try { value = JsonSerializer.Deserialize(json, typeInfo); }
        catch (JsonException e) { throw error(Describe(e, typeInfo, "", document)); }
        return value ?? throw error($"{document} must be a JSON object");
    }

    /// <summary>Deserializes one element of a larger document; error fields start with <paramref name="prefix"/>
    /// (its path in the document, e.g. <c>dense[3]</c>).</summary>
    public static T Read<T>(JsonElement element, JsonTypeInfo<T> typeInfo, string prefix, string document, Func<string, Exception> error) where T : class
    {
        T? value;
        try { value = element.Deserialize(typeInfo); }
        catch (JsonException e) { throw error(Describe(e, typeInfo, prefix, document)); }
        return value ?? throw error(prefix.Length == 0 ? $"{document} must be a JSON object" : $"{prefix}: must be an object");
    }

    static string Describe(JsonException e, JsonTypeInfo root, string prefix, string document)
    {
        // The reader's own errors (syntax, an empty file) come wrapped; their message has line and position.
        if (e.InnerException is JsonException syntax) return $"not valid JSON: {syntax.Message}";
        var segments = ParsePath(e.Path);
        JsonTypeInfo info = root;
        string field = prefix;
        foreach (var (name, index) in segments)
        {
            if (name is not null)
            {
                var property = info.Properties.FirstOrDefault(p => p.Name == name);
                field = field.Length == 0 ? name : $"{field}.{name}";
                if (property is null)
                    return $"{field}: unknown field (known: {string.Join(", ", info.Properties.Select(p => p.Name))})";
                info = info.Options.GetTypeInfo(property.PropertyType);
            }
            else
            {
                field += $"[{index}]";
                if (info.ElementType is not { } element) break;
                info = info.Options.GetTypeInfo(element);
            }
        }
        return field.Length == 0 ? $"{document} must be a JSON object" : $"{field}: {Expected(info)}";
    }

    static string Expected(JsonTypeInfo info)
    {
        if (info.Kind is JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary) return "must be an object";
        if (info.Kind is JsonTypeInfoKind.Enumerable) return "must be an array";
        var type = Nullable.GetUnderlyingType(info.Type) ?? info.Type;
        return type == typeof(string) ? "must be a string of valid text"
            : type == typeof(bool) ? "must be true or false"
            : type == typeof(int) ? "must be a 32-bit integer"
            : type == typeof(long) ? "must be a 64-bit integer"
            : type == typeof(ulong) ? "must be a non-negative integer"
            : type == typeof(double) ? "must be a number"
            : $"must be a {type.Name}";
    }

    /// <summary>The serializer's path (<c>$.tables[2].dim</c>, <c>$['odd name']</c>) as property names and indices.</summary>
    static List<(string? Name, int Index)> ParsePath(string? path)
    {
        var segments = new List<(string?, int)>();
        if (string.IsNullOrEmpty(path)) return segments;
        int i = path[0] == '$' ? 1 : 0;
        while (i < path.Length)
        {
            if (path[i] == '.')
            {
                int end = path.IndexOfAny(['.', '['], i + 1);
                if (end < 0) end = path.Length;
                segments.Add((path[(i + 1)..end], 0));
                i = end;
            }
            else if (path.AsSpan(i).StartsWith("['"))
            {
                int end = path.IndexOf("']", i + 2, StringComparison.Ordinal);
                if (end < 0) break;
                segments.Add((path[(i + 2)..end].Replace("\\'", "'"), 0));
                i = end + 2;
            }
            else if (path[i] == '[')
            {
                int end = path.IndexOf(']', i);
                if (end < 0 || !int.TryParse(path.AsSpan(i + 1, end - i - 1), out int index)) break;
                segments.Add((null, index));
                i = end + 1;
            }
            else break;
        }
        return segments;
    }
}
