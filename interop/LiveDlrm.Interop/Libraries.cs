using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LiveDlrm.Interop;

/// <summary>Logical names of the native libraries the bindings import, resolved once by
/// <see cref="NativeLibraries"/>. System libraries are looked up by their versioned soname (Debian ships
/// <c>libnuma.so.1</c> without the unversioned development link); the project's own libraries (built by CMake
/// into artifacts/native/lib and copied next to each app) by file name.</summary>
internal static class Libraries
{
    public const string LibC = "livedlrm:libc";
    public const string Numa = "livedlrm:numa";
    public const string Hwloc = "livedlrm:hwloc";
    /// <summary>native/ref: the C reference gather (AVX2/AVX-512, -O3 -march=native) the benchmarks compare to.</summary>
    public const string KernelRef = "livedlrm:ref";
    /// <summary>native/kernels: the engine's native embedding-bag kernel (generic x86-64 build, cpuid dispatch).</summary>
    public const string Kernels = "livedlrm:kernels";
    /// <summary>native/pim: the UPMEM shim (over the SDK or the project's emulation).</summary>
    public const string Pim = "livedlrm:pim";

    internal static readonly IReadOnlyDictionary<string, string[]> Candidates = new Dictionary<string, string[]>
    {
        [LibC] = ["libc.so.6"],
        [Numa] = ["libnuma.so.1"],
        [Hwloc] = ["libhwloc.so.15"],
        [KernelRef] = ["liblivedlrm_ref.so"],
        [Kernels] = ["liblivedlrm_kernels.so"],
        [Pim] = ["liblivedlrm_pim.so"],
    };
}

/// <summary>The one <see cref="DllImportResolver"/> for this assembly. A library that cannot be found is a
/// capability that reports "unavailable" (<see cref="IsAvailable"/>) rather than a crash: callers check before
/// their first call, and the engine keeps working without libnuma, hwloc or the project's native parts.</summary>
internal static class NativeLibraries
{
    static readonly ConcurrentDictionary<string, nint> Loaded = new(StringComparer.Ordinal);
    static readonly ConcurrentDictionary<string, string> Paths = new(StringComparer.Ordinal);

    /// <summary>Names (logical, e.g. "livedlrm:numa", or a soname) to treat as missing. For tests that simulate a
    /// machine without a library; set before the library's first use in the process.</summary>
    public static ISet<string> Hidden { get; } = new HashSet<string>(StringComparer.Ordinal);

    // Registered when the assembly loads, before any binding can run: a library-level initializer is exactly the
    // point here (CA2255 warns against it for libraries in general).
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Register() => NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        Libraries.Candidates.ContainsKey(name) ? TryLoad(name) : 0;

    /// <summary>Handle of the library, or 0 when it is missing (or hidden).</summary>
    internal static nint TryLoad(string logical) => Loaded.GetOrAdd(logical, static l =>
    {
        if (Hidden.Contains(l)) return 0;
        foreach (var soname in Libraries.Candidates.TryGetValue(l, out var c) ? c : [l])
        {
            if (Hidden.Contains(soname)) continue;
            foreach (var dir in SearchDirectories())
            {
                string path = Path.Combine(dir, soname);
                if (File.Exists(path) && NativeLibrary.TryLoad(path, out nint h)) { Paths[l] = path; return h; }
            }
            if (NativeLibrary.TryLoad(soname, out nint sys)) { Paths[l] = soname; return sys; }
        }
        return 0;
    });

    static IEnumerable<string> SearchDirectories()
    {
        if (Environment.GetEnvironmentVariable("LIVEDLRM_NATIVE_DIR") is { Length: > 0 } env) yield return env;
        yield return AppContext.BaseDirectory;
        // A host that references the LiveDlrm.Interop package gets the libraries under runtimes/linux-x64/native/ of
        // its output; the .NET host lists those directories (from deps.json) here.
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string dirs)
            foreach (var dir in dirs.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
                yield return dir;
    }

    public static bool IsAvailable(string logical) => TryLoad(logical) != 0;

    /// <summary>Where the library was loaded from (a path or the soname the system loader resolved), or null.</summary>
    public static string? LoadedFrom(string logical) => IsAvailable(logical) && Paths.TryGetValue(logical, out var p) ? p : null;

    public static IEnumerable<string> Known => Libraries.Candidates.Keys;
}
