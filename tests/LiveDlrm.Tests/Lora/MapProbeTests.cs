using LiveDlrm.Embeddings;
using LiveDlrm.Lora;

namespace LiveDlrm.Tests.Lora;

/// <summary>The kernels' map probe compares 8 entries at once; the scalar linear-probing walk is its reference. The
/// presence filter in front of it must never reject a mapped row.</summary>
internal class MapProbeTests
{
    /// <summary>An adapter filled to its slot capacity at the 1 % budget (the sizing the kernels see): every mapped row
    /// passes the filter, and absent rows pass it rarely — the two-bit word filter's false-positive rate, which sets
    /// how many lookups pay a map probe for nothing.</summary>
    [Test]
    public unsafe void TheFilterPassesEveryMappedRowAndFewOthers()
    {
        using var table = EmbeddingTable.Create("filter", 1 << 20, 64, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 16, MaxRank = 16 });
        var rng = new Random(5);
        var rows = new HashSet<long>();
        var a = new float[16];
        while (rows.Count < adapter.SlotCapacity)
        {
            long r = rng.NextInt64(table.Rows);
            if (rows.Add(r)) adapter.SetRow(r, a);
        }
        var g = adapter.Pin();
        try
        {
            foreach (long r in rows) Assert.That(AdapterGeneration.MayContain(g.FilterPointer, g.FilterShift, r), $"mapped row {r} rejected by the filter");
            int passed = 0, tried = 0;
            for (long r = 0; r < table.Rows; r += 3)
                if (!rows.Contains(r)) { tried++; if (AdapterGeneration.MayContain(g.FilterPointer, g.FilterShift, r)) passed++; }
            double rate = (double)passed / tried;
            TestContext.Out.WriteLine($"{rows.Count} rows mapped; false positives {rate:P2} of {tried} absent rows");
            Assert.That(rate, Is.LessThan(0.02), "the two-bit filter should pass about 1 % of absent rows at this load");
        }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>The kernels prefetch one cache line per candidate and read 8 entries from it: that holds only if the map
    /// is 64-byte aligned and every home is the first entry of an 8-entry group.</summary>
    [Test]
    public unsafe void EveryHomeGroupIsOneCacheLine()
    {
        using var table = EmbeddingTable.Create("groups", 1 << 20, 64, EmbeddingStorage.Fp32);
        using var adapter = new TableAdapter(table, new AdapterOptions { InitialRank = 16, MaxRank = 16 });
        var g = adapter.Pin();
        try
        {
            Assert.That((nuint)g.MapPointer % 64, Is.EqualTo((nuint)0), "map not 64-byte aligned");
            int shift = 64 - System.Numerics.BitOperations.Log2((ulong)g.MapCapacity);
            var rng = new Random(9);
            for (int i = 0; i < 10_000; i++)
            {
                long row = rng.NextInt64(table.Rows), home = AdapterGeneration.Home(row, shift);
                Assert.That(home % AdapterGeneration.GroupEntries, Is.EqualTo(0), $"row {row}: home {home} is not a group start");
                Assert.That(home, Is.InRange(0, g.MapCapacity - AdapterGeneration.GroupEntries), $"row {row}: home {home} outside the map");
                Assert.That(g.Bucket(row), Is.EqualTo(home), "the trainer's bucket and the kernels' home differ");
            }
        }
        finally { TableAdapter.Unpin(g); }
    }

    /// <summary>Maps crowded around a few home groups (runs longer than a group, tombstones inside runs, runs that wrap
    /// past the end of the map), probed for present rows, absent rows whose home is inside a run, and tombstoned rows:
    /// the vector probe must give exactly the scalar walk's answer.</summary>
    [Test]
    public unsafe void TheVectorProbeAgreesWithTheScalarWalk([Values(16, 64, 1024)] int capacity)
    {
        int shift = 64 - System.Numerics.BitOperations.Log2((ulong)capacity);
        long mask = capacity - 1;
        long Home(long row) => AdapterGeneration.Home(row, shift);
        var rng = new Random(capacity);
        for (int trial = 0; trial < 50; trial++)
        {
            var map = new long[capacity];
            var present = new List<long>();
            var removed = new List<long>();
            // Rows chosen so that most share a few home groups, including the last one (its overflow wraps to entry 0).
            int[] hotHomes = { 0, capacity / 2, capacity - AdapterGeneration.GroupEntries };
            int wanted = capacity / 2 - 1;
            for (long row = rng.Next(1000); present.Count < wanted; row += 1 + rng.Next(7))
            {
                long home = Home(row);
                bool near = hotHomes.Contains((int)home);
                if (!near && rng.Next(4) != 0) continue;
                long pos = home;
                while (map[pos] != AdapterGeneration.Empty) pos = (pos + 1) & mask;
                map[pos] = ((row + 1) << AdapterGeneration.SlotBits) | (long)present.Count;
                present.Add(row);
            }
            // Tombstone a fifth of them (deletion never moves entries).
            foreach (long row in present.Where((_, i) => i % 5 == 0).ToList())
            {
                long pos = Home(row);
                while (map[pos] >> AdapterGeneration.SlotBits != row + 1) pos = (pos + 1) & mask;
                map[pos] = AdapterGeneration.Tombstone;
                removed.Add(row);
            }
            var queries = present.Concat(removed).Concat(Enumerable.Range(0, 200).Select(_ => (long)rng.Next(1_000_000)));
            fixed (long* m = map)
                foreach (long row in queries)
                {
                    int expected = AdapterGeneration.ProbeMapScalar(row, m, mask, Home(row));
                    int actual = AdapterGeneration.ProbeMap(row, m, shift);
                    Assert.That(actual, Is.EqualTo(expected), $"capacity {capacity}, trial {trial}, row {row} (home {Home(row)})");
                    if (removed.Contains(row)) Assert.That(actual, Is.EqualTo(-1), $"tombstoned row {row} was found");
                    else if (present.Contains(row)) Assert.That(actual, Is.EqualTo(present.IndexOf(row)), $"row {row} not found");
                }
        }
    }
}
