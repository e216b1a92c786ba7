using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LiveDlrm.Memory;

namespace LiveDlrm.Lora;

/// <summary>One immutable-shape version of a table's adapter: the open-addressing map row → slot, the slot pool and
/// B, all for one rank. Shape changes (rank change, map rebuild) create a new generation that is published with one
/// reference write; readers pin the generation they started with (<see cref="Readers"/>), so they never mix an old
/// B with A vectors of a new rank, and the trainer frees a retired generation only after its readers drained.
///
/// Map: capacity is a power of two, linear probing, one 64-bit word per entry so readers see an entry whole:
/// <c>((row + 1) &lt;&lt; 24) | slot</c>; 0 = empty, -1 = tombstone. Deletion writes a tombstone (backward-shift
/// deletion would move live entries under a concurrent reader's probe and make it miss them); tombstones are reused
/// by inserts and cleared by rebuilding the map into a new generation when live + tombstones pass 3/4 of capacity.
/// The pool holds at most capacity/2 slots, so a probe for an absent row (the common case) ends after ~2.5 entries.</summary>
internal sealed unsafe class AdapterGeneration
{
    public const int SlotBits = 24;
    public const long SlotMask = (1L << SlotBits) - 1;
    public const long MaxRows = (1L << (63 - SlotBits)) - 2;
    public const long Empty = 0;
    public const long Tombstone = -1;

    public readonly long Version;
    public readonly int Rank;
    public readonly int Dim;
    /// <summary>Bytes between consecutive A vectors (<see cref="SlotLayout.ABytesFor"/>).</summary>
    public readonly int AStride;
    public readonly int SlotCapacity;
    public readonly long MapCapacity;
    readonly int _mapShift;
    readonly long _mapMask;

    public readonly NativeBuffer Pool;
    public readonly NativeBuffer Map;
    /// <summary>Presence filter in front of the map: a blocked Bloom filter of 32-bit words, 8 bits per map entry
    /// (≥ 16 per slot); a row sets two bits of one word (<see cref="FilterWord"/>, <see cref="FilterBits"/>) on insert,
    /// never cleared within a generation (a map rebuild starts a clean one). A missing bit proves the row has no slot,
    /// so most absent rows are decided by one load from a table a ninth the map's size instead of a probe. Two bits
    /// in one word: about 1 % false positives at the 1 % budget instead of 4–6 % with one bit, for the same single
    /// load. Stale bits of merged rows only cost a probe.</summary>
    public readonly NativeBuffer Filter;
    public readonly uint* FilterPointer;
    public readonly int FilterShift;
    /// <summary>The pool: the A array at its start (64-byte aligned), the record array after it.</summary>
    public readonly byte* PoolPointer;
    public readonly SlotRecord* RecordPointer;
    public readonly long* MapPointer;
    /// <summary>The generation's write epoch (a table-wide seqlock counter in its own cache line after the map): odd
    /// while the trainer changes what a lookup could read through the map — A rows, merges (W, frees, tombstones).
    /// The register kernel reads it once per block of bags and again after the block; an unchanged even value lets
    /// it skip the per-slot counters and owner checks for the whole block (see docs/lora.md).</summary>
    public readonly int* WriteEpochPointer;

    /// <summary>B (rank × dim, row-major). Replaced, never mutated, once published: a reader's snapshot stays whole.</summary>
    public float[] B;
    /// <summary>Adagrad state of B (trainer only; reset on a rank change).</summary>
    public float[] BAdagrad;

    /// <summary>Readers currently inside a lookup on this generation (see <see cref="TableAdapter"/> for the protocol).</summary>
    public int Readers;

    // Trainer-side bookkeeping (single writer): free slots as a stack, map occupancy.
    public readonly int[] FreeSlots;
    public int FreeCount;
    public int Live;
    public int Tombstones;
    public bool OwnsPool = true;

    AdapterGeneration(long version, int rank, int dim, int slotCapacity, long mapCapacity, NativeBuffer pool, float[] b)
    {
        if (mapCapacity < GroupEntries || !BitOperations.IsPow2(mapCapacity))
            throw new ArgumentOutOfRangeException(nameof(mapCapacity), mapCapacity, $"map capacity must be a power of two ≥ {GroupEntries} (one probe group)");
        Version = version;
        Rank = rank;
        Dim = dim;
        AStride = SlotLayout.ABytesFor(rank);
        SlotCapacity = slotCapacity;
        MapCapacity = mapCapacity;
        _mapMask = mapCapacity - 1;
        _mapShift = 64 - BitOperations.Log2((ulong)mapCapacity);
        Pool = pool;
        PoolPointer = pool.Pointer;
        RecordPointer = (SlotRecord*)(pool.Pointer + (long)slotCapacity * AStride);
        Map = NativeBuffer.Allocate(MapBytes(mapCapacity));
        MapPointer = (long*)Map.Pointer;
        WriteEpochPointer = (int*)(MapPointer + mapCapacity);
        Filter = NativeBuffer.Allocate(FilterBytes(mapCapacity));
        FilterPointer = (uint*)Filter.Pointer;
        FilterShift = 32 - BitOperations.Log2((ulong)FilterBytes(mapCapacity) / sizeof(uint));
        B = b;
        BAdagrad = new float[b.Length];
        FreeSlots = new int[slotCapacity];
    }

