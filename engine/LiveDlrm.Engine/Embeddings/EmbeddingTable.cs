using System.Runtime.InteropServices;
using LiveDlrm.Memory;
using TorchSharp;

namespace LiveDlrm.Embeddings;

/// <summary>A rows × dim embedding table in native memory. Rows are stored back to back with
/// <see cref="RowStride"/> bytes each: fp32 (4·dim), fp16 (2·dim) or FBGEMM's 8-bit rowwise layout
/// (<c>[uint8 × dim][fp32 scale][fp32 bias]</c>, dim + 8 bytes). The table itself is not synchronised: concurrent
/// readers are fine; writers (training, merges) coordinate at a higher level.</summary>
internal sealed unsafe class EmbeddingTable : IDisposable
{
    readonly NativeBuffer _buffer;

    public string Name { get; }
    public long Rows { get; }
    public int Dim { get; }
    public EmbeddingStorage Storage { get; }
    public int RowStride { get; }
    public long ByteSize => Rows * RowStride;

    /// <summary>The software-prefetch distance the plain lookups of this table use (<see cref="PrefetchTuner"/>).</summary>
    internal PrefetchTuner Prefetch { get; }

    /// <summary>The prefetch distance this table's lookups use now (tuned from its own lookups; docs/kernels.md).</summary>
    public int PrefetchDistance => Prefetch.Chosen;

