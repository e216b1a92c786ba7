using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Embeddings;

namespace LiveDlrm.Lora;

/// <summary>The per-slot record of the native slot pool (32 bytes). The pool is two arrays indexed by slot: the A
/// vectors first (slot × <see cref="SlotLayout.ABytesFor"/>, 64-byte aligned), then these records. Readers touch a
/// record only on the per-row paths (<see cref="Seq"/>, <see cref="Row"/>); the block kernel reads nothing but A.
/// Why two arrays: A of rank 16 is 64 bytes, so in its own aligned array every A is one cache line; inside one
/// 96-byte slot (record, then A) every other A straddled two lines and a hit in the lookup kernel waited for both.</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct SlotRecord
{
    /// <summary>Seqlock counter: odd while the trainer writes the slot (A, owner row, or a merge of W[row]).</summary>
    [FieldOffset(0)] public int Seq;
    /// <summary>Row-wise Adagrad accumulator (trainer only).</summary>
    [FieldOffset(4)] public float Adagrad;
    /// <summary>Owning table row, <see cref="FreeRow"/> when the slot is free.</summary>
    [FieldOffset(8)] public long Row;
    /// <summary>Adapter clock at the last update (LRU order for eviction).</summary>
    [FieldOffset(16)] public long Stamp;
    /// <summary>Index into the trainer's per-step gradient scratch (validated against the scratch, never trusted).</summary>
    [FieldOffset(24)] public int Touch;
    /// <summary>Steps that updated the slot since its row got it (trainer only; hot-row promotion).</summary>
    [FieldOffset(28)] public int Updates;

    public const long FreeRow = -1;

    public readonly bool IsLive => Row >= 0;
}

/// <summary>Sizes of the slot pool's two arrays.</summary>
internal static class SlotLayout
{
    public static int RecordBytes => Unsafe.SizeOf<SlotRecord>();

    /// <summary>Bytes of one A vector in the A array: rank floats rounded up to 32 bytes, so the kernels' 8/16-float
    /// loads stay inside it (lanes ≥ rank are zero and never used).</summary>
    public static int ABytesFor(int rank) => (rank * sizeof(float) + 31) & ~31;

    /// <summary>Pool bytes per slot: its A vector and its record.</summary>
    public static int BytesPerSlot(int rank) => ABytesFor(rank) + RecordBytes;
}

/// <summary>What a reader copies out of a slot while it holds the slot's seqlock section (see
/// <see cref="SlotSeqlock.TryRead{TSnapshot}"/>). A struct, so the copy is inlined into the reader's loop.</summary>
internal interface ISlotSnapshot
{
    void Take();
}

/// <summary>The per-slot seqlock. Writer (the single trainer thread): <see cref="BeginWrite"/> makes the counter odd,
/// the data is written, <see cref="EndWrite"/> makes it even. Reader: <see cref="TryRead{TSnapshot}"/>, the one
/// reader every lookup path uses.</summary>
internal static unsafe class SlotSeqlock
{
    /// <summary>If <paramref name="record"/> belongs to <paramref name="row"/>, takes <paramref name="snapshot"/> as
    /// one consistent copy and returns true; false when the slot was merged or reused since it was found (the
    /// snapshot's contents are then meaningless). Waits only while a write of this one slot is in progress. No call
    /// in the loop, not even SpinWait: a call makes the JIT spill a kernel's vector accumulators (caller-saved)
    /// around the whole enclosing loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryRead<TSnapshot>(SlotRecord* record, long row, ref TSnapshot snapshot) where TSnapshot : struct, ISlotSnapshot
    {
        while (true)
        {
            int s1 = Volatile.Read(ref record->Seq);
            if ((s1 & 1) == 0)
            {
                bool mine = record->Row == row;
                if (mine) snapshot.Take();
                Volatile.ReadBarrier();
                if (record->Seq == s1) return mine;
            }
            if (X86Base.IsSupported) X86Base.Pause();
            else if (ArmBase.IsSupported) ArmBase.Yield();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BeginWrite(SlotRecord* record)
    {
        Volatile.Write(ref record->Seq, record->Seq + 1);   // odd: readers of this slot retry
        Volatile.WriteBarrier();                            // the odd counter becomes visible before any data store below
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void EndWrite(SlotRecord* record) =>
        Volatile.Write(ref record->Seq, record->Seq + 1);   // even again; release: every data store above is visible first
}

/// <summary>A slot's A vector. Rank ≤ 16 (and Vector256 hardware): into two 8-float registers, loaded straight from
/// the A array, which pads A to a multiple of 8 floats (<see cref="SlotLayout.ABytesFor"/>) so the loads stay inside
/// it (lanes ≥ rank are never used); larger ranks into <see cref="Copy"/>.</summary>
internal unsafe struct ASnapshot : ISlotSnapshot
{
    public float* Source;
    /// <summary>Rank floats; written when <see cref="InRegisters"/> is false.</summary>
    public float* Copy;
    public int Rank;
    public bool InRegisters;
    public Vector256<float> Low, High;

    /// <summary>Whether a rank fits <see cref="Low"/>/<see cref="High"/>.</summary>
    public static bool FitsRegisters(int rank) => rank <= 16 && Vector256.IsHardwareAccelerated;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Take()
    {
        if (InRegisters)
        {
            Low = Vector256.Load(Source);
            if (Rank > 8) High = Vector256.Load(Source + 8);
        }
        else
        {
            int i = 0;
            for (; i <= Rank - 8; i += 8) Vector256.Store(Vector256.Load(Source + i), Copy + i);
            for (; i < Rank; i++) Copy[i] = Source[i];
        }
    }
}

/// <summary>A slot's A (into <see cref="A"/>'s copy) and its row's W dequantised into <see cref="W"/>, as one
/// snapshot: a merge writes W inside the slot's section, so the pair is old W + A or (slot no longer the row's)
/// nothing — never the merged W plus A.</summary>
internal unsafe struct ARowSnapshot : ISlotSnapshot
{
    public ASnapshot A;
    public byte* Row;
    public EmbeddingStorage Storage;
    public int Dim;
    public float* W;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Take()
    {
        A.Take();
        new Span<float>(W, Dim).Clear();
        StoredRows.AddRow(Storage, Row, 1f, W, Dim);
    }
}
