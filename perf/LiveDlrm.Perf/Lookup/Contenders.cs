using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveDlrm.Embeddings;
using LiveDlrm.Interop;
using LiveDlrm.Lora;
using TorchSharp;
using TorchEmbeddingBag = TorchSharp.Modules.EmbeddingBag;

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
    /// <summary>Null when the output of <c>Forward(0)</c> is right, else the first mismatch.</summary>
    public virtual string? Verify(ReadOnlySpan<float> plainExpected) => LookupRun.Compare(Output, plainExpected);
    public virtual void Dispose() { }
}

/// <summary>LiveDlrm's kernel on its own worker pool, at the engine's default prefetch distance or (sweep entries)
/// at a given one, with the engine's default code for the storage type or (<paramref name="implementation"/>) a forced
/// one. The distance is a process-wide knob, so every LiveDlrm contender sets its own before each call.</summary>
sealed class LiveDlrmContender : Contender
{
    readonly EmbeddingTable _table;
    readonly LookupBatches _batches;
    readonly float[] _output;
    readonly LiveDlrmKernel _kernel;
    readonly int _prefetch;
    readonly bool _isSweepEntry;
    readonly KernelImplementation? _implementation;

    public LiveDlrmContender(EmbeddingTable table, LookupBatches batches, LiveDlrmKernel kernel, int? prefetchDistance = null,
                             KernelImplementation? implementation = null)
    {
        _implementation = implementation;
        _table = table;
        _batches = batches;
        _kernel = kernel;
        _prefetch = prefetchDistance ?? -1;
        _isSweepEntry = prefetchDistance is not null;
        _output = GC.AllocateUninitializedArray<float>(batches.Bags * table.Dim, pinned: true);
    }

    public override string Name =>
        (_isSweepEntry ? $"livedlrm_pf{_prefetch}" : "livedlrm") + (_implementation is { } i ? "_" + i.ToString().ToLowerInvariant() : "");

    public override void Forward(int batch)
    {
        if (_isSweepEntry) EmbeddingKernels.PrefetchDistance = _prefetch;
        // The other code at the distance the table's own tuner chose, without feeding its timings to that tuner.
        else if (_implementation is not null) EmbeddingKernels.PrefetchDistance = _table.PrefetchDistance;
        else EmbeddingKernels.ResetPrefetchDistance();    // the table's tuned distance (docs/kernels.md)
        if (_implementation is { } code)
        {
            using var forced = EmbeddingKernels.Force(EmbeddingKernels.SelectedIsa, code);
            _kernel.Forward(_table, _batches.Indices[batch], _batches.Offsets, _output);
        }
        else _kernel.Forward(_table, _batches.Indices[batch], _batches.Offsets, _output);
    }

    public override ReadOnlySpan<float> Output => _output;

    public override void Dispose() => EmbeddingKernels.ResetPrefetchDistance();
}

/// <summary>TorchSharp's EmbeddingBag (sum) over its own copy of the fp32 weights. Index tensors (int64: TorchSharp's
/// EmbeddingBag takes no int32) are built once per batch before timing; offsets have one entry per bag (PyTorch's
/// convention without include_last_offset). Call under <c>torch.no_grad()</c> on the timing thread.</summary>
sealed class TorchSharpContender : Contender
{
    readonly TorchEmbeddingBag _module;
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
            using var dense = _last.contiguous();
            dense.data<float>().CopyTo(_output);
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

/// <summary>The native C reference (native/ref) at one prefetch distance, run through LiveDlrm's own
/// <see cref="EmbeddingWorkerPool"/>: the job is the same <see cref="BagJob"/> LiveDlrm's kernel gets, with a kernel
/// pointer that calls the C gather for each chunk of bags — same threads, same chunking, same hand-off cost.
/// Pointers to the pinned batch arrays are taken once.</summary>
sealed unsafe class NativeRefContender : Contender
{
    readonly EmbeddingTable _table;
    readonly LookupBatches _batches;
    readonly EmbeddingWorkerPool _pool;
    readonly float[] _output;
    readonly nint[] _indexPointers;
    readonly long* _offsets;
    readonly float* _out;
    readonly delegate*<in BagJob, int, int, bool> _kernel;

    // Status of the last failing chunk (any thread), for the error message.
    static KernelRef.Status _lastStatus;
    static long _lastErrorPosition;

