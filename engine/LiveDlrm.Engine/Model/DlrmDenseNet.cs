using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LiveDlrm.Model;

/// <summary>
/// The dense part of a DLRM in TorchSharp: bottom MLP, dot interaction, top MLP → logit. Submodules are named as
/// in facebookresearch/dlrm (<c>bot_l</c>, <c>top_l</c>: Sequential of Linear + activation, so the Linear layers
/// sit at even indices and the state_dict keys are <c>bot_l.0.weight</c>, <c>bot_l.2.bias</c>, ...).
/// <para>Forward(dense [B, F], pooled [T, B, d]) → logits [B]. The pooled tensor is table-major because the
/// embedding kernels write one table's bags contiguously; the interaction transposes it as a view.</para>
/// <para>Concurrent forwards are safe while no one writes the parameters: libtorch ops only read the weights, grad
/// mode and TorchSharp dispose scopes are per thread.</para>
/// </summary>
internal sealed class DlrmDenseNet : nn.Module<Tensor, Tensor, Tensor>
{
    readonly Sequential? _bottom;   // null for the id-only shape (no dense features)
    readonly Sequential _top;
    readonly Linear[] _bottomLinears;
    readonly Linear[] _topLinears;
    readonly Tensor _pairIndex;   // flat index i·n + j of each interaction pair in Z = T·Tᵀ, in dlrm order
    readonly int _vectors;

    public DlrmConfig Config { get; }
    /// <summary>Inputs of the top MLP's last layer (what a last-layer update's ΔW spans).</summary>
    public int LastLayerInputs => (int)_topLinears[^1].weight!.shape[1];
    public IReadOnlyList<Linear> BottomLayers => _bottomLinears;
    public IReadOnlyList<Linear> TopLayers => _topLinears;

    public DlrmDenseNet(DlrmConfig config) : base("DlrmDenseNet")
    {
        Config = config ?? throw new ArgumentNullException(nameof(config));
        if (config.HasBottom)
        {
            (_bottom, _bottomLinears) = Mlp(config.DenseFeatures, config.BottomMlp, reluAfterLast: true);
            register_module("bot_l", _bottom);
        }
        else _bottomLinears = [];
        (_top, _topLinears) = Mlp(config.TopInput, config.TopMlp, reluAfterLast: false);
        register_module("top_l", _top);
        _vectors = config.InteractionVectors;
        _pairIndex = tensor(config.PairOrder().Select(p => (long)(p.I * _vectors + p.J)).ToArray()).DetachFromDisposeScope();
    }

    static (Sequential, Linear[]) Mlp(int input, IReadOnlyList<int> widths, bool reluAfterLast)
    {
        var modules = new List<nn.Module<Tensor, Tensor>>();
        var linears = new Linear[widths.Count];
        int inFeatures = input;
        for (int i = 0; i < widths.Count; i++)
        {
            linears[i] = nn.Linear(inFeatures, widths[i]);
            modules.Add(linears[i]);
            if (i < widths.Count - 1 || reluAfterLast) modules.Add(nn.ReLU());
            inFeatures = widths[i];
        }
        return (nn.Sequential(modules), linears);
    }

    /// <summary>Bottom MLP output [B, d] ([B, 0] for the id-only shape).</summary>
    public Tensor Bottom(Tensor dense) => _bottom is null ? empty(dense.shape[0], 0L) : _bottom.forward(dense);

    /// <summary>An additive update of the top MLP's last layer that every forward of this net applies (the live
    /// model's last-layer adapter), or null. Owning it here keeps one scoring path: Predict, serving and the
    /// training forward all see <c>h·(W + ΔW)ᵀ + b + Δb</c>. Set before serving starts.</summary>
    public ILastLayerDelta? LastLayerDelta { get; set; }

    public override Tensor forward(Tensor dense, Tensor pooled) => Forward(dense, pooled, null, out _, LastLayerDelta?.Tensors());

    /// <summary>The same forward, also returning what a backward through the frozen dense part needs without
    /// re-running it: the bottom-MLP output [B, d] ([B, 0] without a bottom MLP) and each top hidden layer's output after its ReLU
    /// (<paramref name="topHidden"/>[l] is [B, TopMlp[l]], l &lt; TopMlp.Count − 1). Used by the online trainer's
    /// data reuse (the serving forward keeps them with the request).</summary>
    public Tensor ForwardKeepingActivations(Tensor dense, Tensor pooled, out Tensor bottom, out Tensor[] topHidden)
    {
        topHidden = new Tensor[_topLinears.Length - 1];
        return Forward(dense, pooled, topHidden, out bottom, LastLayerDelta?.Tensors());
    }

