namespace LiveDlrm.Lora;

/// <summary>Hears the merges of a <see cref="TableAdapter"/> (eviction, <see cref="TableAdapter.MergeOldest"/>,
/// <see cref="TableAdapter.MergeAll"/>, rank-change evictions) once per merge batch, on the trainer thread: used to
/// push merged base rows to a copy of the table kept elsewhere (DPU MRAM). Between the two calls the adapter writes
/// each merged row's W + A·B into the table and drops its A, one row at a time.</summary>
internal interface IAdapterMergeObserver
{
    /// <summary>Before the batch's first row is written into the base table.</summary>
    void MergeStarting(TableAdapter adapter);

    /// <summary>After the batch (also when it stopped on an exception): <paramref name="rows"/> are the rows whose
    /// base values now include their former adapter update and whose A is gone.</summary>
    void MergeFinished(TableAdapter adapter, ReadOnlySpan<long> rows);
}
