using System.Diagnostics;
using System.Text.RegularExpressions;

namespace LiveDlrm.Tests.Docs;

/// <summary>Keeps README.md and docs/*.md honest where a machine can: links and source paths exist, every quoted
/// <c>./build.sh …</c> (and <c>livedlrm CMD …</c>) command names a verb, command, bench and options that exist, and
/// the text says nothing about how the project was made. Options are looked up in the built binaries' <c>--help</c>
/// output (child processes), so the check holds whichever argument parser the CLI and the perf runner use.</summary>
internal class DocsTests
{
    static readonly string Root = FindRepoRoot();

    /// <summary>Top-level folders whose paths the docs quote; a token starting with one must exist at that path.</summary>
    static readonly string[] RepoDirs = ["engine/", "interop/", "native/", "perf/", "tests/", "build/", "docs/", ".ci/"];

    static readonly string[] SourceExtensions = [".cs", ".c", ".h", ".sh", ".py", ".csproj", ".proj", ".props", ".targets", ".md", ".slnx"];

    public static IEnumerable<string> DocFiles() =>
        new[] { "README.md" }.Concat(Directory.GetFiles(Path.Combine(FindRepoRoot(), "docs"), "*.md")
            .Select(f => "docs/" + Path.GetFileName(f)).Order(StringComparer.Ordinal));

    [TestCaseSource(nameof(DocFiles))]
    public void SaysNothingAboutHowTheProjectWasMade(string doc)
    {
        var hits = Lines(doc).Where(l => Regex.IsMatch(l.Text, @"\b(session|sitting)s?\b", RegexOptions.IgnoreCase))
            .Select(l => $"{doc}:{l.Number}: {l.Text.Trim()}").ToList();
        Assert.That(hits, Is.Empty, string.Join("\n", hits));
    }

    [TestCaseSource(nameof(DocFiles))]
    public void RelativeLinksResolve(string doc)
    {
        var broken = new List<string>();
        string docDir = Path.GetDirectoryName(Path.Combine(Root, doc))!;
        foreach (var (number, text) in Lines(doc))
            foreach (Match m in Regex.Matches(text, @"\[[^\]]*\]\(([^)\s]+)\)"))
            {
                string target = m.Groups[1].Value;
                if (Regex.IsMatch(target, @"^[a-z][a-z0-9+.-]*:", RegexOptions.IgnoreCase)) continue;   // http:, mailto:
                int hash = target.IndexOf('#');
                string file = hash < 0 ? target : target[..hash], anchor = hash < 0 ? "" : target[(hash + 1)..];
                string path = file.Length == 0 ? Path.Combine(Root, doc) : Path.GetFullPath(Path.Combine(docDir, file));
                if (!File.Exists(path) && !Directory.Exists(path)) { broken.Add($"{doc}:{number}: {target} (no such file)"); continue; }
                if (anchor.Length > 0 && path.EndsWith(".md", StringComparison.Ordinal) && !Anchors(path).Contains(anchor))
                    broken.Add($"{doc}:{number}: {target} (no heading with anchor #{anchor})");
            }
        Assert.That(broken, Is.Empty, string.Join("\n", broken));
    }

    [TestCaseSource(nameof(DocFiles))]
    public void QuotedSourcePathsExist(string doc)
    {
        var files = RepoFiles();
        var missing = new List<string>();
        foreach (var (number, text) in Lines(doc))
            foreach (string token in PathTokens(text))
                foreach (string candidate in ExpandBraces(token))
                    if (!PathExists(candidate, files)) missing.Add($"{doc}:{number}: {candidate}");
        Assert.That(missing, Is.Empty, "quoted paths that are not in the repository:\n" + string.Join("\n", missing));
    }

    [TestCaseSource(nameof(DocFiles))]
    public void QuotedCommandsParse(string doc)
    {
        var problems = new List<string>();
        foreach (var (number, text) in Lines(doc))
        {
            foreach (Match m in Regex.Matches(text, @"\./build\.sh\b([^`|#\n]*)"))
                problems.AddRange(CheckBuildCommand(Words(m.Groups[1].Value)).Select(p => $"{doc}:{number}: ./build.sh{Cut(m.Groups[1].Value)}: {p}"));
            foreach (Match m in Regex.Matches(text, @"(?<![\w./-])livedlrm\s+([a-z][a-z-]*)([^`|#\n]*)"))
                if (CliCommands().Contains(m.Groups[1].Value))
                    problems.AddRange(CheckOptions(Words(m.Groups[2].Value), CliHelp(m.Groups[1].Value))
                        .Select(p => $"{doc}:{number}: livedlrm {m.Groups[1].Value}{Cut(m.Groups[2].Value)}: {p}"));
        }
        Assert.That(problems, Is.Empty, string.Join("\n", problems));
    }

