#!/usr/bin/env python3
"""The engine's visibility sweep: only the host API is public.

The packages (LiveDlrm.Engine, LiveDlrm.Interop) expose the types listed in build/engine-public-types.txt and
nothing else; the repository's own projects (the CLI, the server, the harness, the tests, the benchmarks) keep
using everything through InternalsVisibleTo. Run from anywhere:

    build/engine-visibility.py            # apply (idempotent: a second run changes nothing)
    build/engine-visibility.py --check    # exit 1 and list what would change, change nothing

What it does, on whatever tree it finds (new files and types included):
  1. In the packed projects (engine/LiveDlrm.Engine, interop/LiveDlrm.Interop) every top-level type declared
     `public` whose full name is not in the list becomes `internal`.
  2. In every other project of the repository that references a packed project (the CLI, the server, the harness,
     the fuzzers, the tests, the benchmarks) every top-level `public` type becomes `internal` too: nothing there is
     published, and a public type could not expose an engine type that is now internal. NUnit runs internal
     fixtures. The exception is a BenchmarkDotNet class (a file with a [Benchmark] method): its generated runner
     needs it public, so its public members must use public types only.
  3. Each project of steps 1 and 2 gets an InternalsVisibleTo for every in-repository project that references it
     (directly or through another project).
The tracked public API (PublicAPI.Shipped.txt / PublicAPI.Unshipped.txt beside each packed project, checked by
Microsoft.CodeAnalysis.PublicApiAnalyzers on every build) is not edited here: a change of the list above is a
change of the API, made deliberately in both places. Top-level types only: a nested type's accessibility is
capped by its container's. All sources use file-scoped namespaces, so a top-level declaration starts at column 0.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKED = ["engine/LiveDlrm.Engine/LiveDlrm.Engine.csproj", "interop/LiveDlrm.Interop/LiveDlrm.Interop.csproj"]
PUBLIC_TYPES = os.path.join(ROOT, "build", "engine-public-types.txt")
SCAN = ["engine", "interop", "tests", "perf"]

TYPE_DECL = re.compile(
    r"^public(?P<mods>(?:\s+(?:static|sealed|abstract|readonly|unsafe|partial|ref|new))*)"
    r"\s+(?P<kind>class|struct|interface|enum|delegate|record(?:\s+(?:class|struct))?)\s+(?P<rest>.*)$")
NAMESPACE = re.compile(r"^namespace\s+([A-Za-z_][\w.]*)\s*;", re.M)
BENCHMARK = re.compile(r"^\s*\[Benchmark\b", re.M)
IVT = re.compile(r'<InternalsVisibleTo\s+Include="([^"]+)"\s*/>')


def rel(path):
    return os.path.relpath(path, ROOT)


def sources(project_dir):
    for dirpath, dirnames, filenames in os.walk(project_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in ("bin", "obj"))
        for f in sorted(filenames):
            if f.endswith(".cs"):
                yield os.path.join(dirpath, f)


def type_name(kind, rest):
    """The declared name (without type parameters) from the text after the keyword."""
    if kind == "delegate":
        # delegate <return type> Name<T>(...): the identifier right before '(' or '<' that follows the return type.
        m = re.match(r"(?:[\w.<>,\[\]?\s]+?)\s+(\w+)\s*[<(]", rest)
    else:
        m = re.match(r"(\w+)", rest)
    if not m:
        raise SystemExit(f"engine-visibility: cannot read the type name in 'public {kind} {rest}'")
    return m.group(1)


def sweep_file(path, keep, changes):
    """Makes the file's top-level public types internal unless keep(full name). Returns the new text."""
    with open(path, encoding="utf-8-sig") as f:
        raw = f.read()
    text = raw
    ns_match = NAMESPACE.search(text)
    ns = ns_match.group(1) if ns_match else ""
    out = []
    for line in text.split("\n"):
        m = TYPE_DECL.match(line)
        if m:
            name = type_name(m.group("kind").split()[0], m.group("rest"))
            full = f"{ns}.{name}" if ns else name
            if not keep(full):
                line = "internal" + line[len("public"):]
                changes.append(f"{rel(path)}: {full} -> internal")
        out.append(line)
    return "\n".join(out)


