namespace LiveDlrm.Embeddings;

/// <summary>How a table stores its rows.</summary>
internal enum EmbeddingStorage
{
    Fp32,
    /// <summary>IEEE half per element; widened to fp32 in the kernels.</summary>
    Fp16,
    /// <summary>FBGEMM's 8-bit rowwise layout: <c>[uint8 × dim][fp32 scale][fp32 bias]</c>, value = q·scale + bias.</summary>
    Int8Rowwise,
}

/// <summary>How the rows of a bag are pooled into one output row.</summary>
internal enum PoolingMode
{
    Sum,
    /// <summary>Sum divided by the bag's length (an empty bag gives zeros).</summary>
    Mean,
    /// <summary>Σ weights[j]·row[indices[j]]; requires per-sample weights.</summary>
    WeightedSum,
}