    /// <summary>The checks above are only worth something if they reject what does not exist.</summary>
    [Test]
    public void TheChecksRejectWhatDoesNotExist()
    {
        Assert.Multiple(() =>
        {
            Assert.That(CheckBuildCommand(Words("cli replay --mode all --seed 2")), Is.Empty);
            Assert.That(CheckBuildCommand(Words("bench lookup --cases fp32 --runs 5")), Is.Empty);
            Assert.That(CheckBuildCommand(Words("frobnicate")), Is.Not.Empty, "unknown verb");
            Assert.That(CheckBuildCommand(Words("cli frobnicate --seed 2")), Is.Not.Empty, "unknown command");
            Assert.That(CheckBuildCommand(Words("cli replay --no-such-option 3")), Is.Not.Empty, "unknown command option");
            Assert.That(CheckBuildCommand(Words("run --no-such-option")), Is.Not.Empty, "unknown replay option");
            Assert.That(CheckBuildCommand(Words("bench frobnicate")), Is.Not.Empty, "unknown bench");
            Assert.That(CheckBuildCommand(Words("bench lookup --no-such-option")), Is.Not.Empty, "unknown bench option");
            foreach (string bench in new[] { "data", "model", "pim" })
                Assert.That(CheckBuildCommand(Words($"bench {bench} --no-such-option")), Is.Not.Empty, $"unknown {bench} bench option");

            var files = RepoFiles();
            Assert.That(PathTokens("see `engine/LiveDlrm.Engine/Lora/LoraBagKernel.cs` and `Lora/TableAdapter.cs`").All(t => PathExists(t, files)), Is.True);
            Assert.That(PathExists("engine/LiveDlrm.Engine/Lora/NoSuchFile.cs", files), Is.False);
            Assert.That(PathExists("Lora/NoSuchFile.cs", files), Is.False);
            Assert.That(PathExists("engine/.../Numa/NoSuchFile.cs", files), Is.False);
            Assert.That(PathTokens("`NoSuchFile.cs` and perf/NoSuchDir/").ToList(), Is.EquivalentTo(new[] { "perf/NoSuchDir/", "NoSuchFile.cs" }));
            Assert.That(ExpandBraces("interop/LiveDlrm.Interop/{LibC,Hwloc}.cs"),
                Is.EqualTo(new[] { "interop/LiveDlrm.Interop/LibC.cs", "interop/LiveDlrm.Interop/Hwloc.cs" }));
            Assert.That(Anchors(Path.Combine(Root, "README.md")), Does.Contain("platform-notes"));
        });
    }

    // ---- commands ----

    static IEnumerable<string> CheckBuildCommand(IReadOnlyList<string> words)
    {
        if (words.Count == 0 || IsPlaceholder(words[0])) yield break;
        string verb = words[0];
        if (!BuildVerbs().Contains(verb)) { yield return $"build.sh has no verb '{verb}' (it has {string.Join(", ", BuildVerbs())})"; yield break; }
        var rest = words.Skip(1).ToList();
        switch (verb)
        {
            case "run":   // = livedlrm replay --mode all "$@"
                foreach (string p in CheckOptions(rest, CliHelp("replay"))) yield return p;
                break;
            case "cli":
                if (rest.Count == 0 || IsPlaceholder(rest[0]) || rest[0].StartsWith('-')) yield break;
                if (!CliCommands().Contains(rest[0])) { yield return $"livedlrm has no command '{rest[0]}'"; yield break; }
                foreach (string p in CheckOptions(rest.Skip(1).ToList(), CliHelp(rest[0]))) yield return p;
                break;
            case "bench":
                if (rest.Count == 0 || IsPlaceholder(rest[0]) || rest[0].StartsWith('-')) yield break;
                if (rest[0] == "bdn") yield break;   // BenchmarkDotNet's own arguments
                if (!BenchNames().Contains(rest[0])) { yield return $"the perf runner has no bench '{rest[0]}'"; yield break; }
                foreach (string p in CheckOptions(rest.Skip(1).ToList(), BenchHelp(rest[0]))) yield return p;
                break;
        }
    }