    public int PrefetchDistance { get; }

    public NativeRefContender(EmbeddingTable table, LookupBatches batches, EmbeddingWorkerPool pool, int prefetchDistance)
    {
        _table = table;
        _batches = batches;
        _pool = pool;
        PrefetchDistance = prefetchDistance;
        _kernel = table.Storage switch
        {
            EmbeddingStorage.Fp32 => &GatherFp32,
            EmbeddingStorage.Fp16 => &GatherFp16,
            EmbeddingStorage.Int8Rowwise => &GatherInt8,
            _ => throw new ArgumentOutOfRangeException(nameof(table), table.Storage, "storage the native reference does not know"),
        };
        _output = GC.AllocateUninitializedArray<float>(batches.Bags * table.Dim, pinned: true);
        // The arrays are on the pinned object heap: their addresses are stable for their lifetime.
        _out = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_output));
        _offsets = (long*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(batches.Offsets));
        _indexPointers = batches.Indices.Select(a => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a))).ToArray();
    }

    public override string Name => $"native_ref_pf{PrefetchDistance}";

    static bool GatherFp32(in BagJob job, int bagBegin, int bagEnd) => Gather(KernelRef.DType.Fp32, in job, bagBegin, bagEnd);
    static bool GatherFp16(in BagJob job, int bagBegin, int bagEnd) => Gather(KernelRef.DType.Fp16, in job, bagBegin, bagEnd);
    static bool GatherInt8(in BagJob job, int bagBegin, int bagEnd) => Gather(KernelRef.DType.Int8Rowwise, in job, bagBegin, bagEnd);

    static bool Gather(KernelRef.DType dtype, in BagJob job, int bagBegin, int bagEnd)
    {
        long error;
        var status = KernelRef.BagSum(dtype, KernelRef.Isa.Best, job.Table, job.Rows, job.Dim, (long*)job.Indices, (long*)job.Offsets,
                                      bagBegin, bagEnd, job.PrefetchDistance, job.Output, &error);
        if (status == KernelRef.Status.Ok) return true;
        _lastStatus = status;
        _lastErrorPosition = error;
        return false;
    }

    public override void Forward(int batch)
    {
        var job = new BagJob
        {
            Table = _table.DataPointer,
            Rows = _table.Rows,
            Stride = _table.RowStride,
            Dim = _table.Dim,
            Indices = (long*)_indexPointers[batch],
            Offsets = _offsets,
            Output = _out,
            Bags = _batches.Bags,
            PrefetchDistance = PrefetchDistance,
            Kernel = _kernel,
        };
        bool ok;
        if (_pool.ThreadCount == 0 || !_pool.TryRun(in job, out ok)) ok = job.Kernel(in job, 0, job.Bags);
        if (!ok) throw new InvalidOperationException($"native reference returned {_lastStatus} (position {_lastErrorPosition})");
    }

    public override ReadOnlySpan<float> Output => _output;
}

/// <summary>LiveDlrm's LoRA-augmented lookup (Σ W[i] + (Σ A[i])·B) on the same table, batches and
/// pool as <see cref="LiveDlrmContender"/>. The adapter has rank <see cref="Rank"/> and is filled to the default 1 %
/// budget with the distinct rows of *earlier* traffic — separate batches of the same id distribution, as a trainer
/// would have adapted the rows of requests served before the timed ones. So Zipf batches hit adapted rows as often as
/// they would in service (the hot rows), and uniform ones about as often as the adapted share of the table. (Filling
/// from the timed batches themselves, as before, made the first batches of a uniform case hit on every index.)</summary>
sealed class LoraContender : Contender
{
    public const int Rank = 16;
    readonly TableAdapter _adapter;
    readonly LookupBatches _batches;
    readonly LiveDlrmKernel _kernel;
    readonly float[] _output;

