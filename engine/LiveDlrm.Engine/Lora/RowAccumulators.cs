namespace LiveDlrm.Lora;

/// <summary>
/// Row-wise Adagrad accumulators of every row of one table, kept beside the table so that an adapter row starts
/// from the optimizer state its base row already has instead of from scratch (<see cref="TableAdapter.RowState"/>).
/// <para>Why: the base trainer's row-wise Adagrad leaves a large accumulator on a row it trained often (its steps
/// are small now) and none on a row it never saw (a new item: its first steps are large). An adapter that restarts
/// every row from one constant moves well-trained rows as far as unseen ones; on a long, sparse stream where most
/// rows are seen again only weeks later that undoes what the base learned (docs/replay.md, "Why the live defaults
/// are what they are"). A merged row writes its accumulator back here, so a row re-admitted later continues it.</para>
/// <para>The A-row gradient g·Bᵀ has about the row gradient's mean square per coordinate when B's rows have norm
/// ~1 (B's initial scale), so the base's values carry over as they are. Trainer thread only.</para>
/// </summary>
internal sealed class RowAccumulators
{
    readonly float[] _values;

    /// <param name="values">One accumulator per table row (owned from now on); every value finite and ≥ 0.</param>
    public RowAccumulators(float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        foreach (float v in values)
            if (!(v >= 0) || !float.IsFinite(v)) throw new ArgumentException("row accumulators must be finite and ≥ 0", nameof(values));
        _values = values;
    }

    public long Rows => _values.Length;
    /// <summary>Memory the state takes beside the table (4 bytes a row).</summary>
    public long Bytes => (long)_values.Length * sizeof(float);

    /// <summary>Every row's accumulator, in row order (for saving it with the adapters).</summary>
    public ReadOnlySpan<float> Values => _values;

    public float this[long row]
    {
        get => _values[row];
        set => _values[row] = value;
    }
}
