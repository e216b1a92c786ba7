using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using TorchSharp;
using TorchSharp.Modules;

namespace LiveDlrm.Perf.Lookup;

/// <summary>One implementation timed by the lookup run. <see cref="Forward"/> computes batch i of the shared
/// <see cref="LookupBatches"/> into the contender's own preallocated output; it must not allocate (TorchSharp's
/// forward returns a fresh tensor — that cost belongs to the peer and is timed with it).</summary>
abstract class Contender : IDisposable
{
    public abstract string Name { get; }
    public abstract void Forward(int batch);
    /// <summary>The result of the last <see cref="Forward"/>, bags × dim floats, row-major.</summary>
    public abstract ReadOnlySpan<float> Output { get; }
    public virtual void Dispose() { }
}

/// <summary>LiveDlrm's kernel on its own worker pool.</summary>
sealed class LiveDlrmContender : Contender
{
    readonly EmbeddingTable _table;
    readonly LookupBatches _batches;
    readonly float[] _output;
    readonly LiveDlrmKernel _kernel;

    public LiveDlrmContender(EmbeddingTable table, LookupBatches batches, LiveDlrmKernel kernel)
    {
        _table = table;
        _batches = batches;
        _kernel = kernel;
        _output = GC.AllocateUninitializedArray<float>(batches.Bags * table.Dim, pinned: true);
    }

    public override string Name => "livedlrm";
    public override void Forward(int batch) => _kernel.Forward(_table, _batches.Indices[batch], _batches.Offsets, _output);
    public override ReadOnlySpan<float> Output => _output;
}

/// <summary>TorchSharp's EmbeddingBag (sum) over its own copy of the fp32 weights. Index tensors (int64: TorchSharp's
/// EmbeddingBag takes no int32) are built once per batch before timing; offsets have one entry per bag (PyTorch's
/// convention without include_last_offset). Call under <c>torch.no_grad()</c> on the timing thread.</summary>
sealed class TorchSharpContender : Contender
{
    readonly EmbeddingBag _module;
    readonly torch.Tensor[] _indices;
    readonly torch.Tensor _offsets;
    readonly float[] _output;
    torch.Tensor? _last;

    public TorchSharpContender(torch.Tensor weights, LookupBatches batches)
    {
        _module = torch.nn.EmbeddingBag_from_pretrained(weights, freeze: true, mode: EmbeddingBagMode.Sum);
        _module.eval();
        _indices = batches.Indices.Select(ids => torch.tensor(ids, dtype: torch.int64)).ToArray();
        _offsets = torch.tensor(batches.Offsets.AsSpan(0, batches.Bags).ToArray(), dtype: torch.int64);
        _output = new float[batches.Bags * (int)weights.shape[1]];
    }

    public override string Name => "torchsharp";

    public override void Forward(int batch)
    {
        _last?.Dispose();
        _last = _module.forward(_indices[batch], _offsets, null);
    }

    public override ReadOnlySpan<float> Output
    {
        get
        {
            if (_last is null) throw new InvalidOperationException("no forward yet");
            _last.contiguous().data<float>().CopyTo(_output);
            return _output;
        }
    }

    public override void Dispose()
    {
        _last?.Dispose();
        foreach (var t in _indices) t.Dispose();
        _offsets.Dispose();
        _module.Dispose();
    }
}

/// <summary>The native C reference (native/ref) at one prefetch distance, one bag range per <see cref="BagWorkers"/>
/// thread. Pointers to the pinned batch arrays are taken once; the per-call work delegate is cached.</summary>
sealed unsafe class NativeRefContender : Contender
{
    readonly EmbeddingTable _table;
    readonly LookupBatches _batches;
    readonly BagWorkers _workers;
    readonly float[] _output;
    readonly nint[] _indexPointers;
    readonly long* _offsets;
    readonly float* _out;
    readonly KernelRef.DType _dtype;
    readonly Action<int, int, int> _work;
    readonly KernelRef.Status[] _status;
    readonly long[] _errorPosition;
    int _batch;

    public int PrefetchDistance { get; }

    public NativeRefContender(EmbeddingTable table, LookupBatches batches, BagWorkers workers, int prefetchDistance)
    {
        _table = table;
        _batches = batches;
        _workers = workers;
        PrefetchDistance = prefetchDistance;
        _dtype = table.Storage switch
        {
            EmbeddingStorage.Fp32 => KernelRef.DType.Fp32,
            EmbeddingStorage.Fp16 => KernelRef.DType.Fp16,
            EmbeddingStorage.Int8Rowwise => KernelRef.DType.Int8Rowwise,
            _ => throw new ArgumentOutOfRangeException(nameof(table), table.Storage, "storage the native reference does not know"),
        };
        _output = GC.AllocateUninitializedArray<float>(batches.Bags * table.Dim, pinned: true);
        // The arrays are on the pinned object heap: their addresses are stable for their lifetime.
        _out = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_output));
        _offsets = (long*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(batches.Offsets));
        _indexPointers = batches.Indices.Select(a => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a))).ToArray();
        _status = new KernelRef.Status[workers.ThreadCount];
        _errorPosition = new long[workers.ThreadCount];
        _work = Gather;
    }

    public override string Name => $"native_ref_pf{PrefetchDistance}";

    void Gather(int worker, int bagBegin, int bagEnd)
    {
        long error;
        _status[worker] = KernelRef.BagSum(_dtype, KernelRef.Isa.Best, _table.DataPointer, _table.Rows, _table.Dim,
            (long*)_indexPointers[_batch], _offsets, bagBegin, bagEnd, PrefetchDistance, _out, &error);
        _errorPosition[worker] = error;
    }

    public override void Forward(int batch)
    {
        _batch = batch;
        _workers.Run(_batches.Bags, _work);
        for (int w = 0; w < _status.Length; w++)
            if (_status[w] != KernelRef.Status.Ok)
                throw new InvalidOperationException($"native reference returned {_status[w]} (worker {w}, position {_errorPosition[w]})");
    }

    public override ReadOnlySpan<float> Output => _output;
}