    /// <summary>A generation with an empty, zeroed pool (every slot free).</summary>
    public static AdapterGeneration CreateEmpty(long version, int rank, int dim, int slotCapacity, long mapCapacity, float[] b)
    {
        var pool = NativeBuffer.Allocate((long)slotCapacity * SlotLayout.BytesPerSlot(rank));
        var g = new AdapterGeneration(version, rank, dim, slotCapacity, mapCapacity, pool, b);
        for (int s = 0; s < slotCapacity; s++) g.Record(s)->Row = SlotRecord.FreeRow;
        for (int s = 0; s < slotCapacity; s++) g.FreeSlots[s] = slotCapacity - 1 - s;   // pop order 0, 1, 2, ...
        g.FreeCount = slotCapacity;
        return g;
    }

    /// <summary>A generation over the same pool and B with a fresh map (clears tombstones). The pool moves to the
    /// new generation; the caller retires this one without freeing the pool.</summary>
    public AdapterGeneration WithRebuiltMap(long version)
    {
        var g = new AdapterGeneration(version, Rank, Dim, SlotCapacity, MapCapacity, Pool, B);
        Array.Copy(BAdagrad, g.BAdagrad, BAdagrad.Length);
        g.CopyBookkeepingFrom(this);
        OwnsPool = false;
        return g;
    }

    /// <summary>A generation with a copy of the pool and a new B (same rank). Used when B is replaced wholesale:
    /// readers still on this generation keep this B with these A vectors, so a new B is never combined with A rows
    /// written for it by a reader that snapshotted the old one.</summary>
    public AdapterGeneration WithCopiedPool(long version, float[] b)
    {
        var pool = NativeBuffer.Allocate(Pool.Length);
        Buffer.MemoryCopy(PoolPointer, pool.Pointer, Pool.Length, Pool.Length);
        var g = new AdapterGeneration(version, Rank, Dim, SlotCapacity, MapCapacity, pool, b);
        g.CopyBookkeepingFrom(this);
        return g;
    }

    void CopyBookkeepingFrom(AdapterGeneration source)
    {
        Array.Copy(source.FreeSlots, FreeSlots, source.FreeCount);
        FreeCount = source.FreeCount;
        for (int s = 0; s < SlotCapacity; s++)
        {
            long row = Record(s)->Row;
            if (row >= 0) InsertNew(row, s);
        }
    }

    /// <summary>Map allocation for a capacity: the entries plus one cache line for the write epoch.</summary>
    public static long MapBytes(long mapCapacity) => mapCapacity * sizeof(long) + EpochLineBytes;

    const int EpochLineBytes = 64;

    /// <summary>Filter size for a map capacity: one byte per entry, at least two 32-bit words.</summary>
    public static long FilterBytes(long mapCapacity) => Math.Max(8, mapCapacity);

    /// <summary>The filter word of <paramref name="row"/>: the top bits of a 32-bit multiplicative hash of the row's
    /// low 32 bits, so the lookup kernel hashes 8 indices with one vpmulld (AVX2 has no 64-bit multiply). Rows that
    /// differ only above bit 31 share a word and bits: more false positives past 2^32 rows, never a wrong answer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint FilterWord(long row, int filterShift) => ((uint)row * FilterMultiplier) >> filterShift;

    /// <summary>The two bits <paramref name="row"/> sets in its word: the top ten bits of a second multiplicative hash
    /// (different constant, so the bits do not follow the word).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint FilterBits(long row)
    {
        uint h = (uint)row * FilterBitsMultiplier;
        return (1u << (int)(h >> 27)) | (1u << (int)((h >> 22) & 31));
    }

    public const uint FilterMultiplier = 0x85EBCA6Bu;
    public const uint FilterBitsMultiplier = 0xC2B2AE35u;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool MayContain(uint* filter, int filterShift, long row)
    {
        uint bits = FilterBits(row);
        return (Volatile.Read(ref filter[FilterWord(row, filterShift)]) & bits) == bits;
    }

