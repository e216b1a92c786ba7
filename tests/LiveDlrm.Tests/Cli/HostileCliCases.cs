using System.Text;

namespace LiveDlrm.Tests.Cli;

/// <summary>Fixture builders for the cases: each writes into the case's scratch folder.</summary>
internal static class Fx
{
    public static readonly Setup Data = (s, lib) => { File.Copy(Path.Combine(lib, "data.tsv"), Path.Combine(s, "data.tsv")); File.Copy(Path.Combine(lib, "data.schema.json"), Path.Combine(s, "data.schema.json")); };
    public static readonly Setup Model = (s, lib) => Copy(Path.Combine(lib, "model"), Path.Combine(s, "model"));
    public static readonly Setup Notes = (s, _) => { Directory.CreateDirectory(Path.Combine(s, "notes")); File.WriteAllText(Path.Combine(s, "notes", "notes.txt"), "my notes\n"); };

    public static Setup Text(string name, string content) => (s, _) => { Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(s, name))!); File.WriteAllText(Path.Combine(s, name), content); };
    public static Setup Bytes(string name, byte[] content) => (s, _) => File.WriteAllBytes(Path.Combine(s, name), content);
    /// <summary>data.schema.json copied as NAME.schema.json beside the data file NAME (so it is used, not Criteo's).</summary>
    public static Setup SchemaFor(string name) => (s, lib) => File.Copy(Path.Combine(lib, "data.schema.json"), Path.Combine(s, Path.ChangeExtension(name, ".schema.json")));
    public static Setup Dir(string name) => (s, _) => Directory.CreateDirectory(Path.Combine(s, name));
    public static Setup Link(string name, string target) => (s, _) => File.CreateSymbolicLink(Path.Combine(s, name), target);
    public static Setup HardLink(string name, string target) => (s, _) =>
    {
        using var p = System.Diagnostics.Process.Start("ln", [Path.Combine(s, target), Path.Combine(s, name)]);
        p.WaitForExit();
    };
    public static Setup Do(Action<string> action) => (s, _) => action(s);

    /// <summary>data.tsv's lines changed by <paramref name="edit"/> (index, line → line or null to drop) as NAME, with the schema beside it.</summary>
    public static Setup Lines(string name, Func<int, string, string?> edit, string prefix = "") => (s, lib) =>
    {
        var lines = File.ReadAllLines(Path.Combine(lib, "data.tsv")).Select((l, i) => edit(i, l)).Where(l => l is not null);
        File.WriteAllText(Path.Combine(s, name), prefix + string.Join("\n", lines) + "\n");
        File.Copy(Path.Combine(lib, "data.schema.json"), Path.Combine(s, Path.ChangeExtension(name, ".schema.json")));
    };

    /// <summary>data.schema.json with <paramref name="from"/> replaced by <paramref name="to"/>, as NAME.</summary>
    public static Setup Schema(string name, string from, string to, string prefix = "") => Schema(name, prefix, (from, to));

    public static Setup Schema(string name, string prefix, params (string From, string To)[] edits) => (s, lib) =>
    {
        string json = File.ReadAllText(Path.Combine(lib, "data.schema.json"));
        foreach (var (from, to) in edits)
        {
            if (!json.Contains(from)) throw new InvalidOperationException($"schema fixture has no '{from}'");
            json = json.Replace(from, to);
        }
        File.WriteAllText(Path.Combine(s, name), prefix + json);
    };

    /// <summary>data.schema.json without dense features (the dense columns become ignored columns), as NAME.</summary>
    public static Setup SchemaWithoutDense(string name) => (s, lib) =>
    {
        var schema = LiveDlrm.Data.StreamSchema.Load(Path.Combine(lib, "data.schema.json"));
        var bare = new LiveDlrm.Data.StreamSchema(schema.Name, schema.Columns, schema.Label, [], schema.Sparse, schema.Timestamp, schema.EventsPerSecond,
                                                  schema.StartTime, schema.TrueProbability, schema.Delimiter, schema.Header);
        File.WriteAllText(Path.Combine(s, name), bare.ToJson());
    };

    public static Setup ModelEdit(string file, Func<byte[], byte[]> edit) => (s, lib) =>
    {
        Copy(Path.Combine(lib, "model"), Path.Combine(s, "model"));
        string path = Path.Combine(s, "model", file);
        File.WriteAllBytes(path, edit(File.ReadAllBytes(path)));
    };

    public static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string d in Directory.GetDirectories(from, "*", SearchOption.AllDirectories)) Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        foreach (string f in Directory.GetFiles(from, "*", SearchOption.AllDirectories)) File.Copy(f, Path.Combine(to, Path.GetRelativePath(from, f)));
    }
}

