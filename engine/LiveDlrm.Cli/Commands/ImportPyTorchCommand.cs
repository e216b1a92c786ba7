using System.CommandLine;
using System.Globalization;
using LiveDlrm.Checkpoints;
using LiveDlrm.CommandLine;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;

namespace LiveDlrm.Cli.Commands;

internal sealed class ImportPyTorchCommand : CliCommand
{
    // Takes every loose token, so an unknown option is reported by name rather than the token after it.
    readonly Argument<string[]> _file = new("FILE") { Description = "torch.save file: dlrm_s_pytorch.py --save-model's dict, or a bare DLRM_Net state_dict", Arity = ArgumentArity.OneOrMore };
    readonly Option<string?> _out = Opt.Text("--out", "checkpoint directory to write (replaced atomically if it is a checkpoint)", helpName: "DIR", required: true);
    readonly Option<string?> _arch = Opt.Text("--arch", "expected architecture: a model config JSON (also gives table names, pooling, storage) or dlrm_s_pytorch.py's --arch-mlp-bot:--arch-mlp-top, e.g. 13-512-256-64-16:512-256-1", helpName: "CONFIG|BOT:TOP");
    readonly Option<string> _storage = Opt.Choice("--storage", "table storage when --arch is not a config", "fp32", "fp32", "fp16", "int8");

    public ImportPyTorchCommand() : base("import-pytorch", "convert a PyTorch DLRM checkpoint (facebookresearch/dlrm layout) into a LiveDlrm checkpoint")
    {
        _file.Validators.Add(r =>
        {
            if (r.Tokens.FirstOrDefault(t => t.Value.StartsWith('-')) is { } option) r.AddError($"Unrecognized option '{option.Value}'");
            else if (r.Tokens.Count > 1) r.AddError($"one FILE expected, got {r.Tokens.Count}: {string.Join(" ", r.Tokens.Select(t => t.Value))}");
        });
        Arguments.Add(_file);
        Add(_out); Add(_arch); Add(_storage);
    }

    protected override int Run(ParseResult result)
    {
        string file = result.GetValue(_file)![0];
        string output = result.GetValue(_out)!;
        string? arch = result.GetValue(_arch);
        if (!File.Exists(file)) throw new UsageException(Directory.Exists(file) ? $"'{file}' is a directory, not a torch.save file" : $"file '{file}' does not exist");
        var storage = result.GetValue(_storage) switch { "fp16" => EmbeddingStorage.Fp16, "int8" => EmbeddingStorage.Int8Rowwise, _ => EmbeddingStorage.Fp32 };
        bool archIsConfig = arch is not null && File.Exists(arch);
        if (archIsConfig && Given(result, _storage)) throw new UsageException("--storage applies without a config; set storage per table in the --arch config");

        TorchRuntime.EnsureInitialised();
        var inferred = PyTorchStateDict.ReadArchitecture(file);
        DlrmConfig expected;
        if (archIsConfig)
        {
            try { expected = DlrmConfig.Load(arch!); }
            catch (DlrmConfigException e) { throw new UsageException($"--arch: {e.Message}"); }
        }
        else
        {
            if (arch is not null) CheckMlps(file, inferred, arch);
            expected = new DlrmConfig(inferred.DenseFeatures, inferred.BottomMlp, inferred.TopMlp,
                inferred.Tables.Select(t => t with { Storage = storage }).ToArray(), inferred.SelfInteraction);
        }
        using var model = PyTorchStateDict.Import(file, expected);
        var c = model.Config;
        Console.WriteLine($"read     {Path.GetFullPath(file)}");
        Console.WriteLine($"model    {c.Tables.Count} tables ({c.TableBytes / 1e6:F1} MB, rows {string.Join(", ", c.Tables.Select(t => t.Rows))}), d = {c.Dim}, " +
                          $"{(c.HasBottom ? $"{c.DenseFeatures} dense, bottom [{string.Join(", ", c.BottomMlp)}]" : "no dense features")}, top [{string.Join(", ", c.TopMlp)}]" +
                          $"{(c.SelfInteraction ? ", self-interaction" : "")}");
        Checkpoint.Save(model, output, new Dictionary<string, string> { ["data"] = "imported from " + Path.GetFullPath(file) });
        Console.WriteLine($"wrote    {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary>dlrm_s_pytorch.py's strings: --arch-mlp-bot includes the dense input width, --arch-mlp-top omits
    /// its input (the interaction width).</summary>
    static void CheckMlps(string file, DlrmConfig inferred, string arch)
    {
        var parts = arch.Split(':');
        int[] Widths(string s, string what)
        {
            if (s.Length == 0) return [];
            var w = s.Split('-').Select(x => int.TryParse(x, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : -1).ToArray();
            return w.All(v => v > 0) ? w : throw new UsageException($"--arch: '{s}' is not a {what} like 13-512-256-64-16");
        }
        if (parts.Length != 2) throw new UsageException($"--arch: '{arch}' is neither a config file nor BOT:TOP (e.g. 13-512-256-64-16:512-256-1)");
        var bottom = Widths(parts[0], "bottom MLP");
        var top = Widths(parts[1], "top MLP");
        int[] fileBottom = inferred.HasBottom ? [inferred.DenseFeatures, .. inferred.BottomMlp] : [];
        if (!bottom.SequenceEqual(fileBottom))
            throw new CheckpointException(file, $"does not match --arch: the file's bottom MLP is {(fileBottom.Length == 0 ? "absent (no dense features)" : string.Join("-", fileBottom))}, --arch says {(bottom.Length == 0 ? "none" : string.Join("-", bottom))}");
        if (!top.SequenceEqual(inferred.TopMlp))
            throw new CheckpointException(file, $"does not match --arch: the file's top MLP is {string.Join("-", inferred.TopMlp)}, --arch says {string.Join("-", top)}");
    }
}
