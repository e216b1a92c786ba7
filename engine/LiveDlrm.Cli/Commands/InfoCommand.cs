using System.CommandLine;
using LiveDlrm.CommandLine;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Runtime;

namespace LiveDlrm.Cli.Commands;

internal sealed class InfoCommand() : CliCommand("info", "what this machine and build give the engine: ISA level, threads, TorchSharp/libtorch, native libraries")
{
    protected override int Run(ParseResult result)
    {
        Console.WriteLine($"os                {RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture})");
        Console.WriteLine($".NET              {RuntimeInformation.FrameworkDescription}");
        Console.WriteLine($"vector widths     512:{Vector512.IsHardwareAccelerated} 256:{Vector256.IsHardwareAccelerated} 128:{Vector128.IsHardwareAccelerated}");
        Console.WriteLine($"processors        {Environment.ProcessorCount}");
        Console.WriteLine($"embedding kernel  {EmbeddingKernels.IsaName(EmbeddingKernels.SelectedIsa)} ({EmbeddingKernels.SelectedIsa}), prefetch distance tuned per table, starting at fp32 {EmbeddingKernels.PrefetchDistanceFor(EmbeddingStorage.Fp32)}, fp16/int8 {EmbeddingKernels.PrefetchDistanceFor(EmbeddingStorage.Fp16)} rows");
        Console.WriteLine($"embedding code    {string.Join(", ", Enum.GetValues<EmbeddingStorage>().Select(s => $"{s} {EmbeddingKernels.ImplementationFor(s).ToString().ToLowerInvariant()}"))} (native: native/kernels)");
        // Reported without starting the shared pool's threads: its size is fixed by the processor count.
        Console.WriteLine($"embedding threads {EmbeddingWorkerPool.SharedThreadCount} workers + the calling thread per lookup");
        Console.WriteLine($"TorchSharp        {TorchRuntime.TorchSharpVersion}");
        string libtorch;
        try { libtorch = TorchRuntime.LibTorchVersion + $" (intra-op threads {TorchSharp.torch.get_num_threads()})"; }
        catch (InvalidOperationException e) { libtorch = "NOT LOADED: " + e.Message; }
        Console.WriteLine($"libtorch          {libtorch}");
        foreach (var lib in NativeLibraries.Known)
            Console.WriteLine($"{lib,-17} {NativeLibraries.LoadedFrom(lib) ?? "unavailable"}");
        return 0;
    }
}
