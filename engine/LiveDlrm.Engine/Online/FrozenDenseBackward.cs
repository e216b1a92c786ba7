using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveDlrm.Model;
using static TorchSharp.torch;

namespace LiveDlrm.Online;

/// <summary>
/// The backward pass through a frozen DLRM dense part, in C#, from the activations the serving forward kept
/// (<see cref="ServedEvent.Activations"/>, <see cref="ServedEvent.Pooled"/>) — the trainer's data reuse: no dense
/// forward is re-run and no autograd graph is built. For BCE-with-logits (mean over the batch) it gives
/// dL/d(pooled) per table, and dL/d of the last layer's weight and bias (for <see cref="LastLayerAdapter"/>).
/// <para>Math, per event: z = h·w_eff + b_eff (h = last hidden output, w_eff = W_last + ΔW), g = (σ(z) − y)/B;
/// through the top MLP g ← g·W_l, masked by ReLU'(h_{l−1}) (h &gt; 0, as libtorch's threshold backward); the
/// top input's interaction part gives, for pair p = (i, j) of Z = V·Vᵀ, dV_i += g_p·V_j and dV_j += g_p·V_i
/// (2·g_p·V_i when i = j); dV of the bottom-MLP vector V_0 is not needed (the bottom MLP is frozen and does not
/// depend on the embeddings). The weights are copied once at construction: the dense part must stay frozen.</para>
/// <para>Not thread-safe: it keeps per-call scratch, so one caller at a time (the trainer thread).</para>
/// </summary>
internal sealed class FrozenDenseBackward
{
    readonly float[][] _weights;   // top layer l: [out × inPad] row-major, each row zero-padded to whole vectors;
                                   // layer 0 holds only the columns of the needed interaction pairs
    readonly int[] _inPad;         // those row widths, multiples of Vector<float>.Count
    readonly int[] _pairColumns;   // interaction pairs whose gradient reaches a needed table, in pair order
    readonly bool[] _neededVector; // per interaction vector (DlrmConfig.TableVector): the bottom MLP's never
    readonly float[] _lastWeight;  // the last layer's single output row
    readonly float _lastBias;
    readonly int[] _widths;        // top layer output widths
    readonly (int I, int J)[] _pairs;
    readonly int _dim, _tables, _topInput;
    readonly int _bottomWidth;     // d, or 0 for the id-only shape (no bottom vector, no bottom columns)
    readonly DlrmConfig _config;
    readonly int[] _hiddenOffset;  // offset of hidden layer l's output in an event's activations
    float[] _gradA = [], _gradB = [], _pairWeights = [];

    public int Dim => _dim;
    /// <summary>Floats per event in <see cref="ServedEvent.Activations"/>: d + Σ hidden widths.</summary>
    public int ActivationLength { get; }
    /// <summary>Inputs of the last top layer (the width of <see cref="LastLayerAdapter"/>).</summary>
    public int LastLayerInputs => _widths[^2];

    /// <summary>Whether <paramref name="config"/> has the shape this backward handles: a top MLP of at least two
    /// layers ending in one logit (a one-layer top MLP would need the interaction output kept as well).</summary>
    public static bool Supports(DlrmConfig config) => config.TopMlp.Count >= 2 && config.TopMlp[^1] == 1;

