namespace LiveDlrm.Lora;

/// <summary>Saving and restoring an adapter's trained state, for a serving node that must survive a restart.</summary>
internal sealed unsafe partial class TableAdapter
{
    const int StateFormat = 2;
    const long MaxRngDraws = 1L << 36;   // far above any real count (a B draw is rank × dim values); bounds the replay

    /// <summary>Trainer: writes everything training has changed — rank, B and its Adagrad state, every live slot
    /// (slot number, row, row-wise Adagrad accumulator, update stamp, A) and the step counters — so that
    /// <see cref="ReadState"/> on an adapter with the same table shape and options continues bit for bit, including
    /// the random generator of B's growth directions (as the count of values drawn from its seed: a restore replays
    /// them) and the order of the free slots. Not written: <see cref="History"/>. Rows already merged into the base table are the table's business,
    /// not this one.
    /// Must not run concurrently with training (the single-writer guard refuses it).</summary>
    public void WriteState(BinaryWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        EnterWriter();
        try
        {
            var g = Current;
            w.Write(StateFormat);
            w.Write(Table.Name);
            w.Write(Table.Rows);
            w.Write(Table.Dim);
            w.Write(g.Rank);
            w.Write(g.SlotCapacity);
            w.Write(_clock);
            w.Write(Step);
            w.Write(MergedRows);
            w.Write(RejectedSteps);
            w.Write(DroppedRowUpdates);
            w.Write(_rngDraws);
            WriteFloats(w, g.B);
            WriteFloats(w, g.BAdagrad);
            w.Write(g.Live);
            for (int s = 0; s < g.SlotCapacity; s++)
            {
                SlotRecord* p = g.Record(s);
                if (!p->IsLive) continue;
                w.Write(s);
                w.Write(p->Row);
                w.Write(p->Adagrad);
                w.Write(p->Stamp);
                w.Write(new ReadOnlySpan<byte>(g.APointer(s), g.Rank * sizeof(float)));
            }
            // The free list in pop order: which slot the next new row takes decides the order of later sums over
            // slots, so a restore that continues bit for bit needs it.
            w.Write(g.FreeCount);
            for (int k = 0; k < g.FreeCount; k++) w.Write(g.FreeSlots[k]);
        }
        finally { ExitWriter(); }
    }

