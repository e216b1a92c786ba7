using System.Runtime.CompilerServices;
namespace LiveDlrm.Lora;

/// <summary>The adapter's optimizer (<see cref="AdapterOptions.Optimizer"/>): row-wise Adagrad for A (one accumulator
/// per row, the mean of the squared row gradient, as in FBGEMM/TorchRec), element-wise Adagrad for B, or plain SGD.
/// Pure functions of the current values: the caller checks the results for NaN/Inf before anything is published.</summary>
internal static unsafe class AdapterUpdateRule
{
    /// <summary>The new A row (<paramref name="rank"/> floats into <paramref name="newA"/>) from the row's A, its summed
    /// gradient and its accumulator; returns the new accumulator (unchanged under SGD).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float StepRow(AdapterOptions options, float* a, float* grad, float accumulator, float* newA, int rank)
    {
        float step = options.LearningRateA;
        if (options.Optimizer == AdapterOptimizer.Adagrad)
        {
            accumulator += LoraMath.Dot(grad, grad, rank) / rank;
            step /= MathF.Sqrt(accumulator) + options.AdagradEpsilon;
        }
        for (int k = 0; k < rank; k++) newA[k] = a[k] - step * grad[k];
        return accumulator;
    }

    /// <summary>The new B and its Adagrad state (new arrays: a published B is never mutated; under SGD the state array
    /// is returned as it is).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static (float[] B, float[] Adagrad) StepB(AdapterOptions options, float[] b, ReadOnlySpan<float> gradient, float[] adagrad)
    {
        bool useAdagrad = options.Optimizer == AdapterOptimizer.Adagrad;
        var newB = new float[b.Length];
        var newAdagrad = useAdagrad ? new float[b.Length] : adagrad;
        for (int i = 0; i < b.Length; i++)
        {
            float grad = gradient[i], step = options.LearningRateB;
            if (useAdagrad)
            {
                newAdagrad[i] = adagrad[i] + grad * grad;
                step /= MathF.Sqrt(newAdagrad[i]) + options.AdagradEpsilon;
            }
            newB[i] = b[i] - step * grad;
        }
        return (newB, newAdagrad);
    }
}