    /// <param name="dense">The frozen dense part (its weights are copied now).</param>
    /// <param name="tablesNeeded">Per table, whether its pooled gradient is wanted (the adapted tables); null = all.
    /// Only the top-MLP input columns of pairs that involve a wanted table are backpropagated (dL/d of the bottom
    /// output and of pairs between unwanted tables is never used); the other tables' gradients are left zero.</param>
    public FrozenDenseBackward(DlrmDenseNet dense, IReadOnlyList<bool>? tablesNeeded = null)
    {
        ArgumentNullException.ThrowIfNull(dense);
        var config = dense.Config;
        if (!Supports(config)) throw new ArgumentException($"top MLP [{string.Join(", ", config.TopMlp)}]: the reuse backward needs ≥ 2 layers ending in 1 output", nameof(dense));
        _config = config;
        _dim = config.Dim;
        _bottomWidth = config.HasBottom ? config.Dim : 0;
        _tables = config.Tables.Count;
        _topInput = config.TopInput;
        _widths = config.TopMlp.ToArray();
        _pairs = config.PairOrder().ToArray();
        if (tablesNeeded is not null && tablesNeeded.Count != _tables) throw new ArgumentException($"tablesNeeded has {tablesNeeded.Count} entries for {_tables} tables", nameof(tablesNeeded));
        _neededVector = new bool[config.InteractionVectors];
        for (int t = 0; t < _tables; t++) _neededVector[config.TableVector(t)] = tablesNeeded?[t] ?? true;
        _pairColumns = Enumerable.Range(0, _pairs.Length).Where(p => _neededVector[_pairs[p].I] || _neededVector[_pairs[p].J]).ToArray();
        using var scope = NewDisposeScope();
        int vc = Vector<float>.Count;
        _inPad = new int[_widths.Length];
        _weights = new float[_widths.Length][];
        for (int l = 0; l < _widths.Length; l++)
        {
            int inW = l == 0 ? _topInput : _widths[l - 1], outW = _widths[l];
            int kept = l == 0 ? _pairColumns.Length : inW;
            _inPad[l] = (kept + vc - 1) / vc * vc;
            var w = TensorMemory.Span(dense.TopLayers[l].weight!.detach().contiguous());
            _weights[l] = new float[outW * _inPad[l]];
            for (int o = 0; o < outW; o++)
                if (l == 0)
                    for (int q = 0; q < kept; q++) _weights[l][o * _inPad[l] + q] = w[o * inW + _bottomWidth + _pairColumns[q]];
                else
                    w.Slice(o * inW, inW).CopyTo(_weights[l].AsSpan(o * _inPad[l], inW));
        }
        _lastWeight = TensorMemory.Span(dense.TopLayers[^1].weight!.detach().contiguous()).ToArray();
        _lastBias = TensorMemory.Span(dense.TopLayers[^1].bias!.detach().contiguous())[0];
        _hiddenOffset = new int[_widths.Length - 1];
        int offset = _bottomWidth;
        for (int l = 0; l < _hiddenOffset.Length; l++) { _hiddenOffset[l] = offset; offset += _widths[l]; }
        ActivationLength = offset;
    }