/// <summary>
/// The hostile command lines, one a line: <c>Bad(name, args, culprit, setups...)</c> must exit 2 with a one-line error
/// naming the culprit; <c>Ok(name, args, mayChange, setups...)</c> must succeed changing only the paths listed.
/// </summary>
internal static class HostileCliCases
{
    static HostileCase Bad(string name, string args, string culprit, params Setup[] setup) => new(name, args, 2, culprit, setup, []);
    static HostileCase Ok(string name, string args, string[] mayChange, params Setup[] setup) => new(name, args, 0, "", setup, mayChange);
    static HostileCase OkThen(string name, string args, string[] mayChange, Action<string, string> check, params Setup[] setup) => new(name, args, 0, "", setup, mayChange, check);

    const string T = "train --events 300 --batch 64";          // a train quick enough for a case
    const string E = "eval --events 300";
    const string R = "replay --events 2000 --mode stale --no-plots"; // a replay that fails early is all these need

    static string WithBom(string s) => "\uFEFF" + s;

    public static readonly HostileCase[] All =
    [
        // ---------------------------------------------------------------- usage
        Bad("unknown-command", "frobnicate", "frobnicate"),
        Bad("unknown-option", "train --out m --bogus 1", "--bogus"),
        Bad("option-twice", "train --out a --out b", "--out"),
        Bad("missing-value", "train --out", "--out"),
        Bad("missing-required-out", "train --events 10", "--out"),
        Bad("eval-missing-model", "eval", "--model"),
        Bad("synth-missing-out", "synth --events 10", "--out"),
        Bad("pim-serve-missing-model", "pim-serve", "--model"),
        Bad("info-unknown-option", "info --nope", "--nope"),
        Bad("flag-with-value", "replay --no-plots maybe", "maybe"),

        // ---------------------------------------------------------------- synth
        Bad("synth-events-0", "synth --out x.tsv --events 0", "--events"),
        Bad("synth-events-negative", "synth --out x.tsv --events -5", "--events"),
        Bad("synth-events-text", "synth --out x.tsv --events lots", "--events"),
        Bad("synth-events-float", "synth --out x.tsv --events 1e99", "--events"),
        Bad("synth-events-huge", "synth --out x.tsv --events 99999999999999999999", "--events"),
        Bad("synth-users-2e9", "synth --out x.tsv --events 100 --users 2000000000", "users"),
        Bad("synth-users-0", "synth --out x.tsv --users 0", "--users"),
        Bad("synth-items-negative", "synth --out x.tsv --items -1", "--items"),
        Bad("synth-new-items-overflow", "synth --out x.tsv --events 100 --items 2000000000 --new-items 2000000000", "items"),
        Bad("synth-seed-negative", "synth --out x.tsv --seed -1", "--seed"),
        Bad("synth-drift-huge", "synth --out x.tsv --drift 1e9", "--drift"),
        Bad("synth-drift-nan", "synth --out x.tsv --drift NaN", "--drift"),
        Bad("synth-eps-0", "synth --out x.tsv --events-per-second 0", "--events-per-second"),
        Bad("synth-hashed-rows-negative", "synth --out x.tsv --hashed-rows -1", "--hashed-rows"),
        Bad("synth-bursts-negative", "synth --out x.tsv --bursts-per-hour -1", "--bursts-per-hour"),
        Bad("synth-burst-minutes-0", "synth --out x.tsv --burst-minutes 0", "--burst-minutes"),
        Bad("synth-out-missing-folder", "synth --out nope/x.tsv --events 10", "nope"),
        Bad("synth-out-directory", "synth --out notes --events 10", "notes", Fx.Notes),
        Bad("synth-out-empty", "synth --out '' --events 10", "--out"),
        Bad("synth-out-in-checkpoint", "synth --out model/x.tsv --events 10", "checkpoint", Fx.Model),
        Bad("synth-out-device", "synth --out /dev/zero --events 10", "/dev/zero"),
        Bad("synth-out-file-as-folder", "synth --out data.tsv/x.tsv --events 10", "data.tsv", Fx.Data),
        Bad("synth-unknown-option", "synth --out x.tsv --rows 5", "--rows"),
        Ok("synth-ok", "synth --out x.tsv --events 50 --users 20 --items 10 --new-items 5", ["x.tsv", "x.schema.json", "x.optimum.json"]),

        // ---------------------------------------------------------------- train: outputs
        Bad("train-out-notes", $"{T} --out notes", "notes", Fx.Notes),
        Bad("train-out-dot", $"{T} --out .", "--out", Fx.Notes),
        Bad("train-out-dotdot", $"{T} --out ..", "--out"),
        Bad("train-out-data-folder", $"{T} --data sub/data.tsv --out sub", "sub", Fx.Do(s => Directory.CreateDirectory(Path.Combine(s, "sub"))), (s, lib) => { File.Copy(Path.Combine(lib, "data.tsv"), Path.Combine(s, "sub", "data.tsv")); File.Copy(Path.Combine(lib, "data.schema.json"), Path.Combine(s, "sub", "data.schema.json")); }),
        Bad("train-out-is-data", $"{T} --data data.tsv --out data.tsv", "data.tsv", Fx.Data),
        Bad("train-out-is-schema", $"{T} --data data.tsv --out data.schema.json", "data.schema.json", Fx.Data),
        Bad("train-out-file", $"{T} --out report.txt", "report.txt", Fx.Text("report.txt", "results\n")),
        Bad("train-out-missing-parent", $"{T} --out nope/m", "nope"),
        Bad("train-out-parent-is-file", $"{T} --out report.txt/m", "report.txt", Fx.Text("report.txt", "x")),
        Bad("train-out-symlink-to-notes", $"{T} --out link", "link", Fx.Notes, Fx.Link("link", "notes")),
        Bad("train-out-checkpoint-with-extra", $"{T} --out model", "notes.txt", Fx.Model, Fx.Text("model/notes.txt", "mine\n")),
        Bad("train-out-fake-manifest", $"{T} --out fake", "fake", Fx.Text("fake/manifest.json", "{}")),
        Bad("train-out-corrupt-checkpoint", $"{T} --out model", "model", Fx.ModelEdit("manifest.json", b => b.Concat("\n"u8.ToArray()).ToArray())),
        Bad("train-out-ancestor-of-cwd", $"{T} --out ../..", "--out"),
        Bad("train-out-root", $"{T} --out /", "--out"),
        Bad("train-force-dot", $"{T} --out . --force", "--out", Fx.Notes),
        Bad("train-force-data-folder", $"{T} --data sub/data.tsv --out sub --force", "sub", Fx.Do(s => Directory.CreateDirectory(Path.Combine(s, "sub"))), (s, lib) => { File.Copy(Path.Combine(lib, "data.tsv"), Path.Combine(s, "sub", "data.tsv")); File.Copy(Path.Combine(lib, "data.schema.json"), Path.Combine(s, "sub", "data.schema.json")); }),
        Bad("train-out-symlink-loop", $"{T} --out loop", "loop", Fx.Link("loop", "loop")),
        Ok("train-out-new", $"{T} --out fresh", ["fresh"]),
        Ok("train-out-empty-dir", $"{T} --out empty", ["empty"], Fx.Dir("empty")),
        Ok("train-out-replaces-checkpoint", $"{T} --out model", ["model"], Fx.Model),
        OkThen("train-out-symlink-written-through", $"{T} --out link", ["real"], (s, _) =>
        {
            Assert.That(new FileInfo(Path.Combine(s, "link")).LinkTarget, Is.EqualTo("real"), "the link still points at the checkpoint");
            Assert.That(File.Exists(Path.Combine(s, "real", "manifest.json")));
        }, Fx.Model, Fx.Do(s => Directory.Move(Path.Combine(s, "model"), Path.Combine(s, "real"))), Fx.Link("link", "real")),
        Ok("train-force-replaces-notes", $"{T} --out notes --force", ["notes"], Fx.Notes),

        // ---------------------------------------------------------------- train: data
        Bad("train-data-missing", $"{T} --data missing.tsv --out m", "missing.tsv"),
        Bad("train-data-directory", $"{T} --data notes --out m", "notes", Fx.Notes),
        Bad("train-data-empty", $"{T} --data empty.tsv --out model", "events", Fx.Model, Fx.Text("empty.tsv", ""), Fx.SchemaFor("empty.tsv")),
        Bad("train-data-garbage", $"{T} --data junk.tsv --out model", "events", Fx.Model, Fx.Bytes("junk.tsv", Enumerable.Range(0, 4000).Select(i => (byte)(i * 37 % 251)).ToArray()), Fx.SchemaFor("junk.tsv")),
        Bad("train-data-all-bad", $"{T} --data bad.tsv --out model", "events", Fx.Model, Fx.Lines("bad.tsv", (i, l) => "x" + l)),
        Bad("train-data-all-bad-fail", $"{T} --data bad.tsv --out model --bad-lines fail", "line 1", Fx.Model, Fx.Lines("bad.tsv", (i, l) => "x" + l)),
        Bad("train-data-line3-fail", $"{T} --data bad.tsv --out model --bad-lines fail", "line 3", Fx.Model, Fx.Lines("bad.tsv", (i, l) => i == 2 ? "oops" : l)),
        Bad("train-data-escape-echoed", $"{T} --data bad.tsv --out m --bad-lines fail", "\\x1b", Fx.Lines("bad.tsv", (i, l) => i == 0 ? "\u001b[2J" + l : l)),
        Bad("train-data-header-only", $"{T} --data h.tsv --schema h.schema.json --out model", "events", Fx.Model,
            Fx.Schema("h.schema.json", "\"header\": false", "\"header\": true"), Fx.Text("h.tsv", "label\ttimestamp\tp_true\tposition\tuser_activity\titem_age_hours\tprice\tuser_id\titem_id\titem_category\tuser_segment\thour_of_day\tdevice\n")),
        Bad("train-data-dev-zero", $"{T} --data /dev/zero --schema data.schema.json --out m", "/dev/zero", Fx.Data),
        Bad("train-bad-lines-value", $"{T} --bad-lines maybe --out m", "--bad-lines"),
        Bad("train-cache-value", $"{T} --cache sometimes --out m", "--cache"),
        Bad("train-schema-with-synthetic", $"{T} --schema data.schema.json --out m", "--schema", Fx.Data),
        Bad("train-events-0", "train --events 0 --out m", "--events"),
        Bad("train-seed-text", $"{T} --seed abc --out m", "--seed"),
        Bad("train-drift-negative", $"{T} --drift -1 --out m", "--drift"),
        Bad("train-world-option", $"{T} --users 5 --out m", "--users"),
        Ok("train-data-bom", $"{T} --data bom.tsv --out m --bad-lines fail", ["m"], Fx.Lines("bom.tsv", (i, l) => l, prefix: "\uFEFF")),
        Ok("train-data-crlf", $"{T} --data crlf.tsv --out m --bad-lines fail", ["m"], Fx.Lines("crlf.tsv", (i, l) => l + "\r")),

        // ---------------------------------------------------------------- train: schema
        Bad("schema-missing", $"{T} --data data.tsv --schema missing.json --out m", "missing.json", Fx.Data),
        Bad("schema-not-json", $"{T} --data data.tsv --schema s.json --out m", "s.json", Fx.Data, Fx.Text("s.json", "{ this is not json")),
        Bad("schema-empty", $"{T} --data data.tsv --schema s.json --out m", "s.json", Fx.Data, Fx.Text("s.json", "")),
        Bad("schema-array", $"{T} --data data.tsv --schema s.json --out m", "s.json", Fx.Data, Fx.Text("s.json", "[1, 2]")),
        Bad("schema-directory", $"{T} --data data.tsv --schema notes --out m", "notes", Fx.Data, Fx.Notes),
        Bad("schema-dev-zero", $"{T} --data data.tsv --schema /dev/zero --out m", "/dev/zero", Fx.Data),
        Bad("schema-unknown-field", $"{T} --data data.tsv --schema s.json --out m", "colums", Fx.Data, Fx.Schema("s.json", "\"columns\"", "\"colums\"")),
        Bad("schema-rows-zero", $"{T} --data data.tsv --schema s.json --out m", "rows", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,", "\"rows\": 0,")),
        Bad("schema-rows-1e12", $"{T} --data data.tsv --schema s.json --out m", "rows", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,", "\"rows\": 1000000000000,")),
        Bad("schema-rows-float", $"{T} --data data.tsv --schema s.json --out m", "rows", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,", "\"rows\": 1e12,")),
        Bad("schema-rows-overflow", $"{T} --data data.tsv --schema s.json --out m", "rows", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,", "\"rows\": 9223372036854775807,")),
        Bad("schema-vocab-dev-zero", $"{T} --data data.tsv --schema s.json --out m", "vocabulary", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,\n      \"mapping\": \"integer\"", "\"rows\": 4,\n      \"mapping\": \"vocabulary\", \"vocabulary\": \"/dev/zero\"")),
        Bad("schema-vocab-outside", $"{T} --data data.tsv --schema sub/s.json --out m", "outside", Fx.Data, Fx.Text("v.txt", "0\n1\n2\n"),
            Fx.Do(s => Directory.CreateDirectory(Path.Combine(s, "sub"))), Fx.Schema("sub/s.json", "\"rows\": 4,\n      \"mapping\": \"integer\"", "\"rows\": 4,\n      \"mapping\": \"vocabulary\", \"vocabulary\": \"../v.txt\"")),
        Bad("schema-vocab-directory", $"{T} --data data.tsv --schema s.json --out m", "vocabulary", Fx.Data, Fx.Notes, Fx.Schema("s.json", "\"rows\": 4,\n      \"mapping\": \"integer\"", "\"rows\": 4,\n      \"mapping\": \"vocabulary\", \"vocabulary\": \"notes\"")),
        Bad("schema-vocab-missing", $"{T} --data data.tsv --schema s.json --out m", "vocabulary", Fx.Data, Fx.Schema("s.json", "\"rows\": 4,\n      \"mapping\": \"integer\"", "\"rows\": 4,\n      \"mapping\": \"vocabulary\", \"vocabulary\": \"nope.txt\"")),
        Bad("schema-delimiter-long", $"{T} --data data.tsv --schema s.json --out m", "delimiter", Fx.Data, Fx.Schema("s.json", "\"delimiter\": \"\\t\"", "\"delimiter\": \"ab\"")),
        Bad("schema-label-missing-column", $"{T} --data data.tsv --schema s.json --out m", "label", Fx.Data, Fx.Schema("s.json", "\"label\": \"label\"", "\"label\": \"click\"")),
        Bad("schema-eps-negative", $"{T} --data data.tsv --schema s.json --out m", "eventsPerSecond", Fx.Data, Fx.Schema("s.json", "", ("\"timestamp\": \"timestamp\"", "\"timestamp\": null"), ("\"eventsPerSecond\": 20", "\"eventsPerSecond\": -1"))),
        Ok("schema-bom", $"{T} --data data.tsv --schema s.json --out m", ["m"], Fx.Data, Fx.Schema("s.json", "\"name\"", "\"name\"", prefix: "\uFEFF")),

        // ---------------------------------------------------------------- train: config and options
        Bad("config-missing", $"{T} --config nope.json --out m", "nope.json"),
        Bad("config-not-json", $"{T} --config c.json --out m", "c.json", Fx.Text("c.json", "nope")),
        Bad("config-dev-zero", $"{T} --config /dev/zero --out m", "/dev/zero"),
        Bad("config-directory", $"{T} --config notes --out m", "notes", Fx.Notes),
        Bad("config-unknown-field", $"{T} --config c.json --out m", "extra", Fx.Text("c.json", "{\"denseFeatures\": 4, \"bottomMlp\": [8, 4], \"topMlp\": [4, 1], \"tables\": [], \"extra\": 1}")),
        Bad("config-no-tables", $"{T} --config c.json --out m", "tables", Fx.Text("c.json", "{\"denseFeatures\": 4, \"bottomMlp\": [8, 4], \"topMlp\": [4, 1], \"tables\": []}")),
        Bad("config-width-huge", $"{T} --config c.json --out m", "bottomMlp", Fx.Text("c.json", "{\"denseFeatures\": 4, \"bottomMlp\": [2000000000, 4], \"topMlp\": [4, 1], \"tables\": [{\"name\": \"t\", \"rows\": 10, \"dim\": 4}]}")),
        Bad("config-rows-huge", $"{T} --config c.json --out m", "rows", Fx.Text("c.json", "{\"denseFeatures\": 4, \"bottomMlp\": [8, 4], \"topMlp\": [4, 1], \"tables\": [{\"name\": \"t\", \"rows\": 4611686018427387903, \"dim\": 4}]}")),
        Bad("config-does-not-fit-data", $"{T} --config c.json --out m", "config", Fx.Text("c.json", "{\"denseFeatures\": 4, \"bottomMlp\": [8, 4], \"topMlp\": [4, 1], \"tables\": [{\"name\": \"t\", \"rows\": 10, \"dim\": 4}]}")),
        Bad("config-with-storage", $"{T} --config c.json --storage fp16 --out m", "--storage", Fx.Text("c.json", "{}")),
        Bad("train-storage-fp8", $"{T} --storage fp8 --out m", "--storage"),
        Bad("train-batch-0", "train --batch 0 --out m", "--batch"),
        Bad("train-batch-huge", "train --batch 99999999999 --out m", "--batch"),
        Bad("train-epochs-0", "train --epochs 0 --out m", "--epochs"),
        Bad("train-lr-negative", "train --lr-dense -1 --out m", "--lr-dense"),
        Bad("train-lr-nan", "train --lr-dense NaN --out m", "--lr-dense"),
        Bad("train-lr-emb-huge", "train --lr-emb 1e9 --out m", "--lr-emb"),
        Bad("train-threads-0", "train --threads 0 --out m", "--threads"),
        Bad("train-optimizer-sgd", "train --optimizer sgd --out m", "--optimizer"),
        Bad("train-model-seed-text", "train --model-seed x --out m", "--model-seed"),

        // ---------------------------------------------------------------- eval
        Bad("eval-model-missing", $"{E} --model nope", "nope"),
        Bad("eval-model-notes", $"{E} --model notes", "notes", Fx.Notes),
        Bad("eval-model-file", $"{E} --model data.tsv", "data.tsv", Fx.Data),
        Bad("eval-model-flipped-table", $"{E} --model model", "checksum", Fx.ModelEdit("tables/000-user_id.bin", b => { b[5] ^= 0x40; return b; })),
        Bad("eval-model-truncated-table", $"{E} --model model", "truncated", Fx.ModelEdit("tables/000-user_id.bin", b => b[..^8])),
        Bad("eval-model-flipped-dense", $"{E} --model model", "dense.bin", Fx.ModelEdit("dense.bin", b => { b[0] ^= 1; return b; })),
        Bad("eval-model-no-checksum", $"{E} --model model", "manifest.xxh3", Fx.Model, Fx.Do(s => File.Delete(Path.Combine(s, "model", "manifest.xxh3")))),
        Bad("eval-model-manifest-garbage", $"{E} --model model", "manifest", Fx.ModelEdit("manifest.json", b => Encoding.UTF8.GetBytes("garbage"))),
        Bad("eval-model-manifest-huge-rows", $"{E} --model model", "manifest", Fx.ModelEdit("manifest.json", b => Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(b).Replace("\"rows\": 4,", "\"rows\": 400000000000,")))),
        Bad("eval-model-symlink-loop", $"{E} --model loop", "loop", Fx.Link("loop", "loop")),
        Bad("eval-json-is-data", $"{E} --model model --data data.tsv --json data.tsv", "--json", Fx.Model, Fx.Data),
        Bad("eval-json-is-schema", $"{E} --model model --data data.tsv --json data.schema.json", "--json", Fx.Model, Fx.Data),
        Bad("eval-json-is-manifest", $"{E} --model model --json model/manifest.json", "--json", Fx.Model),
        Bad("eval-json-in-checkpoint", $"{E} --model model --json model/report.json", "--json", Fx.Model),
        Bad("eval-json-hardlink-to-data", $"{E} --model model --data data.tsv --json h.json", "--json", Fx.Model, Fx.Data, Fx.HardLink("h.json", "data.tsv")),
        Bad("eval-json-symlink-to-data", $"{E} --model model --data data.tsv --json l.json", "--json", Fx.Model, Fx.Data, Fx.Link("l.json", "data.tsv")),
        Bad("eval-json-directory", $"{E} --model model --json notes", "notes", Fx.Model, Fx.Notes),
        Bad("eval-json-missing-folder", $"{E} --model model --json nope/r.json", "nope", Fx.Model),
        Bad("eval-data-empty", $"{E} --model model --data empty.tsv --schema data.schema.json", "events", Fx.Model, Fx.Data, Fx.Text("empty.tsv", "")),
        Bad("eval-data-all-bad", $"{E} --model model --data bad.tsv", "events", Fx.Model, Fx.Lines("bad.tsv", (i, l) => "x" + l)),
        Bad("eval-skip-all", $"{E} --model model --data data.tsv --skip 999999", "--skip", Fx.Model, Fx.Data),
        Bad("eval-skip-negative", $"{E} --model model --skip -1", "--skip", Fx.Model),
        Bad("eval-batch-0", $"{E} --model model --batch 0", "--batch", Fx.Model),
        Bad("eval-events-0", "eval --model model --events 0", "--events", Fx.Model),
        Bad("eval-layout-mismatch", $"{E} --model model --data c.tsv", "checkpoint", Fx.Model, Fx.Text("c.tsv", "1\t" + string.Join('\t', Enumerable.Range(1, 13)) + "\t" + string.Join('\t', Enumerable.Range(1, 26).Select(i => i.ToString("x8"))) + "\n")),
        Bad("eval-bad-lines-fail", $"{E} --model model --data bad.tsv --bad-lines fail", "line 3", Fx.Model, Fx.Lines("bad.tsv", (i, l) => i == 2 ? "oops" : l)),
        Bad("eval-bad-lines-fail-with-cache", $"{E} --model model --data bad.tsv --bad-lines fail --cache auto", "line 3", Fx.Model, Fx.Lines("bad.tsv", (i, l) => i == 2 ? "oops" : l),
            Fx.Do(s => BuildCache(Path.Combine(s, "bad.tsv")))),
        Bad("eval-cache-value", $"{E} --model model --cache yes", "--cache", Fx.Model),
        OkThen("eval-json-new", $"{E} --model model --data data.tsv --json r.json", ["r.json"], (s, _) => Assert.That(File.ReadAllText(Path.Combine(s, "r.json")), Does.Contain("\"auc\"")), Fx.Model, Fx.Data),
        OkThen("eval-stale-cache-same-size", $"{E} --model model --data data.tsv --cache auto --bad-lines fail", ["data.tsv.ldcache"],
            (_, output) => Assert.That(output, Does.Contain("changed since the cache was built"), "a same-size edit with the mtime restored is caught"), Fx.Model, Fx.Data,
            Fx.Do(s => { string p = Path.Combine(s, "data.tsv"); BuildCache(p); var t = File.GetLastWriteTimeUtc(p); var b = File.ReadAllBytes(p); int at = Array.IndexOf(b, (byte)'\n') + 1; b[at] = b[at] == (byte)'0' ? (byte)'1' : (byte)'0'; File.WriteAllBytes(p, b); File.SetLastWriteTimeUtc(p, t); })),

        // ---------------------------------------------------------------- replay
        Bad("replay-label-delay-max", $"{R} --label-delay 9223372036854775807", "--label-delay"),
        Bad("replay-label-delay-negative", $"{R} --label-delay -1", "--label-delay"),
        Bad("replay-window-max", $"{R} --window 9223372036854775807", "--window"),
        Bad("replay-window-0", $"{R} --window 0", "--window"),
        Bad("replay-sync-interval-0", $"{R} --sync-interval 0", "--sync-interval"),
        Bad("replay-sync-delay-huge", $"{R} --sync-delay 9223372036854775807", "--sync-delay"),
        Bad("replay-base-prefix-1", $"{R} --base-prefix 1.0", "prefix"),
        Bad("replay-base-prefix-0", $"{R} --base-prefix 0", "prefix"),
        Bad("replay-base-prefix-negative", $"{R} --base-prefix -0.5", "--base-prefix"),
        Bad("replay-base-prefix-text", $"{R} --base-prefix half", "--base-prefix"),
        Bad("replay-base-prefix-fraction-above-1", $"{R} --base-prefix 1.5", "--base-prefix"),
        Bad("replay-base-prefix-time-before", $"{R} --base-prefix 1000", "prefix"),
        Bad("replay-mode", "replay --mode fast", "--mode"),
        Bad("replay-out-file", $"{R} --out data.tsv", "--out", Fx.Data),
        Bad("replay-out-in-checkpoint", $"{R} --out model", "--out", Fx.Model),
        Bad("replay-out-missing-parent", $"{R} --out nope/r", "nope"),
        Bad("replay-model-notes", $"{R} --model notes", "notes", Fx.Notes),
        Bad("replay-model-missing", $"{R} --model nope", "nope"),
        Bad("replay-model-corrupt", $"{R} --model model --out r", "checksum", Fx.ModelEdit("tables/000-user_id.bin", b => { b[5] ^= 0x40; return b; })),
        Bad("replay-rank-0", "replay --rank 0", "--rank"),
        Bad("replay-rank-huge", "replay --rank 5000", "--rank"),
        Bad("replay-rank-above-max", "replay --rank 8 --max-rank 4", "--max-rank"),
        Bad("replay-min-rank-above-max", "replay --rank 2 --min-rank 8 --max-rank 4", "--min-rank"),
        Bad("replay-budget-0", "replay --budget 0", "--budget"),
        Bad("replay-budget-2", "replay --budget 2", "--budget"),
        Bad("replay-energy-0", "replay --energy 0", "--energy"),
        Bad("replay-live-backend", "replay --live-backend gpu", "--live-backend"),
        Bad("replay-pim-dpus-0", "replay --pim-dpus 0", "--pim-dpus"),
        Bad("replay-world-with-file", "replay --data data.tsv --users 5", "--users", Fx.Data),
        Bad("replay-data-empty", $"{R} --data empty.tsv --schema data.schema.json --out r", "events", Fx.Data, Fx.Text("empty.tsv", "")),
        Bad("replay-last-layer", "replay --last-layer maybe", "--last-layer"),
        Bad("replay-budget-scope", "replay --budget-scope all", "--budget-scope"),
        Bad("replay-optimizer", "replay --optimizer adam", "--optimizer"),
        Bad("replay-dim-0", "replay --dim 0", "--dim"),
        Bad("replay-events-0", "replay --events 0", "--events"),
        Bad("replay-online-batch-0", "replay --online-batch 0", "--online-batch"),
        Bad("replay-lr-negative", "replay --lr -1", "--lr"),
        Bad("replay-users-2e9", "replay --events 1000 --users 2000000000", "users"),

        // ---------------------------------------------------------------- topology, latency, pim, demo, info
        Bad("topology-sys-root-missing", "topology --sys-root nope", "nope"),
        Bad("topology-sys-root-file", "topology --sys-root data.tsv", "data.tsv", Fx.Data),
        Bad("topology-sys-root-empty-dir", "topology --sys-root empty", "empty", Fx.Dir("empty")),
        Bad("topology-trainer-share", "topology --trainer-share 2", "--trainer-share"),
        Bad("topology-hide-missing-value", "topology --hide", "--hide"),
        Bad("latency-workload", "latency --workload gpu", "--workload"),
        Bad("latency-seconds-0", "latency --seconds 0", "--seconds"),
        Bad("latency-load", "latency --load 5", "--load"),
        Bad("latency-rows-text", "latency --rows many", "--rows"),
        Bad("latency-json-directory", "latency --quick --json notes", "notes", Fx.Notes),
        Bad("latency-json-missing-folder", "latency --quick --json nope/l.json", "nope"),
        Bad("latency-unknown", "latency --bogus 1", "--bogus"),
        Bad("pim-plan-dpus-0", "pim-plan --dpus 0", "--dpus"),
        Bad("pim-plan-model-notes", "pim-plan --model notes", "notes", Fx.Notes),
        Bad("pim-plan-model-missing", "pim-plan --model nope", "nope"),
        Bad("pim-plan-trace-missing", "pim-plan --tables 1000:16 --trace nope.tsv", "nope.tsv"),
        Bad("pim-plan-zipf", "pim-plan --zipf 0", "--zipf"),
        Bad("pim-plan-batches", "pim-plan --batches 1", "--batches"),
        Bad("pim-serve-model-missing", "pim-serve --model nope", "nope"),
        Bad("pim-serve-model-notes", "pim-serve --model notes", "notes", Fx.Notes),
        Bad("pim-serve-backend", "pim-serve --model model --backend gpu", "--backend", Fx.Model),
        Bad("pim-serve-strategy", "pim-serve --model model --strategy best", "--strategy", Fx.Model),
        Bad("pim-serve-dpus", "pim-serve --model model --dpus 0", "--dpus", Fx.Model),
        Bad("pim-serve-events", "pim-serve --model model --events 1", "--events", Fx.Model),
        Bad("demo-rows-0", "demo --rows 0", "--rows"),
        Bad("demo-rows-huge", "demo --rows 17179869184 --dim 4096", "rows"),
        Bad("demo-dim", "demo --dim 0", "--dim"),
        Bad("demo-storage", "demo --storage fp8", "--storage"),
        Bad("demo-dist", "demo --dist normal", "--dist"),
        Bad("demo-seconds", "demo --seconds 0", "--seconds"),
        Bad("demo-isa", "demo --isa avx9000", "--isa"),
        Bad("demo-sweep-prefetch", "demo --sweep-prefetch 1,x", "--sweep-prefetch"),
        Bad("info-positional", "info extra", "extra"),
    ];

    /// <summary>Builds FILE.ldcache under --bad-lines skip, as an earlier run with <c>--cache auto</c> would have.</summary>
    static void BuildCache(string tsv)
    {
        var schema = LiveDlrm.Data.StreamSchema.Load(Path.ChangeExtension(tsv, ".schema.json"));
        using var source = new LiveDlrm.Data.TsvEventSource(tsv, schema, new LiveDlrm.Data.TsvReaderOptions { Cache = LiveDlrm.Data.CacheMode.Rebuild });
        var batch = new LiveDlrm.Data.EventBatch(schema.Layout, 256, 2);
        while (source.Read(batch) > 0) { }
    }
}
