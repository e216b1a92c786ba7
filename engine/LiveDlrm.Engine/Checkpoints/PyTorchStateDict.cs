using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace LiveDlrm.Checkpoints;

/// <summary>
/// Import / export of a PyTorch DLRM <c>state_dict</c> as written by <c>torch.save(dlrm.state_dict(), f)</c> for
/// facebookresearch/dlrm's <c>DLRM_Net</c>: <c>emb_l.N.weight</c> (one nn.EmbeddingBag per table, rows × d),
/// <c>bot_l.K.weight/bias</c> and <c>top_l.K.weight/bias</c> where bot_l/top_l are nn.Sequential of Linear +
/// activation, so the Linear layers sit at even K (0, 2, 4, ...). The file format is PyTorch's zip pickle, read and
/// written through TorchSharp.PyBridge (its <c>PyTorchUnpickler</c> to read, <c>save_py</c> on a module shaped like DLRM_Net to write).
/// The model shape must be given as a <see cref="DlrmConfig"/> (a state_dict carries shapes, not the pooling,
/// storage or interaction); every key must be present with the config's shape.
/// </summary>
public static class PyTorchStateDict
{
    /// <summary>Loads <paramref name="file"/> into a new model of <paramref name="config"/>; tables are quantised to
    /// the config's storage.</summary>
    public static DlrmModel Import(string file, DlrmConfig config, IEmbeddingBackend? backend = null, bool ownsBackend = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        TorchRuntime.EnsureInitialised();
        string full = Path.GetFullPath(file);
        if (!File.Exists(full)) throw new CheckpointException(full, "state_dict file does not exist");
        System.Collections.Hashtable stateDict;
        try { stateDict = PyTorchUnpickler.UnpickleStateDict(full); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new CheckpointException(full, $"not a PyTorch state_dict ({e.Message})", e);
        }
        var loaded = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in stateDict)
            if (entry.Key is string key && entry.Value is Tensor t) loaded[key] = t;
        var tables = new List<EmbeddingTable>();
        DlrmDenseNet? dense = null;
        try
        {
            // The expected keys and shapes are those of a DLRM_Net built for the config (a module, so the names are
            // exactly what PyTorch's state_dict() produces for that layout).
            using (var layout = new DlrmNetLayout(config))
            {
                var expected = layout.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape.ToArray());
                foreach (var key in loaded.Keys)
                    if (!expected.ContainsKey(key)) throw new CheckpointException(full, $"unexpected key '{key}' for the model config");
                foreach (var (name, shape) in expected)
                {
                    if (!loaded.TryGetValue(name, out var t)) throw new CheckpointException(full, $"'{name}' is missing");
                    if (!t.shape.SequenceEqual(shape))
                        throw new CheckpointException(full, $"'{name}' has shape [{string.Join(", ", t.shape)}], the model config needs [{string.Join(", ", shape)}]");
                    if (t.dtype != ScalarType.Float32) throw new CheckpointException(full, $"'{name}' is {t.dtype}, expected float32");
                }
            }
            for (int i = 0; i < config.Tables.Count; i++)
                tables.Add(EmbeddingTable.FromTensor(config.Tables[i].Name, loaded[$"emb_l.{i}.weight"], config.Tables[i].Storage));
            dense = new DlrmDenseNet(config);
            using (no_grad())
                foreach (var (name, param) in dense.named_parameters()) param.copy_(loaded[name]);
            return new DlrmModel(config, tables, dense, backend, ownsBackend);
        }
        catch
        {
            foreach (var t in tables) t.Dispose();
            dense?.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    /// <summary>Writes <paramref name="model"/> as a DLRM_Net state_dict (tables dequantised to fp32) that
    /// <c>torch.load</c> reads and <c>DLRM_Net.load_state_dict</c> accepts.</summary>
    public static unsafe void Export(DlrmModel model, string file)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var layout = new DlrmNetLayout(model.Config);
        using (no_grad())
        {
            for (int i = 0; i < model.Tables.Count; i++)
            {
                var table = model.Tables[i];
                var weight = layout.Embeddings[i].Weight;
                float* p = TensorMemory.Pointer(weight);
                for (long r = 0; r < table.Rows; r++) table.ReadRow(r, new Span<float>(p + r * table.Dim, table.Dim));
            }
            CopyByName(model.Dense, layout, file);
        }
        string full = Path.GetFullPath(file);
        string temp = full + ".tmp";
        layout.save_py(temp);
        File.Move(temp, full, overwrite: true);
    }

    static void CopyByName(nn.Module source, nn.Module destination, string file)
    {
        using var _ = no_grad();
        var from = source.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, param) in destination.named_parameters())
        {
            if (name.StartsWith("emb_l.", StringComparison.Ordinal)) continue;
            if (!from.TryGetValue(name, out var value)) throw new CheckpointException(file, $"'{name}' is missing");
            if (!value.shape.SequenceEqual(param.shape))
                throw new CheckpointException(file, $"'{name}' has shape [{string.Join(", ", value.shape)}], the model config needs [{string.Join(", ", param.shape)}]");
            param.copy_(value);
        }
    }

    /// <summary>A parameter-only stand-in for one nn.EmbeddingBag (state_dict key "weight").</summary>
    sealed class EmbeddingWeight : nn.Module
    {
        public Parameter Weight { get; }

        public EmbeddingWeight(long rows, int dim) : base("EmbeddingBag")
        {
            Weight = new Parameter(empty(rows, dim), requires_grad: false);
            register_parameter("weight", Weight);
        }
    }

    /// <summary>DLRM_Net's parameter layout: emb_l (ModuleList), bot_l and top_l (Sequential, Linear at even indices).</summary>
    sealed class DlrmNetLayout : nn.Module
    {
        public EmbeddingWeight[] Embeddings { get; }

        public DlrmNetLayout(DlrmConfig config) : base("DLRM_Net")
        {
            Embeddings = config.Tables.Select(t => new EmbeddingWeight(t.Rows, t.Dim)).ToArray();
            register_module("emb_l", nn.ModuleList(Embeddings));
            register_module("bot_l", Mlp(config.DenseFeatures, config.BottomMlp, last: nn.ReLU()));
            register_module("top_l", Mlp(config.TopInput, config.TopMlp, last: nn.Sigmoid()));
        }

        static Sequential Mlp(int input, IReadOnlyList<int> widths, nn.Module<Tensor, Tensor> last)
        {
            var modules = new List<nn.Module<Tensor, Tensor>>();
            int inFeatures = input;
            for (int i = 0; i < widths.Count; i++)
            {
                modules.Add(nn.Linear(inFeatures, widths[i]));
                modules.Add(i < widths.Count - 1 ? nn.ReLU() : last);
                inFeatures = widths[i];
            }
            return nn.Sequential(modules);
        }
    }
}