    static IEnumerable<string> CheckOptions(IReadOnlyList<string> words, string help)
    {
        foreach (string w in words)
        {
            if (!w.StartsWith("--", StringComparison.Ordinal) || w == "--help" || w.Length == 2) continue;
            string option = w.Split('=')[0].TrimEnd(',', '.', ';', ':', ')');
            if (IsPlaceholder(option[2..])) continue;
            if (!Regex.IsMatch(help, @"(?<![\w-])" + Regex.Escape(option) + @"(?![\w-])"))
                yield return $"option {option} is not in its --help output";
        }
    }

    static bool IsPlaceholder(string word) =>
        word.Length == 0 || word.Contains('…') || word.Contains("...") || word.StartsWith('[') || word.StartsWith('<')
        || (word.Any(char.IsLetter) && word.Where(char.IsLetter).All(char.IsUpper));

    static List<string> Words(string s)
    {
        int stop = s.IndexOf("&&", StringComparison.Ordinal);
        if (stop >= 0) s = s[..stop];
        return s.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries).ToList();
    }

    static string Cut(string s) => (s.IndexOf("&&", StringComparison.Ordinal) is int i and >= 0 ? s[..i] : s).TrimEnd();

    static HashSet<string>? _buildVerbs;
    static HashSet<string> BuildVerbs() => _buildVerbs ??= File.ReadLines(Path.Combine(Root, "build.sh"))
        .Select(l => Regex.Match(l, @"^\s*([a-z][a-z-]*)\)")).Where(m => m.Success).Select(m => m.Groups[1].Value).ToHashSet();

    static readonly Dictionary<string, string> HelpCache = new();

    static string CliDll() => Built(Path.Combine("engine", "LiveDlrm.Cli"), "livedlrm.dll");
    static string PerfDll() => Built(Path.Combine("perf", "LiveDlrm.Perf"), "LiveDlrm.Perf.dll");

    static HashSet<string>? _cliCommands, _benchNames;

    /// <summary>Command names: the first word of each indented line of <c>livedlrm --help</c>.</summary>
    static HashSet<string> CliCommands() => _cliCommands ??= ListedNames(Run(CliDll(), "--help").Output);

    static HashSet<string> BenchNames() => _benchNames ??= ListedNames(Run(PerfDll(), "--help").Output);

    static HashSet<string> ListedNames(string help) => help.Split('\n')
        .Select(l => Regex.Match(l, @"^\s{2,}([a-z][a-z0-9-]*)\s")).Where(m => m.Success).Select(m => m.Groups[1].Value).ToHashSet();

    static string CliHelp(string command)
    {
        lock (HelpCache)
        {
            if (HelpCache.TryGetValue("cli " + command, out var h)) return h;
            var (exit, output) = Run(CliDll(), command, "--help");
            Assert.That(exit, Is.EqualTo(0), $"livedlrm {command} --help failed:\n{output}");
            return HelpCache["cli " + command] = output;
        }
    }

    /// <summary>The bench's own <c>--help</c> text; every bench has one (its options are System.CommandLine
    /// definitions), so a bench whose <c>--help</c> fails is itself a failure.</summary>
    static string BenchHelp(string bench)
    {
        lock (HelpCache)
        {
            if (HelpCache.TryGetValue("bench " + bench, out var h)) return h;
            var (exit, output) = Run(PerfDll(), bench, "--help");
            Assert.That(exit, Is.EqualTo(0), $"bench {bench} --help failed:\n{output}");
            return HelpCache["bench " + bench] = output;
        }
    }

    static (int ExitCode, string Output) Run(string dll, params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Root,
        };
        psi.Environment["NO_COLOR"] = "1";
        psi.ArgumentList.Add(dll);
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{Path.GetFileName(dll)} {string.Join(' ', args)} did not finish within 60 s");
        }
        return (process.ExitCode, stdout + stderr.Result);
    }

    /// <summary>The project's output of the same configuration and framework as this test assembly.</summary>
    static string Built(string project, string dll)
    {
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string path = Path.Combine(Root, project, "bin", testBin.Parent!.Name, testBin.Name, dll);
        Assert.That(File.Exists(path), Is.True, $"{path} is missing: build the solution (./build.sh build) before the tests");
        return path;
    }

    // ---- paths ----

    /// <summary>Path-like tokens: anything starting with a top-level repository folder, and inside backticks also a
    /// source file name (with or without folders, e.g. <c>Lora/LoraBagKernel.cs</c> or <c>EmbeddingBag.cs</c>).</summary>
    static IEnumerable<string> PathTokens(string line)
    {
        var seen = new HashSet<string>();
        foreach (Match m in Regex.Matches(line, @"(?<![\w./{}-])((?:engine|interop|native|perf|tests|build|docs|\.ci)/[\w./{},*-]*)"))
        {
            string t = m.Groups[1].Value.TrimEnd('.', ',', ';', ':');
            if (t.Contains('*')) continue;
            if (seen.Add(t)) yield return t;
        }
        foreach (Match code in Regex.Matches(line, "`([^`]+)`"))
            foreach (string word in code.Groups[1].Value.Split((char[])[' ', '\t', '(', ')', '"', '\''], StringSplitOptions.RemoveEmptyEntries))
            {
                string t = word.TrimEnd('.', ',', ';', ':');
                if (!Regex.IsMatch(t, @"^[\w./{},-]+$") || t.StartsWith('/') || t.StartsWith('.') && !t.StartsWith(".ci/")) continue;
                if (!SourceExtensions.Any(e => t.EndsWith(e, StringComparison.Ordinal))) continue;
                if (t.StartsWith("artifacts/", StringComparison.Ordinal)) continue;
                if (seen.Add(t)) yield return t;
            }
    }

    static IEnumerable<string> ExpandBraces(string token)
    {
        var m = Regex.Match(token, @"\{([^{}]*)\}");
        if (!m.Success) { yield return token; yield break; }
        foreach (string part in m.Groups[1].Value.Split(','))
            foreach (string rest in ExpandBraces(token[..m.Index] + part + token[(m.Index + m.Length)..]))
                yield return rest;
    }

    static bool PathExists(string token, IReadOnlyList<string> files)
    {
        // "engine/.../Numa/Topology.cs": the part after the ellipsis is matched as a suffix.
        int ellipsis = token.IndexOf("/.../", StringComparison.Ordinal);
        if (ellipsis >= 0) return SuffixExists(token[(ellipsis + 5)..], files, token[..ellipsis] + "/");
        string trimmed = token.TrimEnd('/');
        if (RepoDirs.Any(d => token.StartsWith(d, StringComparison.Ordinal)))
            return File.Exists(Path.Combine(Root, trimmed)) || Directory.Exists(Path.Combine(Root, trimmed));
        return SuffixExists(trimmed, files, "");
    }

    static bool SuffixExists(string suffix, IReadOnlyList<string> files, string prefix) =>
        files.Any(f => f.StartsWith(prefix, StringComparison.Ordinal)
                       && (f.EndsWith("/" + suffix, StringComparison.Ordinal) || f == suffix
                           || f.Contains("/" + suffix + "/", StringComparison.Ordinal) || f.StartsWith(suffix + "/", StringComparison.Ordinal)));

    static List<string>? _repoFiles;

    /// <summary>Every file in the repository (relative, '/'-separated), without build outputs.</summary>
    static List<string> RepoFiles() => _repoFiles ??= Directory.EnumerateFiles(Root, "*", SearchOption.AllDirectories)
        .Select(f => Path.GetRelativePath(Root, f).Replace(Path.DirectorySeparatorChar, '/'))
        .Where(f => !Regex.IsMatch(f, @"(^|/)(bin|obj|artifacts|\.git|node_modules)/")).ToList();

    // ---- markdown ----

    /// <summary>GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.</summary>
    static HashSet<string> Anchors(string path) => File.ReadLines(path)
        .Select(l => Regex.Match(l, @"^#{1,6}\s+(.*)$")).Where(m => m.Success)
        .Select(m => Regex.Replace(m.Groups[1].Value.Trim().ToLowerInvariant(), @"[^\p{L}\p{Nd} _-]", "").Replace(' ', '-'))
        .ToHashSet();

    static IEnumerable<(int Number, string Text)> Lines(string doc) =>
        File.ReadLines(Path.Combine(Root, doc)).Select((text, i) => (i + 1, text));

    static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LiveDlrm.slnx"))) return d.FullName;
        throw new InvalidOperationException("repository root (LiveDlrm.slnx) not found above " + AppContext.BaseDirectory);
    }
}
