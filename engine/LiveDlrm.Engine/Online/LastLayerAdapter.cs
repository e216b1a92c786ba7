using LiveDlrm.Model;
using static TorchSharp.torch;

namespace LiveDlrm.Online;

/// <summary>
/// The optional adaptation of the top MLP's last layer (<see cref="OnlineTrainerOptions.AdaptLastLayer"/>): an
/// additive update ΔW (1 × inputs) and Δb to the frozen last Linear layer, so the served logit is
/// <c>h·(W + ΔW)ᵀ + b + Δb</c> with h the last hidden layer's output. Trained by Adagrad on the trainer thread.
/// <para>Publication is a versioned copy and an atomic swap: every step builds a new immutable
/// <see cref="Snapshot"/> and publishes it with one reference write (<see cref="Volatile.Write{T}(ref T, T)"/>);
/// a reader takes <see cref="Current"/> once per batch and uses that object throughout, so it sees one complete
/// version and never blocks on the trainer. A step whose gradient or result is not finite is refused before
/// anything is published (<see cref="RejectedSteps"/>), so serving never sees a non-finite value.</para>
/// </summary>
internal sealed class LastLayerAdapter : ILastLayerDelta
{
    /// <summary>One published version of the update. Never modified after publication.</summary>
    public sealed class Snapshot
    {
        readonly float[] _weight;
        public ReadOnlySpan<float> Weight => _weight;
        public float Bias { get; }
        public long Version { get; }

        internal Snapshot(float[] weight, float bias, long version) { _weight = weight; Bias = bias; Version = version; }
    }

    readonly float[] _accumulatorW;
    readonly float[] _accumulatorScratch;   // the step's new accumulators, kept only if the step is accepted
    double _accumulatorB;
    Snapshot _current;
    long _rejected;

    public int Inputs { get; }
    public float LearningRate { get; }
    public float Epsilon { get; }
    /// <summary>The update serving must use now (one complete version).</summary>
    public Snapshot Current => Volatile.Read(ref _current);
    /// <summary>Steps refused because a gradient or the updated value was not finite.</summary>
    public long RejectedSteps => Interlocked.Read(ref _rejected);

    public LastLayerAdapter(int inputs, float learningRate, float epsilon = 1e-8f)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputs, 1);
        if (!(learningRate > 0) || !float.IsFinite(learningRate)) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "last-layer learning rate must be positive and finite");
        if (!(epsilon > 0) || !float.IsFinite(epsilon)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "last-layer epsilon must be positive and finite");
        Inputs = inputs;
        LearningRate = learningRate;
        Epsilon = epsilon;
        _accumulatorW = new float[inputs];
        _accumulatorScratch = new float[inputs];
        _current = new Snapshot(new float[inputs], 0f, 0);
    }

    /// <summary>The current version as tensors for the dense net's forward (<see cref="DlrmDenseNet.LastLayerDelta"/>).</summary>
    public (Tensor Weight, Tensor Bias) Tensors()
    {
        var s = Current;
        return (tensor(s.Weight.ToArray()), tensor(new[] { s.Bias }));
    }

    /// <summary>One Adagrad step from dL/dW (<paramref name="gradientW"/>, <see cref="Inputs"/> floats) and dL/db.
    /// Single writer (the trainer thread). False, counted and nothing published when a gradient or a result is not
    /// finite.</summary>
    public bool Apply(ReadOnlySpan<float> gradientW, float gradientB)
    {
        if (gradientW.Length != Inputs) throw new ArgumentException($"last-layer gradient has {gradientW.Length} floats, the layer has {Inputs} inputs", nameof(gradientW));
        var old = _current;
        var weight = new float[Inputs];
        var accumulator = _accumulatorScratch;
        bool finite = float.IsFinite(gradientB);
        for (int k = 0; k < Inputs && finite; k++)
        {
            float g = gradientW[k];
            float acc = _accumulatorW[k] + g * g;
            float w = old.Weight[k] - LearningRate * g / (MathF.Sqrt(acc) + Epsilon);
            finite = float.IsFinite(g) && float.IsFinite(acc) && float.IsFinite(w);
            accumulator[k] = acc;
            weight[k] = w;
        }
        double accB = _accumulatorB + (double)gradientB * gradientB;
        float bias = (float)(old.Bias - LearningRate * gradientB / (Math.Sqrt(accB) + Epsilon));
        if (!finite || !double.IsFinite(accB) || !float.IsFinite(bias))
        {
            Interlocked.Increment(ref _rejected);
            return false;
        }
        accumulator.CopyTo(_accumulatorW, 0);
        _accumulatorB = accB;
        Volatile.Write(ref _current, new Snapshot(weight, bias, old.Version + 1));
        return true;
    }

    const int StateFormat = 1;

    /// <summary>Writes the current update (ΔW, Δb, version), the Adagrad accumulators and the rejected-step count, so
    /// <see cref="ReadState"/> on a layer of the same shape and learning rate serves and continues bit for bit. The
    /// trainer (the only writer) must be stopped or paused.</summary>
    public void WriteState(BinaryWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        var s = Current;
        w.Write(StateFormat);
        w.Write(Inputs);
        w.Write(s.Version);
        w.Write(s.Bias);
        w.Write(_accumulatorB);
        w.Write(RejectedSteps);
        foreach (float x in s.Weight) w.Write(x);
        foreach (float x in _accumulatorW) w.Write(x);
    }

    /// <summary>Reads what <see cref="WriteState"/> wrote; throws <see cref="InvalidDataException"/> naming what does
    /// not fit (another shape, a non-finite value) before anything changes. <paramref name="apply"/> false only checks.
    /// The trainer must be stopped.</summary>
    public void ReadState(BinaryReader r, bool apply = true)
    {
        ArgumentNullException.ThrowIfNull(r);
        const string where = "last-layer update";
        int format = r.ReadInt32();
        if (format != StateFormat) throw new InvalidDataException($"{where}: format {format}, this engine reads {StateFormat}");
        int inputs = r.ReadInt32();
        if (inputs != Inputs) throw new InvalidDataException($"{where}: saved for {inputs} inputs, the model's last layer has {Inputs}");
        long version = r.ReadInt64();
        float bias = r.ReadSingle();
        double accB = r.ReadDouble();
        long rejected = r.ReadInt64();
        var weight = new float[inputs];
        var accW = new float[inputs];
        for (int k = 0; k < inputs; k++) weight[k] = r.ReadSingle();
        for (int k = 0; k < inputs; k++) accW[k] = r.ReadSingle();
        if (!float.IsFinite(bias) || !double.IsFinite(accB) || accB < 0 || version < 0 || rejected < 0
            || !weight.All(float.IsFinite) || !accW.All(x => float.IsFinite(x) && x >= 0))
            throw new InvalidDataException($"{where}: a value is not finite or out of range");
        if (!apply) return;
        accW.CopyTo(_accumulatorW, 0);
        _accumulatorB = accB;
        Interlocked.Exchange(ref _rejected, rejected);
        Volatile.Write(ref _current, new Snapshot(weight, bias, version));
    }
}
