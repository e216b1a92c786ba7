using System.CommandLine;
using LiveDlrm.Checkpoints;
using LiveDlrm.CommandLine;
using LiveDlrm.Runtime;

namespace LiveDlrm.Cli.Commands;

internal sealed class ExportPyTorchCommand : CliCommand
{
    readonly Option<string?> _model = Opt.Text("--model", "checkpoint directory", helpName: "DIR", required: true);
    readonly Option<string?> _out = Opt.Text("--out", "torch.save file to write (must not exist)", helpName: "FILE.pt", required: true);
    readonly Option<string> _format = Opt.Choice("--format", "save-model = the dict dlrm_s_pytorch.py --load-model reads (state_dict inside); state-dict = the bare DLRM_Net state_dict",
        "save-model", "save-model", "state-dict");

    public ExportPyTorchCommand() : base("export-pytorch", "write a checkpoint as a PyTorch DLRM checkpoint (facebookresearch/dlrm layout, tables in fp32)")
    {
        Add(_model); Add(_out); Add(_format);
    }

    protected override int Run(ParseResult result)
    {
        string dir = result.GetValue(_model)!;
        string output = result.GetValue(_out)!;
        if (File.Exists(output) || Directory.Exists(output)) throw new UsageException($"--out: '{output}' exists; remove it or choose another path");
        string? parent = Path.GetDirectoryName(Path.GetFullPath(output));
        if (parent is not null && !Directory.Exists(parent)) throw new UsageException($"--out: directory '{parent}' does not exist");
        TorchRuntime.EnsureInitialised();
        using var model = Checkpoint.Load(dir);
        PyTorchStateDict.Export(model, output, wrapped: result.GetValue(_format) == "save-model");
        Console.WriteLine($"wrote    {Path.GetFullPath(output)} ({new FileInfo(output).Length / 1e6:F1} MB, {model.Config.Tables.Count} tables, " +
                          $"{(model.Config.HasBottom ? $"bottom [{string.Join(", ", model.Config.BottomMlp)}]" : "no bottom MLP")}, top [{string.Join(", ", model.Config.TopMlp)}])");
        return 0;
    }
}
