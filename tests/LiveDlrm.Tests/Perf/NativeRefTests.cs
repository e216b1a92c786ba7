using LiveDlrm.Embeddings;
using LiveDlrm.Interop;

namespace LiveDlrm.Tests.Perf;

/// <summary>The native C reference gather (native/ref, the benchmarks' "machine limit") computes the same bags as
/// <see cref="EmbeddingBagReference"/> on every ISA path compiled into it, and reports bad input by status.</summary>
internal unsafe class NativeRefTests
{
    [OneTimeSetUp]
    public void LibraryIsBuilt() =>
        Assert.That(NativeLibraries.IsAvailable(Libraries.KernelRef), Is.True,
            "liblivedlrm_ref.so was not found next to the tests: build with ./build.sh build (CMake builds native/ref)");

    /// <summary>Every ISA compiled into the library, as the names the tests show (scalar, avx2, avx512).</summary>
    static IEnumerable<string> CompiledIsas()
    {
        if (!NativeLibraries.IsAvailable(Libraries.KernelRef)) yield break;
        for (var isa = KernelRef.Isa.Scalar; isa <= KernelRef.BestIsa(); isa++) yield return isa.ToString().ToLowerInvariant();
    }

    static KernelRef.Isa IsaOf(string name) => Enum.Parse<KernelRef.Isa>(name, ignoreCase: true);

    static KernelRef.DType DTypeOf(EmbeddingStorage s) => s switch
    {
        EmbeddingStorage.Fp32 => KernelRef.DType.Fp32,
        EmbeddingStorage.Fp16 => KernelRef.DType.Fp16,
        _ => KernelRef.DType.Int8Rowwise,
    };

    static EmbeddingTable RandomTable(long rows, int dim, EmbeddingStorage storage, int seed)
    {
        var random = new Random(seed);
        var values = new float[rows * dim];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return EmbeddingTable.FromFp32("native-ref-test", values, dim, storage);
    }

    /// <summary>Random CSR batch with some empty bags.</summary>
    static (long[] Indices, long[] Offsets) RandomBatch(long rows, int bags, int seed)
    {
        var random = new Random(seed);
        var offsets = new long[bags + 1];
        var indices = new List<long>();
        for (int b = 0; b < bags; b++)
        {
            int length = b % 4 == 2 ? 0 : random.Next(1, 12);
            for (int k = 0; k < length; k++) indices.Add(random.NextInt64(rows));
            offsets[b + 1] = indices.Count;
        }
        return (indices.ToArray(), offsets);
    }

    /// <summary>Calls the native gather for bags [begin, end) into output.</summary>
    static KernelRef.Status Gather(EmbeddingTable table, KernelRef.Isa isa, long[] indices, long[] offsets, int begin, int end,
                                   int prefetch, float[] output, out long errorPosition)
    {
        fixed (long* ix = indices) fixed (long* off = offsets) fixed (float* o = output)
        {
            long error;
            var status = KernelRef.BagSum(DTypeOf(table.Storage), isa, table.DataPointer, table.Rows, table.Dim, ix, off, begin, end, prefetch, o, &error);
            errorPosition = error;
            return status;
        }
    }

    [Test]
    public void EveryIsaEqualsTheReference(
        [ValueSource(nameof(CompiledIsas))] string isaName,
        [Values] EmbeddingStorage storage,
        [Values(1, 3, 16, 17, 64, 100, 128)] int dim,
        [Values(0, 8)] int prefetch)
    {
        var isa = IsaOf(isaName);
        const long rows = 301;
        const int bags = 37;
        using var table = RandomTable(rows, dim, storage, seed: dim);
        var (indices, offsets) = RandomBatch(rows, bags, seed: dim + 1);
        var expected = new float[bags * dim];
        EmbeddingBagReference.Forward(table, indices, offsets, expected);

        var actual = new float[bags * dim + 1];
        actual[^1] = 12345f;   // sentinel past the output
        // Two ranges, as two worker threads would split the batch.
        Assert.That(Gather(table, isa, indices, offsets, 0, 19, prefetch, actual, out _), Is.EqualTo(KernelRef.Status.Ok));
        Assert.That(Gather(table, isa, indices, offsets, 19, bags, prefetch, actual, out _), Is.EqualTo(KernelRef.Status.Ok));

        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5f * (1 + Math.Abs(expected[i]))), $"value {i} (bag {i / dim}, column {i % dim})");
        Assert.That(actual[^1], Is.EqualTo(12345f), "wrote past the last bag");
    }

    [Test]
    public void BadIndexIsReportedWithItsPosition(
        [ValueSource(nameof(CompiledIsas))] string isaName,
        [Values(-1L, 50L, long.MaxValue)] long bad)
    {
        var isa = IsaOf(isaName);
        using var table = RandomTable(50, 16, EmbeddingStorage.Fp32, seed: 7);
        var (indices, offsets) = RandomBatch(50, 8, seed: 8);
        int position = (int)offsets[5];
        indices[position] = bad;
        var output = new float[8 * 16];
        Assert.That(Gather(table, isa, indices, offsets, 0, 8, prefetch: 4, output, out long errorPosition), Is.EqualTo(KernelRef.Status.BadIndex));
        Assert.That(errorPosition, Is.EqualTo(position));
    }

    [Test]
    public void BadArgumentsAreRejectedBeforeWriting()
    {
        using var table = RandomTable(10, 4, EmbeddingStorage.Fp32, seed: 3);
        long[] indices = [1, 2, 3], offsets = [0, 2, 3], decreasing = [0, 3, 2];
        var output = new float[8];
        Array.Fill(output, -7f);
        Assert.Multiple(() =>
        {
            Assert.That(Gather(table, KernelRef.Isa.Best, indices, offsets, 0, 2, prefetch: -1, output, out _), Is.EqualTo(KernelRef.Status.BadArgument));
            Assert.That(Gather(table, KernelRef.Isa.Best, indices, offsets, 2, 1, prefetch: 0, output, out _), Is.EqualTo(KernelRef.Status.BadArgument));
            Assert.That(Gather(table, (KernelRef.Isa)17, indices, offsets, 0, 2, prefetch: 0, output, out _), Is.EqualTo(KernelRef.Status.BadArgument));
            Assert.That(Gather(table, KernelRef.Isa.Best, indices, decreasing, 0, 2, prefetch: 0, output, out long at), Is.EqualTo(KernelRef.Status.BadOffsets));
            Assert.That(at, Is.EqualTo(2));
            Assert.That(output, Is.All.EqualTo(-7f));
        });
    }
}