def project_name(csproj):
    tree = ET.parse(csproj)
    for el in tree.iter("AssemblyName"):
        if el.text and el.text.strip():
            return el.text.strip()
    return os.path.splitext(os.path.basename(csproj))[0]


def project_refs(csproj):
    base = os.path.dirname(csproj)
    tree = ET.parse(csproj)
    return [os.path.normpath(os.path.join(base, el.get("Include").replace("\\", "/")))
            for el in tree.iter("ProjectReference") if el.get("Include")]


def all_projects():
    found = []
    for top in SCAN:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("bin", "obj"))
            found += [os.path.normpath(os.path.join(dirpath, f)) for f in sorted(filenames) if f.endswith(".csproj")]
    return found


def referrers(target, projects, refs):
    """Projects that reference target directly or through other projects."""
    out = set()
    for p in projects:
        seen, stack = set(), list(refs.get(p, []))
        while stack:
            q = stack.pop()
            if q in seen:
                continue
            seen.add(q)
            stack += refs.get(q, [])
        if target in seen:
            out.add(p)
    return out


def ensure_ivt(csproj, names, changes):
    """Adds the missing InternalsVisibleTo items (sorted, in one ItemGroup after the existing ones)."""
    with open(csproj, encoding="utf-8") as f:
        text = f.read()
    have = set(IVT.findall(text))
    missing = sorted(n for n in names if n not in have)
    if not missing:
        return text
    changes += [f"{rel(csproj)}: InternalsVisibleTo {n}" for n in missing]
    items = "".join(f'    <InternalsVisibleTo Include="{n}" />\n' for n in missing)
    last = list(IVT.finditer(text))
    if last:
        end = text.index("\n", last[-1].end()) + 1
        return text[:end] + items + text[end:]
    end = text.rindex("</Project>")
    return text[:end] + "  <ItemGroup>\n" + items + "  </ItemGroup>\n" + text[end:]


def main():
    check = "--check" in sys.argv[1:]
    unknown = [a for a in sys.argv[1:] if a != "--check"]
    if unknown:
        print(f"engine-visibility: unknown argument {unknown[0]} (only --check)", file=sys.stderr)
        return 2
    with open(PUBLIC_TYPES, encoding="utf-8") as f:
        public = {l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")}

    projects = all_projects()
    refs = {p: project_refs(p) for p in projects}
    packed = [os.path.normpath(os.path.join(ROOT, p)) for p in PACKED]
    others = [p for p in projects if p not in packed and any(p in referrers(t, projects, refs) for t in packed)]

    changes, writes = [], {}
    declared = set()
    for proj in packed:
        for src in sources(os.path.dirname(proj)):
            def keep(full):
                declared.add(full)
                return full in public
            new = sweep_file(src, keep, changes)
            writes[src] = new
    for proj in others:
        for src in sources(os.path.dirname(proj)):
            benchmark = BENCHMARK.search(open(src, encoding="utf-8-sig").read()) is not None
            writes[src] = sweep_file(src, lambda full: benchmark, changes)
    for target in packed + others:
        users = referrers(target, projects, refs)
        writes[target] = ensure_ivt(target, {project_name(u) for u in users}, changes)

    stale = sorted(public - declared)
    if stale:
        print("engine-visibility: listed in build/engine-public-types.txt but not declared public in a packed project: "
              + ", ".join(stale), file=sys.stderr)
        return 1

    real = []
    for path, new in writes.items():
        with open(path, encoding="utf-8-sig") as f:
            old = f.read()
        if old != new:
            real.append(path)
            if not check:
                bom = open(path, "rb").read(3) == b"\xef\xbb\xbf"
                with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
                    f.write(new)
    for c in changes:
        print(c)
    print(f"engine-visibility: {len(changes)} change(s) in {len(real)} file(s){' (check only)' if check else ''}",
          file=sys.stderr)
    return 1 if check and real else 0


if __name__ == "__main__":
    sys.exit(main())
