using LiveDlrm.Cli;

namespace LiveDlrm.Tests.Cli;

/// <summary>Every verb of <c>livedlrm</c>: its help lists its options (and every option it had when each command
/// parsed its own arguments), and a bad option ends in exit code 2 with one line naming it, no stack trace.</summary>
internal class CliCommandTests
{
    /// <summary>The options each command accepted under the hand-written parsers (from their usage texts); none
    /// may disappear.</summary>
    static readonly Dictionary<string, string> FormerOptions = new()
    {
        ["demo"] = "--batch --dim --dist --isa --no-hugepages --pooling --prefetch --rows --seconds --self-check --storage --sweep-prefetch --threads --zipf",
        ["export-pytorch"] = "",
        ["import-pytorch"] = "",
        ["eval"] = "--bad-lines --batch --cache --data --drift --events --events-per-second --json --model --schema --seed --skip",
        ["info"] = "",
        ["loadgen"] = "--batch --feedback-delay --feedback-rate --grpc-target --json --max-in-flight --positive-rate --qps --seconds --seed --target --warmup",
        ["latency"] = "--base-events --batch --dim --json --load --max-qps --pooling --qos-target-ms --quick --rows --seconds --slo-factor --tables --trainer-rows --trainer-tables --trainer-threads --trial-seconds --warmup --workload",
        ["pim-plan"] = "--bags --batches --dpus --model --pooling --seed --tables --trace --zipf",
        ["pim-serve"] = "--backend --batch --dpus --events --ids --model --seed --strategy --zipf",
        ["replay"] = "--adagrad-init --lr --bad-lines --base-epochs --base-prefix --batch --budget --budget-scope --burst-boost --burst-minutes --bursts-per-hour --cache --data --dense-lr --dim --drift --energy --events --events-per-second --grow-threshold --hashed-rows --hot-rows --items --label-delay --last-layer --last-layer-lr --live-backend --lr-a --lr-b --max-rank --min-rank --mode --model --new-items --no-plots --no-reuse --online-batch --optimizer --out --pim-dpus --rank --rank-interval --schema --seed --small-table-budget --sync-delay --sync-interval --users --window",
        ["fleet"] = "",   // options are on its subcommands (replica, status)
        ["serve"] = "--adapters --adapters-reset --admin-token-file --checkpoint-interval --config --grpc-listen --label-window --labels --listen --max-bag-ids --max-batch-events --max-request-bytes --model --no-trainer --qos --qos-target-ms --ring-capacity --shutdown-timeout --trainer-batch",
        ["synth"] = "--burst-boost --burst-minutes --bursts-per-hour --drift --events --events-per-second --hashed-rows --items --new-items --out --seed --users",
        ["topology"] = "--hide --resctrl-root --sys-root --trainer-share",
        ["train"] = "--bad-lines --batch --cache --config --data --drift --epochs --events --events-per-second --lr-dense --lr-emb --model-seed --optimizer --out --schema --seed --storage --threads",
    };

    static IEnumerable<string> CommandNames() => CliApp.CreateCommands().Select(c => c.Name);

    [Test]
    public void EveryCommandIsCovered() =>
        Assert.That(CommandNames(), Is.EquivalentTo(FormerOptions.Keys));

    [Test]
    public void RootHelpListsEveryCommand()
    {
        var r = CliRun.Invoke("--help");
        Assert.That(r.Code, Is.Zero, r.Output);
        foreach (string name in CommandNames()) Assert.That(r.Out, Does.Contain($"  {name} "));
    }

    [TestCaseSource(nameof(CommandNames))]
    public void HelpListsEveryOptionWithItsDefault(string command)
    {
        var r = CliRun.Invoke(command, "--help");
        Assert.That(r.Code, Is.Zero, r.Output);
        Assert.That(r.Err, Is.Empty);
        var defined = CliApp.CreateCommands().Single(c => c.Name == command).Options.Select(o => o.Name).ToList();
        foreach (string option in defined.Concat(FormerOptions[command].Split(' ', StringSplitOptions.RemoveEmptyEntries)))
            Assert.That(r.Out, Does.Match($@"(?m)^\s+(-\w, )?{System.Text.RegularExpressions.Regex.Escape(option)}\b"), $"{command} --help lacks {option}");
    }

    [TestCaseSource(nameof(CommandNames))]
    public void UnknownOptionIsOneLineExitTwo(string command)
    {
        var (message, output) = CliRun.AssertBadInput(command, "--no-such-option", "1");
        Assert.That(message, Does.Contain("--no-such-option"));
        Assert.That(output, Is.Empty, "nothing ran");
    }