    /// <summary>Mean BCE-with-logits loss of <paramref name="samples"/> (each with Pooled, Activations, Label);
    /// dL/d(pooled) into <paramref name="gradPooled"/> (table-major [T, B, d]); dL/dW_last into
    /// <paramref name="gradLastWeight"/> (<see cref="LastLayerInputs"/> floats) and dL/db_last. The last layer is
    /// W_last + <paramref name="delta"/> when given. Tables not needed (constructor) get zero gradients. Non-finite
    /// inputs give a non-finite loss or gradient (callers check).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public unsafe double Backward(IReadOnlyList<ServedEvent> samples, LastLayerAdapter.Snapshot? delta,
                           Span<float> gradPooled, Span<float> gradLastWeight, out float gradLastBias)
    {
        ArgumentNullException.ThrowIfNull(samples);
        int b = samples.Count, d = _dim, last = _widths.Length - 1, lastIn = _widths[^2];
        if (gradPooled.Length < _tables * b * d) throw new ArgumentException($"gradPooled holds {gradPooled.Length} floats, {_tables} tables × {b} events × dim {d} need {_tables * b * d}", nameof(gradPooled));
        if (gradLastWeight.Length != lastIn) throw new ArgumentException($"gradLastWeight holds {gradLastWeight.Length} floats, the last layer has {lastIn} inputs", nameof(gradLastWeight));
        var needed = _neededVector;
        int maxWidth = Math.Max(_inPad.Max(), _widths.Max());
        if (_gradA.Length < maxWidth) { _gradA = new float[maxWidth]; _gradB = new float[maxWidth]; }
        int vectors = _config.InteractionVectors;
        if (_pairWeights.Length < vectors * vectors) _pairWeights = new float[vectors * vectors];

        Span<float> wEff = stackalloc float[lastIn];
        _lastWeight.CopyTo(wEff);
        float bEff = _lastBias;
        if (delta is not null)
        {
            if (delta.Weight.Length != lastIn) throw new ArgumentException($"last-layer update has {delta.Weight.Length} inputs, the layer {lastIn}", nameof(delta));
            for (int k = 0; k < lastIn; k++) wEff[k] += delta.Weight[k];
            bEff += delta.Bias;
        }
        gradLastWeight.Clear();
        gradPooled.Slice(0, _tables * b * d).Clear();
        double gradBias = 0, loss = 0;
        float** v = stackalloc float*[vectors];   // the interaction vectors of the event at hand
        for (int e = 0; e < b; e++)
        {
            var s = samples[e];
            var act = s.Activations ?? throw new ArgumentException($"request {s.RequestId} kept no activations", nameof(samples));
            var pooled = s.Pooled ?? throw new ArgumentException($"request {s.RequestId} kept no pooled embeddings", nameof(samples));
            if (act.Length != ActivationLength || pooled.Length != _tables * d)
                throw new ArgumentException($"request {s.RequestId}: {act.Length} activations / {pooled.Length} pooled floats, the model needs {ActivationLength} / {_tables * d}", nameof(samples));
            var h = act.AsSpan(_hiddenOffset[last - 1], lastIn);
            float z = Dot(h, wEff) + bEff;
            float y = s.Label;
            // Stable BCE-with-logits: max(z, 0) − z·y + log(1 + e^−|z|).
            loss += Math.Max(z, 0) - (double)z * y + Math.Log(1 + Math.Exp(-Math.Abs((double)z)));
            float g = (float)((1.0 / (1.0 + Math.Exp(-(double)z)) - y) / b);
            Axpy(g, h, gradLastWeight);
            gradBias += g;

            // Down the top MLP: g_in = Σ_o g_out[o]·W_l[o, :], masked by the ReLU of the layer below.
            var gOut = _gradA.AsSpan(0, lastIn);
            for (int k = 0; k < lastIn; k++) gOut[k] = g * wEff[k];
            ReluMask(h, gOut);
            for (int l = last - 1; l >= 0; l--)
            {
                int inW = l == 0 ? _topInput : _widths[l - 1];
                var gIn = _gradB.AsSpan(0, _inPad[l]);
                AccumulateRows(gOut, _weights[l], _inPad[l], gIn);
                if (l > 0)
                {
                    var below = act.AsSpan(_hiddenOffset[l - 1], inW);
                    ReluMask(below, gIn.Slice(0, inW));
                }
                (_gradA, _gradB) = (_gradB, _gradA);
                gOut = _gradA.AsSpan(0, l == 0 ? _inPad[0] : inW);
            }

            // gOut is now dL/d(top input) at the needed pairs' columns; they go to the interaction vectors:
            // dV_i = Σ_j S_ij·V_j with S symmetric (S_ij = S_ji = g_p for pair p = (i, j), 2·g_p on the diagonal).
            // Summed over j in registers, one store per vector of the output: a pair-by-pair Axpy would spend most of
            // the backward's instructions on a call and a load-add-store of dV_i per pair.
            var weights = _pairWeights.AsSpan(0, vectors * vectors);
            weights.Clear();
            for (int q = 0; q < _pairColumns.Length; q++)
            {
                float c = gOut[q];
                var (i, j) = _pairs[_pairColumns[q]];
                if (i == j) { weights[i * vectors + i] += 2 * c; continue; }
                weights[i * vectors + j] += c;
                weights[j * vectors + i] += c;
            }
            fixed (float* bottom = act)
            fixed (float* tables = pooled)
            fixed (float* w = weights)
            fixed (float* gp = gradPooled)
            {
                if (_bottomWidth > 0) v[0] = bottom;
                for (int t = 0; t < _tables; t++) v[_config.TableVector(t)] = tables + t * d;
                for (int t = 0; t < _tables; t++)
                    if (needed[_config.TableVector(t)]) CombineVectors(w + _config.TableVector(t) * vectors, v, vectors, d, gp + (t * b + e) * d);
            }
        }
        gradLastBias = (float)gradBias;
        return loss / b;
    }

    /// <summary>y[0..d) = Σ_j s[j]·v_j[0..d): each output vector summed over the <paramref name="count"/> inputs in a
    /// register and stored once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void CombineVectors(float* s, float** v, int count, int d, float* y)
    {
        int vc = Vector<float>.Count, k = 0;
        for (; k + vc <= d; k += vc)
        {
            var acc = Vector<float>.Zero;
            for (int j = 0; j < count; j++)
                acc = System.Numerics.Vector.FusedMultiplyAdd(new Vector<float>(s[j]), System.Numerics.Vector.Load(v[j] + k), acc);
            acc.Store(y + k);
        }
        for (; k < d; k++)
        {
            float acc = 0;
            for (int j = 0; j < count; j++) acc += s[j] * v[j][k];
            y[k] = acc;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int n = a.Length, k = 0;
        var acc = Vector<float>.Zero;
        var va = MemoryMarshal.Cast<float, Vector<float>>(a);
        var vb = MemoryMarshal.Cast<float, Vector<float>>(b);
        for (int v = 0; v < va.Length; v++) acc += va[v] * vb[v];
        k = va.Length * Vector<float>.Count;
        float sum = System.Numerics.Vector.Sum(acc);
        for (; k < n; k++) sum += a[k] * b[k];
        return sum;
    }

    /// <summary>y[0..inPad) = Σ_o g[o]·W[o, :] over rows of W padded to <paramref name="inPad"/> (a multiple of the
    /// vector width). Rows with g = 0 (ReLU-masked, about half) are first compacted out without branches — a
    /// per-row skip branch mispredicts about as often as it is taken — then four vectors of y are accumulated in
    /// registers across the remaining rows at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AccumulateRows(ReadOnlySpan<float> g, float[] w, int inPad, Span<float> y)
    {
        int vc = Vector<float>.Count, vectors = inPad / vc, rows = g.Length;
        if (w.Length < rows * inPad || y.Length < inPad) throw new ArgumentException("weight or output too short for the padded width");
        Span<int> live = stackalloc int[rows];
        int n = 0;
        for (int o = 0; o < rows; o++)
        {
            live[n] = o;
            n += g[o] != 0f ? 1 : 0;
        }
        ref float w0 = ref MemoryMarshal.GetArrayDataReference(w);
        ref float y0 = ref MemoryMarshal.GetReference(y);
        ref float g0 = ref MemoryMarshal.GetReference(g);
        int v = 0;
        for (; v + 4 <= vectors; v += 4)
        {
            Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
            nuint column = (nuint)(v * vc);
            for (int k = 0; k < n; k++)
            {
                int o = live[k];
                var s = new Vector<float>(Unsafe.Add(ref g0, o));
                nuint offset = (nuint)o * (nuint)inPad + column;
                a0 = System.Numerics.Vector.FusedMultiplyAdd(s, System.Numerics.Vector.LoadUnsafe(ref w0, offset), a0);
                a1 = System.Numerics.Vector.FusedMultiplyAdd(s, System.Numerics.Vector.LoadUnsafe(ref w0, offset + (nuint)vc), a1);
                a2 = System.Numerics.Vector.FusedMultiplyAdd(s, System.Numerics.Vector.LoadUnsafe(ref w0, offset + (nuint)(2 * vc)), a2);
                a3 = System.Numerics.Vector.FusedMultiplyAdd(s, System.Numerics.Vector.LoadUnsafe(ref w0, offset + (nuint)(3 * vc)), a3);
            }
            a0.StoreUnsafe(ref y0, column);
            a1.StoreUnsafe(ref y0, column + (nuint)vc);
            a2.StoreUnsafe(ref y0, column + (nuint)(2 * vc));
            a3.StoreUnsafe(ref y0, column + (nuint)(3 * vc));
        }
        for (; v < vectors; v++)
        {
            Vector<float> a = default;
            nuint column = (nuint)(v * vc);
            for (int k = 0; k < n; k++)
            {
                int o = live[k];
                a = System.Numerics.Vector.FusedMultiplyAdd(new Vector<float>(Unsafe.Add(ref g0, o)), System.Numerics.Vector.LoadUnsafe(ref w0, (nuint)o * (nuint)inPad + column), a);
            }
            a.StoreUnsafe(ref y0, column);
        }
    }

    /// <summary>grad[k] = activation[k] &gt; 0 ? grad[k] : 0 (ReLU backward, as libtorch's threshold backward; a NaN
    /// activation masks too), branch-free: a data-dependent branch here mispredicts half the time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ReluMask(ReadOnlySpan<float> activation, Span<float> grad)
    {
        int n = grad.Length, k = 0, vc = Vector<float>.Count;
        ref float a0 = ref MemoryMarshal.GetReference(activation);
        ref float g0 = ref MemoryMarshal.GetReference(grad);
        if (activation.Length < n) throw new ArgumentException("activation shorter than its gradient");
        for (; k + vc <= n; k += vc)
        {
            var keep = System.Numerics.Vector.GreaterThan(System.Numerics.Vector.LoadUnsafe(ref a0, (nuint)k), Vector<float>.Zero);
            System.Numerics.Vector.ConditionalSelect(keep, System.Numerics.Vector.LoadUnsafe(ref g0, (nuint)k), Vector<float>.Zero).StoreUnsafe(ref g0, (nuint)k);
        }
        for (; k < n; k++) grad[k] = activation[k] > 0 ? grad[k] : 0f;
    }

    // y += a·x
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Axpy(float a, ReadOnlySpan<float> x, Span<float> y)
    {
        int n = x.Length, k = 0;
        var va = new Vector<float>(a);
        var vx = MemoryMarshal.Cast<float, Vector<float>>(x);
        var vy = MemoryMarshal.Cast<float, Vector<float>>(y);
        for (int v = 0; v < vx.Length; v++) vy[v] += va * vx[v];
        k = vx.Length * Vector<float>.Count;
        for (; k < n; k++) y[k] += a * x[k];
    }
}
