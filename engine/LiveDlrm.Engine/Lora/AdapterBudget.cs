namespace LiveDlrm.Lora;

/// <summary>How an adapter's byte budget (a fraction of its table's bytes) becomes a generation's shape: every
/// generation (<see cref="AdapterGeneration.Bytes"/>) fits it, at every rank the adapter moves to.</summary>
internal static class AdapterBudget
{
    /// <summary>Largest slot count (and its map capacity) whose pool + map + filter + B + B optimizer state + free list fit in
    /// <paramref name="budget"/> bytes at <paramref name="rank"/>, with the map at most half full of live entries.</summary>
    public static (int Slots, long MapCapacity) SizeFor(long budget, int rank, int dim)
    {
        long fixedBytes = 2L * rank * dim * sizeof(float);
        long perSlot = SlotLayout.BytesPerSlot(rank) + sizeof(int);
        long bestSlots = 0, bestCapacity = 0;
        for (long capacity = AdapterGeneration.GroupEntries; capacity <= 1L << 26; capacity <<= 1)
        {
            long rest = budget - fixedBytes - AdapterGeneration.MapBytes(capacity) - AdapterGeneration.FilterBytes(capacity);
            if (rest < perSlot) break;
            long n = Math.Min(Math.Min(capacity / 2, rest / perSlot), AdapterGeneration.SlotMask);
            if (n > bestSlots) { bestSlots = n; bestCapacity = capacity; }
        }
        return ((int)bestSlots, bestCapacity);
    }
}