    /// <summary>Trainer: replaces this adapter's state with one written by <see cref="WriteState"/> and publishes it
    /// as a new generation (readers switch at their next batch). Throws <see cref="InvalidDataException"/> naming
    /// what does not fit (another table, shape or budget, a row out of range, a non-finite value) before anything
    /// is changed.</summary>
    public void ReadState(BinaryReader r)
    {
        ArgumentNullException.ThrowIfNull(r);
        EnterWriter();
        try
        {
            string where = $"adapter state of table '{Table.Name}'";
            int format = r.ReadInt32();
            if (format != StateFormat) throw new InvalidDataException($"{where}: format {format}, this engine reads {StateFormat} (saved by another version: start from fresh adapters)");
            string name = r.ReadString();
            long rows = r.ReadInt64();
            int dim = r.ReadInt32();
            if (name != Table.Name || rows != Table.Rows || dim != Table.Dim)
                throw new InvalidDataException($"{where}: saved for table '{name}' ({rows} × {dim}), this table is {Table.Rows} × {Table.Dim}");
            int rank = r.ReadInt32();
            int slotCapacity = r.ReadInt32();
            if (rank < Options.MinRank || rank > Options.MaxRank)
                throw new InvalidDataException($"{where}: rank {rank} is outside this adapter's [{Options.MinRank}, {Options.MaxRank}]");
            var (slots, mapCapacity) = SizeFor(SlotBudgetBytes, rank, dim);
            if (slots != slotCapacity)
                throw new InvalidDataException($"{where}: {slotCapacity} slots at rank {rank}, this adapter's budget gives {slots} (different budget options?)");
            long clock = r.ReadInt64(), step = r.ReadInt64(), merged = r.ReadInt64(), rejected = r.ReadInt64(), dropped = r.ReadInt64();
            long draws = r.ReadInt64();
            if (draws < 0 || draws > MaxRngDraws || draws % 2 != 0) throw new InvalidDataException($"{where}: {draws} random draws is not a generator state");
            var b = ReadFloats(r, rank * dim, where + ": B");
            var bAdagrad = ReadFloats(r, rank * dim, where + ": B Adagrad state");
            int live = r.ReadInt32();
            if (live < 0 || live > slotCapacity) throw new InvalidDataException($"{where}: {live} live slots in a pool of {slotCapacity}");
            var next = AdapterGeneration.CreateEmpty(_version + 1, rank, dim, slotCapacity, mapCapacity, b);
            try
            {
                bAdagrad.CopyTo(next.BAdagrad, 0);
                var used = new bool[slotCapacity];
                var a = new float[rank];
                for (int k = 0; k < live; k++)
                {
                    int s = r.ReadInt32();
                    long row = r.ReadInt64();
                    float adagrad = r.ReadSingle();
                    long stamp = r.ReadInt64();
                    for (int j = 0; j < rank; j++) a[j] = r.ReadSingle();
                    if ((uint)s >= (uint)slotCapacity || used[s]) throw new InvalidDataException($"{where}: slot {s} is out of range or given twice");
                    if ((ulong)row >= (ulong)Table.Rows || next.Find(row) >= 0) throw new InvalidDataException($"{where}: row {row} is out of range or given twice");
                    if (!LoraMath.AllFinite(a) || !float.IsFinite(adagrad)) throw new InvalidDataException($"{where}: row {row} has a non-finite value");
                    used[s] = true;
                    SlotRecord* p = next.Record(s);
                    p->Row = row;
                    p->Adagrad = adagrad;
                    p->Stamp = stamp;
                    p->Touch = -1;
                    p->Updates = 0;
                    a.CopyTo(new Span<float>(next.APointer(s), rank));
                    next.InsertNew(row, s);
                }
                int free = r.ReadInt32();
                if (free != slotCapacity - live) throw new InvalidDataException($"{where}: {free} free slots beside {live} live ones in a pool of {slotCapacity}");
                for (int k = 0; k < free; k++)
                {
                    int s = r.ReadInt32();
                    if ((uint)s >= (uint)slotCapacity || used[s]) throw new InvalidDataException($"{where}: free slot {s} is out of range, live or given twice");
                    used[s] = true;
                    next.FreeSlots[k] = s;
                }
                next.FreeCount = free;
            }
            catch
            {
                next.Free();
                throw;
            }
            _version++;
            Publish(next);
            _clock = clock;
            Step = step;
            _merger.MergedRows = merged;
            RejectedSteps = rejected;
            DroppedRowUpdates = dropped;
            _rng = new Random(Options.Seed);
            for (long d = 0; d < draws; d++) _rng.NextDouble();
            _rngDraws = draws;
        }
        finally { ExitWriter(); }
    }

    static void WriteFloats(BinaryWriter w, float[] values)
    {
        w.Write(values.Length);
        fixed (float* p = values) w.Write(new ReadOnlySpan<byte>(p, values.Length * sizeof(float)));
    }

    static float[] ReadFloats(BinaryReader r, int expected, string what)
    {
        int n = r.ReadInt32();
        if (n != expected) throw new InvalidDataException($"{what}: {n} values, expected {expected}");
        var values = new float[n];
        fixed (float* p = values)
            if (r.Read(new Span<byte>(p, n * sizeof(float))) != n * sizeof(float)) throw new EndOfStreamException($"{what}: truncated");
        if (!LoraMath.AllFinite(values)) throw new InvalidDataException($"{what}: a value is not finite");
        return values;
    }
}