    /// <summary><see cref="ForwardKeepingActivations(Tensor, Tensor, out Tensor, out Tensor[])"/> with an explicit
    /// last-layer update (null = none) instead of <see cref="LastLayerDelta"/>'s.</summary>
    public Tensor ForwardKeepingActivations(Tensor dense, Tensor pooled, out Tensor bottom, out Tensor[] topHidden, (Tensor Weight, Tensor Bias)? delta)
    {
        topHidden = new Tensor[_topLinears.Length - 1];
        return Forward(dense, pooled, topHidden, out bottom, delta);
    }

    /// <summary>The forward with an explicit last-layer update (ΔW [inputs], Δb [1]) instead of
    /// <see cref="LastLayerDelta"/>'s: the online trainer's autograd path passes leaves that require grad.</summary>
    public Tensor ForwardWithDelta(Tensor dense, Tensor pooled, (Tensor Weight, Tensor Bias)? delta) =>
        Forward(dense, pooled, null, out _, delta);

    Tensor Forward(Tensor dense, Tensor pooled, Tensor[]? topHidden, out Tensor bottom, (Tensor Weight, Tensor Bias)? delta)
    {
        long batch = dense.shape[0];
        Tensor vectors, r;
        if (_bottom is not null)
        {
            var x = _bottom.forward(dense);                                  // [B, d]
            bottom = x;
            vectors = cat([x.unsqueeze(0), pooled], 0).transpose(0, 1);     // [B, n, d]
        }
        else
        {
            bottom = empty(batch, 0L);
            vectors = pooled.transpose(0, 1);                                // [B, T, d]
        }
        var z = bmm(vectors, vectors.transpose(1, 2));                      // [B, n, n]
        var pairs = z.reshape(batch, (long)_vectors * _vectors).index_select(1, _pairIndex);
        r = _bottom is not null ? cat([bottom, pairs], 1) : pairs;          // [B, d + pairs] / [B, pairs]
        // Layer by layer, as the Sequential does (Linear, ReLU between layers, none after the last), so every
        // caller runs the same ops whether or not it keeps the activations or adds a last-layer update.
        var h = r;
        var lastHidden = r;
        for (int l = 0; l < _topLinears.Length; l++)
        {
            lastHidden = h;
            h = _topLinears[l].forward(h);
            if (l < _topLinears.Length - 1)
            {
                h = nn.functional.relu(h);
                if (topHidden is not null) topHidden[l] = h;
            }
        }
        if (delta is { } dw) h = h + lastHidden.matmul(dw.Weight.unsqueeze(1)) + dw.Bias;
        return h.reshape(batch);
    }
    /// <summary>facebookresearch/dlrm initialisation from <paramref name="random"/>: W ~ N(0, √(2/(in+out))),
    /// b ~ N(0, √(1/out)). Deterministic by seed and independent of libtorch's global generator.</summary>
    public void Initialise(Random random)
    {
        using var _ = no_grad();
        foreach (var lin in _bottomLinears.Concat(_topLinears))
        {
            int outF = (int)lin.weight!.shape[0], inF = (int)lin.weight.shape[1];
            var w = new float[outF * inF];
            double sw = Math.Sqrt(2.0 / (inF + outF)), sb = Math.Sqrt(1.0 / outF);
            for (int i = 0; i < w.Length; i++) w[i] = (float)(Gaussian(random) * sw);
            var b = new float[outF];
            for (int i = 0; i < b.Length; i++) b[i] = (float)(Gaussian(random) * sb);
            using var wt = tensor(w).reshape(outF, inF);
            using var bt = tensor(b);
            lin.weight.copy_(wt);
            lin.bias!.copy_(bt);
        }
    }

    static double Gaussian(Random r)
    {
        double u1 = 1.0 - r.NextDouble(), u2 = r.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Named parameters in state_dict order (bot_l.0.weight, bot_l.0.bias, ..., top_l.N.bias).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters() => named_parameters().ToList();

    /// <summary>Sets requires_grad on every dense parameter (false = frozen: autograd still reaches the pooled input).</summary>
    public void SetTrainable(bool trainable)
    {
        foreach (var p in parameters()) p.requires_grad = trainable;
    }

    /// <summary>Copies every parameter of <paramref name="source"/> (same config) into this net.</summary>
    public void CopyFrom(DlrmDenseNet source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!source.Config.SameShape(Config)) throw new ArgumentException("dense nets of different model configs", nameof(source));
        using var _ = no_grad();
        var mine = NamedParameters();
        var theirs = source.NamedParameters();
        for (int i = 0; i < mine.Count; i++) mine[i].Parameter.copy_(theirs[i].Parameter);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _pairIndex.Dispose();
        base.Dispose(disposing);
    }
}
