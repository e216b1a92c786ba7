using LiveDlrm.Embeddings;
using TorchSharp;

namespace LiveDlrm.Perf.Lookup;

/// <summary>Builds the benchmark tables from the fp32 weight tensor TorchSharp uses, faster than
/// <see cref="EmbeddingTable.FromTensor"/> for a 1 GiB table on a busy machine: fp32 rows are copied in large
/// contiguous chunks, fp16/int8 rows are quantised from the fp32 table on all cores (<see cref="EmbeddingTable.WriteRow"/>,
/// so exactly the engine's quantisation).</summary>
static unsafe class BenchTables
{
    const long ChunkRows = 1 << 18;

    public static EmbeddingTable Fp32(string name, torch.Tensor weights)
    {
        long rows = weights.shape[0];
        int dim = checked((int)weights.shape[1]);
        var table = EmbeddingTable.Create(name, rows, dim, EmbeddingStorage.Fp32);
        for (long start = 0; start < rows; start += ChunkRows)
        {
            long n = Math.Min(ChunkRows, rows - start);
            using var part = weights.narrow(0, start, n).contiguous();
            part.data<float>().CopyTo(new Span<float>(table.DataPointer + start * table.RowStride, checked((int)(n * dim))));
        }
        return table;
    }

    public static EmbeddingTable Quantised(string name, EmbeddingTable fp32, EmbeddingStorage storage)
    {
        var table = EmbeddingTable.Create(name, fp32.Rows, fp32.Dim, storage);
        long chunks = (fp32.Rows + ChunkRows - 1) / ChunkRows;
        Parallel.For(0L, chunks, c =>
        {
            long end = Math.Min(fp32.Rows, (c + 1) * ChunkRows);
            for (long r = c * ChunkRows; r < end; r++)
                table.WriteRow(r, new ReadOnlySpan<float>(fp32.DataPointer + r * fp32.RowStride, fp32.Dim));
        });
        return table;
    }
}