    public LoraContender(EmbeddingTable table, LookupBatches batches, LiveDlrmKernel kernel)
    {
        _batches = batches;
        _kernel = kernel;
        _adapter = new TableAdapter(table, new AdapterOptions { InitialRank = Rank, MinRank = 1, MaxRank = Rank });
        var rng = new Random(11);
        var a = new float[Rank];
        var adapted = new HashSet<long>();
        for (int round = 0; round < 16 && adapted.Count < _adapter.SlotCapacity; round++)
        {
            var history = new LookupBatches(table.Rows, batches.Bags, batches.Pooling, 2, batches.Distribution, seed: 7919 + round);
            foreach (var ids in history.Indices)
                foreach (long id in ids)
                {
                    if (adapted.Count >= _adapter.SlotCapacity) break;
                    if (!adapted.Add(id)) continue;
                    for (int k = 0; k < Rank; k++) a[k] = (float)(rng.NextDouble() - 0.5) * 0.1f;
                    _adapter.SetRow(id, a);
                }
        }
        long hits = 0, total = 0;
        foreach (var ids in batches.Indices)
        {
            foreach (long id in ids) if (adapted.Contains(id)) hits++;
            total += ids.Length;
        }
        HitFraction = (double)hits / total;
        _output = GC.AllocateUninitializedArray<float>(batches.Bags * table.Dim, pinned: true);
    }

    /// <summary>Share of the timed lookups that hit an adapted row.</summary>
    public double HitFraction { get; }

    public override string Name => "livedlrm_lora";
    public int ActiveRows => _adapter.ActiveRows;
    public double MemoryPercent => _adapter.MemoryFraction * 100;

    public override void Forward(int batch)
    {
        EmbeddingKernels.ResetPrefetchDistance();
        LoraEmbeddingBag.Forward(_adapter, _batches.Indices[batch], _batches.Offsets, _output, pool: _kernel.Pool);
    }

    public override ReadOnlySpan<float> Output => _output;

    /// <summary>The LoRA result differs from the plain table's by design: its oracle is the scalar LoRA reference.</summary>
    public override string? Verify(ReadOnlySpan<float> plainExpected)
    {
        var expected = new float[_output.Length];
        LoraEmbeddingBagReference.Forward(_adapter, _batches.Indices[0], _batches.Offsets, expected);
        return LookupRun.Compare(Output, expected);
    }

    public override void Dispose() => _adapter.Dispose();
}

/// <summary>--breakdown: one piece of LiveDlrm's lookup outside the kernel loop, timed alone on the same batches, so
/// its share of a lookup can be read off (the printed µs a batch): the full validation pass over offsets and indices
/// that the multi-table and LoRA lookups run before any output is written, the shape check the plain lookup runs
/// (<see cref="EmbeddingBagValidation.ValidateShape{TIndex, TOffset}"/>), and the pool's hand-off with a kernel that
/// does nothing. Its output is never checked.</summary>
sealed unsafe class PieceContender : Contender
{
    public enum Piece { Validation, ShapeCheck, PoolHandOff }

    readonly EmbeddingTable _table;
    readonly LookupBatches _batches;
    readonly EmbeddingWorkerPool _pool;
    readonly Piece _piece;
    readonly int _outputLength;

    public PieceContender(EmbeddingTable table, LookupBatches batches, EmbeddingWorkerPool pool, Piece piece)
    {
        _table = table;
        _batches = batches;
        _pool = pool;
        _piece = piece;
        _outputLength = batches.Bags * table.Dim;
    }

    public override string Name => _piece switch
    {
        Piece.Validation => "piece_validation",
        Piece.ShapeCheck => "piece_shape_check",
        _ => "piece_pool_handoff",
    };

    static bool Nothing(in BagJob job, int bagBegin, int bagEnd) => true;

    public override void Forward(int batch)
    {
        switch (_piece)
        {
            case Piece.Validation:
                EmbeddingBagValidation.Validate(_table, (ReadOnlySpan<long>)_batches.Indices[batch], (ReadOnlySpan<long>)_batches.Offsets, _outputLength, PoolingMode.Sum, default);
                break;
            case Piece.ShapeCheck:
                EmbeddingBagValidation.ValidateShape(_table, (ReadOnlySpan<long>)_batches.Indices[batch], (ReadOnlySpan<long>)_batches.Offsets, _outputLength, PoolingMode.Sum, default);
                break;
            default:
                var job = new BagJob { Bags = _batches.Bags, Kernel = &Nothing };
                if (!_pool.TryRun(in job, out _)) throw new InvalidOperationException("pool busy");
                break;
        }
    }

    public override ReadOnlySpan<float> Output => default;
    public override string? Verify(ReadOnlySpan<float> plainExpected) => null;
}