    EmbeddingTable(string name, long rows, int dim, EmbeddingStorage storage)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"table '{name}': rows must be positive");
        if (dim <= 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, $"table '{name}': dim must be positive");
        Name = name;
        Rows = rows;
        Dim = dim;
        Storage = storage;
        RowStride = StrideOf(dim, storage);
        Prefetch = new PrefetchTuner(EmbeddingKernels.DefaultPrefetchDistanceFor(storage));
        long bytes = rows > long.MaxValue / RowStride ? -1 : rows * RowStride;
        Memory.MemoryBudget.Check($"table '{name}' ({rows} rows × {RowStride} bytes)", bytes);
        _buffer = NativeBuffer.Allocate(bytes);
    }

    public static int StrideOf(int dim, EmbeddingStorage storage) => storage switch
    {
        EmbeddingStorage.Fp32 => checked(dim * sizeof(float)),
        EmbeddingStorage.Fp16 => checked(dim * 2),
        EmbeddingStorage.Int8Rowwise => checked(dim + 2 * sizeof(float)),
        _ => throw new ArgumentOutOfRangeException(nameof(storage), storage, "unknown embedding storage"),
    };

    /// <summary>A zero-filled table (for int8 rows: scale 0 and bias 0, i.e. value 0).</summary>
    public static EmbeddingTable Create(string name, long rows, int dim, EmbeddingStorage storage) => new(name, rows, dim, storage);

    /// <summary>A table from row-major fp32 values, quantised to <paramref name="storage"/>.</summary>
    public static EmbeddingTable FromFp32(string name, ReadOnlySpan<float> rowMajor, int dim, EmbeddingStorage storage)
    {
        if (dim <= 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, $"table '{name}': dim must be positive");
        if (rowMajor.Length == 0 || rowMajor.Length % dim != 0)
            throw new ArgumentException($"table '{name}': {rowMajor.Length} values is not a positive multiple of dim {dim}", nameof(rowMajor));
        var table = new EmbeddingTable(name, rowMajor.Length / dim, dim, storage);
        for (long r = 0; r < table.Rows; r++) table.WriteRow(r, rowMajor.Slice((int)(r * dim), dim));
        return table;
    }

    /// <summary>A table from a 2-D float32 CPU tensor (rows × dim), copied in row chunks so tables above 2 GiB work.</summary>
    public static EmbeddingTable FromTensor(string name, torch.Tensor weight, EmbeddingStorage storage)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2) throw new ArgumentException($"table '{name}': expected a 2-D tensor, got shape [{string.Join(", ", weight.shape)}]", nameof(weight));
        if (weight.dtype != torch.ScalarType.Float32) throw new ArgumentException($"table '{name}': expected float32, got {weight.dtype}", nameof(weight));
        long rows = weight.shape[0];
        int dim = checked((int)weight.shape[1]);
        var table = new EmbeddingTable(name, rows, dim, storage);
        long chunk = Math.Max(1, (1 << 24) / dim);
        var scratch = new float[checked((int)Math.Min(chunk, rows) * dim)];
        using var scope = torch.NewDisposeScope();
        for (long start = 0; start < rows; start += chunk)
        {
            long n = Math.Min(chunk, rows - start);
            using var part = weight.narrow(0, start, n).contiguous();
            part.data<float>().CopyTo(scratch.AsSpan(0, (int)(n * dim)));
            for (long r = 0; r < n; r++) table.WriteRow(start + r, scratch.AsSpan((int)(r * dim), dim));
        }
        return table;
    }

    internal byte* RowPointer(long row) => _buffer.Pointer + row * RowStride;

    /// <summary>Base address of row 0 (valid while the table is alive).</summary>
    internal byte* DataPointer => _buffer.Pointer;

    /// <summary>The raw stored bytes of one row (<see cref="RowStride"/> long).</summary>
    public Span<byte> StoredRow(long row)
    {
        CheckRow(row);
        return new Span<byte>(RowPointer(row), RowStride);
    }

    /// <summary>Row <paramref name="row"/> dequantised to fp32.</summary>
    public void ReadRow(long row, Span<float> destination)
    {
        CheckRow(row);
        if (destination.Length < Dim) throw new ArgumentException($"table '{Name}': destination holds {destination.Length} floats, row has {Dim}", nameof(destination));
        byte* p = RowPointer(row);
        switch (Storage)
        {
            case EmbeddingStorage.Fp32:
                new ReadOnlySpan<float>(p, Dim).CopyTo(destination);
                break;
            case EmbeddingStorage.Fp16:
                var h = new ReadOnlySpan<Half>(p, Dim);
                for (int i = 0; i < Dim; i++) destination[i] = (float)h[i];
                break;
            case EmbeddingStorage.Int8Rowwise:
                float scale = *(float*)(p + Dim), bias = *(float*)(p + Dim + 4);
                for (int i = 0; i < Dim; i++) destination[i] = p[i] * scale + bias;
                break;
        }
    }

    /// <summary>Writes fp32 values into row <paramref name="row"/>, quantising for fp16 / int8 storage.
    /// Non-finite values are rejected: a NaN in a table would silently poison every bag that touches it.</summary>
    public void WriteRow(long row, ReadOnlySpan<float> values)
    {
        CheckRow(row);
        if (values.Length != Dim) throw new ArgumentException($"table '{Name}': row {row} needs {Dim} values, got {values.Length}", nameof(values));
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) throw new ArgumentException($"table '{Name}': row {row} value {i} is {values[i]} (not finite)", nameof(values));
            else if (Storage == EmbeddingStorage.Fp16 && Math.Abs(values[i]) >= Fp16Overflow)
                throw new ArgumentException($"table '{Name}': row {row} value {i} is {values[i]}, beyond fp16's range (±65504)", nameof(values));
        byte* p = RowPointer(row);
        switch (Storage)
        {
            case EmbeddingStorage.Fp32:
                values.CopyTo(new Span<float>(p, Dim));
                break;
            case EmbeddingStorage.Fp16:
                var h = new Span<Half>(p, Dim);
                for (int i = 0; i < Dim; i++) h[i] = (Half)values[i];
                break;
            case EmbeddingStorage.Int8Rowwise:
                QuantizeInt8Row(values, new Span<byte>(p, Dim), out *(float*)(p + Dim), out *(float*)(p + Dim + 4));
                break;
        }
    }

    /// <summary>Smallest magnitude that rounds to infinity in fp16 (65504 + half an ulp of 32).</summary>
    const float Fp16Overflow = 65520f;

    /// <summary>8-bit rowwise quantisation: bias = min, scale = (max − min) / 255, q = round((v − bias) / scale).
    /// A constant row gets scale 0 so it dequantises exactly to its value.</summary>
    public static void QuantizeInt8Row(ReadOnlySpan<float> values, Span<byte> q, out float scale, out float bias)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in values) { min = Math.Min(min, v); max = Math.Max(max, v); }
        bias = min;
        float range = max - min;
        scale = range > 0 ? range / 255f : 0f;
        float inv = range > 0 ? 255f / range : 0f;
        for (int i = 0; i < values.Length; i++)
            q[i] = (byte)Math.Clamp(MathF.Round((values[i] - min) * inv), 0f, 255f);
    }

    void CheckRow(long row)
    {
        if ((ulong)row >= (ulong)Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"table '{Name}': row {row} is outside [0, {Rows})");
    }

    public bool IsDisposed => _buffer.IsClosed;

    /// <summary>Whether the rows live in a mapping advised for 2 MiB pages (large tables on Linux).</summary>
    public bool HugePagesAdvised => _buffer.HugePagesAdvised;

    public void Dispose() => _buffer.Dispose();

    public override string ToString() => $"{Name} [{Rows} × {Dim} {Storage}, {ByteSize / (1024.0 * 1024.0):F1} MiB]";
}
