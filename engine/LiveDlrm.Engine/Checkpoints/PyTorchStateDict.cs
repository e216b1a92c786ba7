using System.Collections;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace LiveDlrm.Checkpoints;

/// <summary>
/// Import / export of facebookresearch/dlrm's <c>DLRM_Net</c> weights in PyTorch's <c>torch.save</c> format:
/// <c>emb_l.N.weight</c> (one nn.EmbeddingBag per table, rows × d), <c>bot_l.K.weight/bias</c> and
/// <c>top_l.K.weight/bias</c> where bot_l/top_l are nn.Sequential of Linear + activation, so the Linear layers sit at
/// even K (0, 2, 4, ...). Reads both a bare state_dict and the dict <c>dlrm_s_pytorch.py --save-model</c> writes
/// (<c>state_dict</c> inside, beside <c>epoch</c>, <c>opt_state_dict</c>, ...). A file without <c>bot_l</c> is the
/// id-only shape (no dense features, interaction over the embeddings alone).
/// <para>The architecture is inferred from the tensor shapes and checked for consistency (layer chaining, one
/// embedding dim, the top MLP's input width = d + interaction pairs); what the file cannot say (table names, pooling,
/// storage) comes from an optional expected config, whose shape must then match the file's.</para>
/// The zip pickle is read and written through TorchSharp.PyBridge.
/// </summary>
internal static class PyTorchStateDict
{
    /// <summary>Loads <paramref name="file"/> into a new model. With <paramref name="expected"/>, the file's
    /// architecture must equal its shape (a mismatch names the first difference) and its table names, pooling and
    /// storage are used; without, tables are <c>emb_N</c>, sum-pooled, fp32.</summary>
    public static DlrmModel Import(string file, DlrmConfig? expected = null, IEmbeddingBackend? backend = null, bool ownsBackend = true)
    {
        TorchRuntime.EnsureInitialised();
        string full = Path.GetFullPath(file);
        var loaded = ReadStateDict(full);
        var tables = new List<EmbeddingTable>();
        DlrmDenseNet? dense = null;
        try
        {
            var config = InferConfig(full, loaded.ToDictionary(kv => kv.Key, kv => kv.Value.shape), expected);
            foreach (var (name, t) in loaded)
                if (t.dtype != ScalarType.Float32) throw new CheckpointException(full, $"'{name}' is {t.dtype}, expected float32");
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

    /// <summary>The architecture of <paramref name="file"/> (tables <c>emb_N</c>, sum pooling, fp32).</summary>
    public static DlrmConfig ReadArchitecture(string file)
    {
        TorchRuntime.EnsureInitialised();
        string full = Path.GetFullPath(file);
        var loaded = ReadStateDict(full);
        try { return InferConfig(full, loaded.ToDictionary(kv => kv.Key, kv => kv.Value.shape), null); }
        finally { foreach (var t in loaded.Values) t.Dispose(); }
    }

    /// <summary>The weights of a torch.save file: a bare state_dict, or the <c>state_dict</c> entry of
    /// dlrm_s_pytorch.py's checkpoint dict (the other entries — epoch, optimizer state — are not needed).</summary>
    static Dictionary<string, Tensor> ReadStateDict(string full)
    {
        if (!File.Exists(full)) throw new CheckpointException(full, "file does not exist");
        Hashtable root;
        try { root = PyTorchUnpickler.UnpickleStateDict(full); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new CheckpointException(full, $"not a PyTorch torch.save file ({e.Message})", e);
        }
        var weights = root["state_dict"] is IDictionary inner ? inner : root;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in weights)
            if (entry.Key is string key && entry.Value is Tensor t) result[key] = t;
        // Tensors outside the weights (optimizer state) are released now; the unpickler allocated them.
        DisposeTensorsExcept(root, result.Values.ToHashSet());
        if (result.Count == 0)
            throw new CheckpointException(full, "holds no tensors at the top level nor under 'state_dict' (expected a DLRM_Net state_dict)");
        return result;
    }

    static void DisposeTensorsExcept(object? node, HashSet<Tensor> keep)
    {
        switch (node)
        {
            case Tensor t when !keep.Contains(t): t.Dispose(); break;
            case IDictionary d: foreach (DictionaryEntry e in d) DisposeTensorsExcept(e.Value, keep); break;
            case IEnumerable list and not string: foreach (var x in list) DisposeTensorsExcept(x, keep); break;
        }
    }

    /// <summary>Infers the DLRM architecture from state_dict key shapes and checks it; with
    /// <paramref name="expected"/>, also that the shapes are its shapes. Messages name <paramref name="file"/>.</summary>
    public static DlrmConfig InferConfig(string file, IReadOnlyDictionary<string, long[]> shapes, DlrmConfig? expected)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        var embeddings = new List<long[]>();
        while (shapes.TryGetValue($"emb_l.{embeddings.Count}.weight", out var s)) embeddings.Add(s);
        if (embeddings.Count == 0) throw new CheckpointException(file, "has no 'emb_l.0.weight': not a DLRM_Net state_dict");
        var bottom = Layers(file, shapes, "bot_l");
        var top = Layers(file, shapes, "top_l");
        int known = embeddings.Count + 2 * (bottom.Count + top.Count);
        if (shapes.Count != known)
        {
            var layerKeys = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < embeddings.Count; i++) layerKeys.Add($"emb_l.{i}.weight");
            foreach (var (prefix, list) in new[] { ("bot_l", bottom), ("top_l", top) })
                for (int k = 0; k < list.Count; k++) { layerKeys.Add($"{prefix}.{2 * k}.weight"); layerKeys.Add($"{prefix}.{2 * k}.bias"); }
            string extra = shapes.Keys.First(k => !layerKeys.Contains(k));
            throw new CheckpointException(file, $"unexpected key '{extra}' (a DLRM_Net has emb_l.N.weight and Linear layers at even indices of bot_l / top_l)");
        }
        for (int i = 0; i < embeddings.Count; i++)
            if (embeddings[i].Length != 2 || embeddings[i][0] < 1 || embeddings[i][1] < 1)
                throw new CheckpointException(file, $"'emb_l.{i}.weight' has shape [{string.Join(", ", embeddings[i])}], expected [rows, dim]");
        long d = embeddings[0][1];
        for (int i = 1; i < embeddings.Count; i++)
            if (embeddings[i][1] != d)
                throw new CheckpointException(file, $"'emb_l.{i}.weight' has dim {embeddings[i][1]}, 'emb_l.0.weight' has {d} (the dot interaction needs one dim)");
        if (top.Count == 0) throw new CheckpointException(file, "has no 'top_l.0.weight': not a DLRM_Net state_dict");
        int denseFeatures = bottom.Count == 0 ? 0 : (int)bottom[0].In;
        CheckChain(file, "bot_l", bottom);
        CheckChain(file, "top_l", top);
        if (bottom.Count > 0 && bottom[^1].Out != d)
            throw new CheckpointException(file, $"'bot_l.{2 * (bottom.Count - 1)}.weight' outputs {bottom[^1].Out}, the embedding dim is {d} (they must match)");
        if (top[^1].Out != 1)
            throw new CheckpointException(file, $"'top_l.{2 * (top.Count - 1)}.weight' outputs {top[^1].Out}, the last top layer must give one logit");
        int vectors = embeddings.Count + (bottom.Count > 0 ? 1 : 0);
        long carried = bottom.Count > 0 ? d : 0;
        long plain = carried + vectors * (vectors - 1) / 2, self = carried + vectors * (vectors + 1) / 2;
        if (top[0].In != plain && top[0].In != self)
            throw new CheckpointException(file, $"'top_l.0.weight' takes {top[0].In} inputs; {embeddings.Count} tables of dim {d}{(bottom.Count > 0 ? " and a bottom MLP" : ", no bottom MLP")} give {plain} (or {self} with self-interaction)");
        var tables = new DlrmTableConfig[embeddings.Count];
        for (int i = 0; i < tables.Length; i++)
        {
            var e = expected is not null && i < expected.Tables.Count ? expected.Tables[i] : null;
            tables[i] = new DlrmTableConfig(e?.Name ?? $"emb_{i}", embeddings[i][0], (int)d, e?.Pooling ?? PoolingMode.Sum, e?.Storage ?? EmbeddingStorage.Fp32);
        }
        var config = new DlrmConfig(denseFeatures, bottom.Select(l => (int)l.Out).ToArray(), top.Select(l => (int)l.Out).ToArray(), tables,
                                    selfInteraction: top[0].In == self && self != plain);
        if (expected is not null)
        {
            string? difference = FirstDifference(config, expected);
            if (difference is not null) throw new CheckpointException(file, $"does not match the expected architecture: {difference}");
        }
        return config;
    }

    readonly record struct Layer(long In, long Out);

    static List<Layer> Layers(string file, IReadOnlyDictionary<string, long[]> shapes, string prefix)
    {
        var layers = new List<Layer>();
        for (int k = 0; shapes.TryGetValue($"{prefix}.{k}.weight", out var w); k += 2)
        {
            if (w.Length != 2) throw new CheckpointException(file, $"'{prefix}.{k}.weight' has shape [{string.Join(", ", w)}], a Linear weight is [out, in]");
            if (!shapes.TryGetValue($"{prefix}.{k}.bias", out var b)) throw new CheckpointException(file, $"'{prefix}.{k}.bias' is missing");
            if (b.Length != 1 || b[0] != w[0]) throw new CheckpointException(file, $"'{prefix}.{k}.bias' has shape [{string.Join(", ", b)}], its weight needs [{w[0]}]");
            layers.Add(new Layer(w[1], w[0]));
        }
        return layers;
    }

    static void CheckChain(string file, string prefix, List<Layer> layers)
    {
        for (int k = 1; k < layers.Count; k++)
            if (layers[k].In != layers[k - 1].Out)
                throw new CheckpointException(file, $"'{prefix}.{2 * k}.weight' takes {layers[k].In} inputs, '{prefix}.{2 * (k - 1)}.weight' outputs {layers[k - 1].Out}");
    }

    static string? FirstDifference(DlrmConfig file, DlrmConfig expected)
    {
        if (file.Tables.Count != expected.Tables.Count) return $"the file has {file.Tables.Count} tables, expected {expected.Tables.Count}";
        for (int i = 0; i < file.Tables.Count; i++)
        {
            if (file.Tables[i].Rows != expected.Tables[i].Rows) return $"table {i} ('{expected.Tables[i].Name}') has {file.Tables[i].Rows} rows in the file, expected {expected.Tables[i].Rows}";
            if (file.Tables[i].Dim != expected.Tables[i].Dim) return $"table {i} ('{expected.Tables[i].Name}') has dim {file.Tables[i].Dim} in the file, expected {expected.Tables[i].Dim}";
        }
        if (file.DenseFeatures != expected.DenseFeatures) return $"the file's bottom MLP takes {file.DenseFeatures} dense features, expected {expected.DenseFeatures}";
        if (!file.BottomMlp.SequenceEqual(expected.BottomMlp)) return $"the file's bottom MLP is [{string.Join(", ", file.BottomMlp)}], expected [{string.Join(", ", expected.BottomMlp)}]";
        if (!file.TopMlp.SequenceEqual(expected.TopMlp)) return $"the file's top MLP is [{string.Join(", ", file.TopMlp)}], expected [{string.Join(", ", expected.TopMlp)}]";
        if (file.SelfInteraction != expected.SelfInteraction) return $"the file's interaction is {(file.SelfInteraction ? "with" : "without")} self-pairs, expected {(expected.SelfInteraction ? "with" : "without")}";
        return null;
    }

    /// <summary>Writes <paramref name="model"/> as a DLRM_Net state_dict (tables dequantised to fp32) that
    /// <c>torch.load</c> reads and <c>DLRM_Net.load_state_dict</c> accepts; with <paramref name="wrapped"/>, inside
    /// the dict dlrm_s_pytorch.py's <c>--load-model</c> reads (<c>state_dict</c>, <c>epoch</c>, ...). The file
    /// appears complete or not at all.</summary>
    public static unsafe void Export(DlrmModel model, string file, bool wrapped = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        string full = Path.GetFullPath(file);
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
            CopyByName(model.Dense, layout, full);
        }
        string temp = $"{full}.tmp-{Guid.NewGuid():N}";
        try
        {
            if (!wrapped) layout.save_py(temp);
            else
            {
                var stateDict = new Hashtable();
                foreach (var (name, p) in layout.named_parameters()) stateDict[name] = p;
                // The entries dlrm_s_pytorch.py --load-model reads besides the weights.
                var root = new Hashtable
                {
                    ["state_dict"] = stateDict, ["epoch"] = 0, ["nepochs"] = 1, ["nbatches"] = 0, ["nbatches_test"] = 0,
                    ["iter"] = 0, ["train_acc"] = 0.0, ["train_loss"] = 0.0, ["test_acc"] = 0.0, ["test_loss"] = 0.0,
                    ["opt_state_dict"] = new Hashtable { ["state"] = new Hashtable(), ["param_groups"] = new ArrayList() },
                };
                using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write);
                PyTorchPickler.PickleStateDict(stream, root, leaveOpen: true);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally { if (File.Exists(temp)) File.Delete(temp); }
    }

    static void CopyByName(nn.Module source, nn.Module destination, string file)
    {
        using var _ = no_grad();
        var from = source.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, param) in destination.named_parameters())
        {
            if (name.StartsWith("emb_l.", StringComparison.Ordinal)) continue;
            if (!from.TryGetValue(name, out var value)) throw new CheckpointException(file, $"'{name}' is missing");
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

    /// <summary>DLRM_Net's parameter layout: emb_l (ModuleList), bot_l (absent without dense features) and top_l
    /// (Sequential, Linear at even indices).</summary>
    sealed class DlrmNetLayout : nn.Module
    {
        public EmbeddingWeight[] Embeddings { get; }

        public DlrmNetLayout(DlrmConfig config) : base("DLRM_Net")
        {
            Embeddings = config.Tables.Select(t => new EmbeddingWeight(t.Rows, t.Dim)).ToArray();
            register_module("emb_l", nn.ModuleList(Embeddings));
            if (config.BottomMlp.Count > 0) register_module("bot_l", Mlp(config.DenseFeatures, config.BottomMlp, last: nn.ReLU()));
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
