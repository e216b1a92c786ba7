using LiveDlrm.Embeddings;

namespace LiveDlrm.Model;

/// <summary>Independent copies of a model: every replay mode and every live model built from a trained base starts
/// from the same weights without sharing memory with it.</summary>
internal static unsafe class ModelCopy
{
    /// <summary>A deep copy of <paramref name="source"/> (tables byte for byte, dense parameters) serving through
    /// <paramref name="backend"/> (owned by the copy).</summary>
    public static DlrmModel Clone(DlrmModel source, IEmbeddingBackend backend)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(backend);
        var tables = new List<EmbeddingTable>();
        DlrmDenseNet? dense = null;
        try
        {
            foreach (var t in source.Tables)
            {
                var copy = EmbeddingTable.Create(t.Name, t.Rows, t.Dim, t.Storage);
                tables.Add(copy);
                long bytes = t.Rows * t.RowStride;
                Buffer.MemoryCopy(t.DataPointer, copy.DataPointer, bytes, bytes);
            }
            dense = new DlrmDenseNet(source.Config);
            dense.CopyFrom(source.Dense);
            return new DlrmModel(source.Config, tables, dense, backend);
        }
        catch
        {
            foreach (var t in tables) t.Dispose();
            dense?.Dispose();
            throw;
        }
    }

    /// <summary>The CPU kernels on the calling thread only (a worker pool of 0 threads): costs measured with thread
    /// CPU clocks (the replay) must not have lookup work hiding on other threads.</summary>
    public static IEmbeddingBackend InlineCpuBackend() => new CpuEmbeddingBackend(new EmbeddingWorkerPool(0), ownsPool: true);
}