    public long Bytes => Pool.Length + Map.Length + Filter.Length + (long)(B.Length + BAdagrad.Length + FreeSlots.Length) * sizeof(float);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public SlotRecord* Record(int slot) => RecordPointer + slot;

    /// <summary>The A vector of <paramref name="slot"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float* APointer(int slot) => (float*)(PoolPointer + (long)slot * AStride);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Bucket(long row) => Home(row, _mapShift);

    /// <summary>Entries per probe group: 8 × 8 bytes = one cache line (the map is 64-byte aligned).</summary>
    public const int GroupEntries = 8;

    /// <summary>Where <paramref name="row"/>'s linear probe starts: the first entry of an aligned group of
    /// <see cref="GroupEntries"/>, picked by the top bits of a multiplicative hash. Starting on a group boundary (rather
    /// than at any entry) makes the kernels' vector probe read exactly the one cache line they prefetched; started
    /// anywhere, 7 probes in 8 straddled two lines and waited on the second. Linear probing is otherwise unchanged
    /// (8 rows share a home; at the map's half load a group overflows into the next one rarely).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Home(long row, int mapShift) => (long)(((ulong)row * 0x9E3779B97F4A7C15UL) >> mapShift) & ~(long)(GroupEntries - 1);

    /// <summary>The kernels' map probe, on locals copied out of a pinned generation: the slot mapped to
    /// <paramref name="row"/>, or -1. Readers confirm the owner inside the slot's seqlock (the slot may be reused) or
    /// validate the write epoch. The 8 entries of the home group (one cache line, <see cref="Home"/>) are compared at
    /// once: a probe then has no branch that depends on where the key sits (a scalar walk mispredicted about once per
    /// probe at the map's half load); a group with neither the key nor an empty entry continues with the scalar walk.
    /// Each 8-byte entry is naturally aligned, so the vector load reads every entry whole. At AVX-512 the matching
    /// entry is taken from that same vector (<c>vpcompressq</c> by the match mask, lane 0), so its slot comes with the
    /// key that was compared; no match gives -1 through the mask's sign (no branch on hit versus false positive), instead
    /// of a second, dependent read of the entry and its key check (about 7 instructions a probe, ~10 % of the LoRA time
    /// with most lookups adapted); the probe stops on the two compare masks. The AVX2 form has no
    /// compress: it reads the entry picked again and checks its key, so an entry that changed in between gives -1 or
    /// its new, valid slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ProbeMap(long row, long* map, int mapShift)
    {
        // A home group never runs past the map's end (capacity ≥ 8, homes are group starts), so there is no bounds
        // test; the mask is derived from the shift on the rare overflow path only, which keeps the kernels' probe
        // loop one register lighter (with the mask live it kept two of its values in stack slots, reloaded on every probe).
        long pos = Home(row, mapShift);
        if (Vector512.IsHardwareAccelerated)
        {
            var e = Vector512.Load(map + pos);
            var hit = Vector512.Equals(Vector512.ShiftRightArithmetic(e, SlotBits), Vector512.Create(row + 1));
            if ((hit | Vector512.Equals(e, Vector512<long>.Zero)) != Vector512<long>.Zero)
            {
                // Lane 0 of the compress is the matching entry, or the merge value -1 when only an empty one stopped
                // the probe: a live entry is positive ((row + 1) << 24 | slot), so its sign gives the miss.
                long entry = Avx512F.Compress(Vector512<long>.AllBitsSet, hit, e).ToScalar();
                return (int)(entry & SlotMask) | (int)(entry >> 63);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<long> e0 = Vector256.Load(map + pos), e1 = Vector256.Load(map + pos + 4), key = Vector256.Create(row + 1);
            ulong match = Vector256.Equals(Vector256.ShiftRightArithmetic(e0, SlotBits), key).ExtractMostSignificantBits()
                        | Vector256.Equals(Vector256.ShiftRightArithmetic(e1, SlotBits), key).ExtractMostSignificantBits() << 4;
            ulong empty = Vector256.Equals(e0, Vector256<long>.Zero).ExtractMostSignificantBits()
                        | Vector256.Equals(e1, Vector256<long>.Zero).ExtractMostSignificantBits() << 4;
            ulong stop = match | empty;
            if (stop != 0)
            {
                long entry = Volatile.Read(ref map[pos + BitOperations.TrailingZeroCount(stop)]);
                // Without a branch (hit or filter false positive is a coin flip at 1 % budgets): d = 0 exactly on a
                // hit, and (d | -d) has its sign bit set for any other d, so the slot is or-ed with all ones (-1).
                long d = (entry >> SlotBits) ^ (row + 1);
                return (int)(entry & SlotMask) | (int)((d | -d) >> 63);
            }
        }
        else return ProbeMapScalar(row, map, MaskOf(mapShift), pos);
        long mapMask = MaskOf(mapShift);
        return ProbeMapScalar(row, map, mapMask, (pos + GroupEntries) & mapMask);
    }

    /// <summary>capacity − 1 from the shift <see cref="Home"/> uses (64 − log2 capacity).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long MaskOf(int mapShift) => (long)(ulong.MaxValue >> mapShift);

    /// <summary>The linear-probing walk from <paramref name="pos"/>: the reference the vector probe agrees with.
    /// Inlined into <see cref="ProbeMap"/>'s callers: as a call (even on the rare path) it made the JIT keep the probe
    /// loop's state in stack slots around it, reloaded and stored on every probe.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ProbeMapScalar(long row, long* map, long mapMask, long pos)
    {
        for (; ; pos = (pos + 1) & mapMask)
        {
            long e = Volatile.Read(ref map[pos]);
            if (e == Empty) return -1;
            if (e >> SlotBits == row + 1) return (int)(e & SlotMask);
        }
    }

    /// <summary>Reader-safe probe: the slot mapped to <paramref name="row"/>, or -1. The slot may be reused for
    /// another row after this returns; readers confirm the owner inside the slot's seqlock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(long row) => MayContain(FilterPointer, FilterShift, row) ? ProbeMap(row, MapPointer, _mapShift) : -1;

    /// <summary>Trainer: map <paramref name="row"/> (known absent) to <paramref name="slot"/>, reusing the first
    /// tombstone on its probe path. The slot must already hold the row's data: the entry write is a release, so a
    /// reader that sees the entry sees the slot.</summary>
    public void InsertNew(long row, int slot)
    {
        long pos = Bucket(row), target = -1;
        while (true)
        {
            long e = MapPointer[pos];
            if (e == Empty) { if (target < 0) target = pos; break; }
            if (e == Tombstone && target < 0) target = pos;
            pos = (pos + 1) & _mapMask;
        }
        if (MapPointer[target] == Tombstone) Tombstones--;
        uint word = FilterWord(row, FilterShift);
        // Set before the entry is published; a reader that misses the bits sees the row as not yet adapted (A = 0 at
        // insertion, so that is the same effective row). Single writer: a plain read-modify-write is enough.
        Volatile.Write(ref FilterPointer[word], FilterPointer[word] | FilterBits(row));
        Volatile.Write(ref MapPointer[target], ((row + 1) << SlotBits) | (long)slot);
        Live++;
    }

    /// <summary>Trainer: a free slot for <paramref name="row"/> (known absent; a slot must be free), its A zeroed inside
    /// the slot's seqlock section so the effective row is unchanged, then mapped.</summary>
    public int Allocate(long row, long stamp, float adagradInitial)
    {
        int slot = FreeSlots[--FreeCount];
        SlotRecord* p = Record(slot);
        SlotSeqlock.BeginWrite(p);
        p->Row = row;
        new Span<float>(APointer(slot), Rank).Clear();
        SlotSeqlock.EndWrite(p);
        p->Adagrad = adagradInitial;
        p->Stamp = stamp;
        p->Touch = -1;
        p->Updates = 0;
        InsertNew(row, slot);
        return slot;
    }

    /// <summary>Trainer: replace <paramref name="row"/>'s entry by a tombstone.</summary>
    public void Remove(long row)
    {
        long key = row + 1, pos = Bucket(row);
        while (true)
        {
            long e = MapPointer[pos];
            if (e == Empty) throw new InvalidOperationException($"adapter map: row {row} is not mapped (internal error)");
            if (e >> SlotBits == key) break;
            pos = (pos + 1) & _mapMask;
        }
        Volatile.Write(ref MapPointer[pos], Tombstone);
        Live--;
        Tombstones++;
    }

    /// <summary>True when one more insert would push live + tombstones past 3/4 of the map.</summary>
    public bool MapNeedsRebuild => (Live + Tombstones + 1) * 4L > MapCapacity * 3;

    // --- write epoch, writer side: brackets every batch of slot writes and merges (the per-slot counters still
    // open and close inside it, for the per-row readers) ---

    public void BeginEpochWrite()
    {
        Volatile.Write(ref *WriteEpochPointer, *WriteEpochPointer + 1);   // odd: blocks that overlap this are redone
        Volatile.WriteBarrier();
    }

    public void EndEpochWrite() => Volatile.Write(ref *WriteEpochPointer, *WriteEpochPointer + 1);

    public void Free()
    {
        Map.Dispose();
        Filter.Dispose();
        if (OwnsPool) Pool.Dispose();
    }
}