    [TestCase("train", "--batch", "0", "--batch: 0 is outside [1, 1048576]")]
    [TestCase("train", "--storage", "fp8", "--storage: 'fp8' is not one of fp32, fp16, int8")]
    [TestCase("eval", "--batch", "x", "--batch: 'x' is not an integer")]
    [TestCase("synth", "--drift", "nan", "--drift: 'nan' is not a number")]
    [TestCase("demo", "--rows", "-3", "--rows: -3 is outside")]
    [TestCase("replay", "--seed", "-1", "--seed: '-1' is not a non-negative integer")]
    [TestCase("pim-plan", "--zipf", "0", "--zipf: 0 is outside [0.01, 10]")]
    [TestCase("pim-serve", "--events", "1", "--events: 1 is outside")]
    [TestCase("topology", "--trainer-share", "1", "--trainer-share: 1 is outside")]
    [TestCase("latency", "--load", "0", "--load: 0 is outside")]
    [TestCase("serve", "--qos", "fast", "--qos: 'fast' is not one of full, throttle, off")]
    [TestCase("loadgen", "--batch", "0", "--batch: 0 is outside")]
    public void BadValueNamesTheOption(string command, string option, string value, string expected)
    {
        var (message, _) = CliRun.AssertBadInput(command, option, value);
        Assert.That(message, Does.Contain(expected));
    }

    [Test]
    public void MissingRequiredOptionAndUnknownCommandAreUsageErrors()
    {
        Assert.That(CliRun.AssertBadInput("train").Message, Does.Contain("--out"));
        Assert.That(CliRun.AssertBadInput("trian").Message, Does.Contain("trian"));
        Assert.That(CliRun.Invoke().Code, Is.EqualTo(2));
    }

    [Test]
    public void SuggestDirectiveCompletesKeywordValues()
    {
        var r = CliRun.Invoke("[suggest:22]", "train --storage ");
        Assert.That(r.Code, Is.Zero, r.Output);
        Assert.That(r.Out.Split('\n', StringSplitOptions.TrimEntries), Does.Contain("fp16").And.Contain("int8"));
    }

    [Test]
    public void AnAdapterBudgetTooSmallForEveryTableIsBadInputNamingTheBudget()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"livedlrm-cli-{Guid.NewGuid():N}");
        try
        {
            // Progress and the per-table notes go to stderr before it; the failure is its last line.
            var r = CliRun.Invoke("replay", "--mode", "live", "--no-plots", "--events", "4000", "--budget", "0.000001", "--out", dir);
            Assert.That(r.Code, Is.EqualTo(2), r.Output);
            var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(lines[^1], Does.StartWith("livedlrm replay: an adapter budget of 0.0001 %").And.Contain("nothing to adapt"), r.Err);
            Assert.That(r.Err, Does.Not.Contain("   at ").And.Not.Contain("internal error"));
            Assert.That(File.Exists(Path.Combine(dir, "report.json")), Is.False, "no report for a replay that did not run");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Test]
    public void EngineErrorsBecomeOneLineWithTheFileNamed()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"livedlrm-cli-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string schema = Path.Combine(dir, "bad.schema.json");
            File.WriteAllText(schema, "{ \"columns\": 3 }");
            string data = Path.Combine(dir, "bad.tsv");
            File.WriteAllText(data, "1\t2\n");
            var (message, _) = CliRun.AssertBadInput("train", "--out", Path.Combine(dir, "ckpt"), "--data", data, "--schema", schema);
            Assert.That(message, Does.Contain("bad.schema.json"));
            Assert.That(Directory.Exists(Path.Combine(dir, "ckpt")), Is.False);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void ErrorMapperSortsFailuresByWhoCanFixThem()
    {
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new LiveDlrm.Data.SchemaException("s.json: columns: expected an array")).ExitCode, Is.EqualTo(2));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new LiveDlrm.Runtime.UserInputException("--out: is the data file")).ExitCode, Is.EqualTo(2));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new IOException("No space left on device")).ExitCode, Is.EqualTo(1));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new OutOfMemoryException()).ExitCode, Is.EqualTo(1));
        var unreachable = LiveDlrm.CommandLine.CliErrors.Map(new System.Net.Http.HttpRequestException("Connection refused (127.0.0.1:1)"));
        Assert.That(unreachable.ExitCode, Is.EqualTo(1));
        Assert.That(unreachable.Message, Does.StartWith("cannot reach the server: Connection refused (127.0.0.1:1)"));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new OperationCanceledException()).ExitCode, Is.EqualTo(3));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Map(new InvalidOperationException("x")).Message, Does.Contain("internal error"));
    }

    [Test]
    public void EscapeKeepsRawBytesOffTheTerminal()
    {
        Assert.That(LiveDlrm.CommandLine.CliErrors.Escape("a\tb\u001b[31m\nc\uFFFDé"), Is.EqualTo("a\\tb\\x1b[31m\\nc\\uFFFDé"));
        Assert.That(LiveDlrm.CommandLine.CliErrors.Escape("plain line"), Is.EqualTo("plain line"));
    }
}
