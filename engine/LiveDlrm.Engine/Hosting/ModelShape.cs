namespace LiveDlrm.Hosting;

/// <summary>The shape of a DLRM for <see cref="HostedModel.WriteInitialCheckpoint"/>: dense input width, the
/// embedding tables (all of <paramref name="EmbeddingDim"/> columns, fp32, sum-pooled), the bottom MLP (its last
/// width is <paramref name="EmbeddingDim"/>; empty when there are no dense features) and the top MLP (ending in 1).
/// Immutable.</summary>
public sealed record ModelShape(int DenseFeatures, IReadOnlyList<TableShape> Tables, int EmbeddingDim, IReadOnlyList<int> BottomMlp, IReadOnlyList<int> TopMlp);

/// <summary>One embedding table of a <see cref="ModelShape"/>: its name (also the sparse feature's) and row count.</summary>
public sealed record TableShape(string Name, long Rows);
