using LiveDlrm.Memory;
using LiveDlrm.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Training;

/// <summary>An in-memory copy of a model's weights (tables as stored, dense parameters) that can be put back:
/// early stopping keeps the best epoch's weights with it. Costs the model's size in native memory.</summary>
internal sealed unsafe class ModelSnapshot : IDisposable
{
    readonly DlrmModel _model;
    readonly NativeBuffer[] _tables;
    readonly Tensor[] _dense;

    public ModelSnapshot(DlrmModel model)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _tables = model.Tables.Select(t => NativeBuffer.Allocate(Math.Max(1, t.ByteSize))).ToArray();
        _dense = model.Dense.parameters().Select(p => zeros_like(p, requires_grad: false).DetachFromDisposeScope()).ToArray();
    }

    public void Capture() => Copy(toSnapshot: true);

    public void Restore() => Copy(toSnapshot: false);

    void Copy(bool toSnapshot)
    {
        for (int t = 0; t < _tables.Length; t++)
        {
            var table = _model.Tables[t];
            byte* live = table.DataPointer, saved = _tables[t].Pointer;
            if (toSnapshot) Buffer.MemoryCopy(live, saved, table.ByteSize, table.ByteSize);
            else Buffer.MemoryCopy(saved, live, table.ByteSize, table.ByteSize);
        }
        using var _ = no_grad();
        var parameters = _model.Dense.parameters().ToArray();
        for (int i = 0; i < parameters.Length; i++)
            if (toSnapshot) _dense[i].copy_(parameters[i]);
            else parameters[i].copy_(_dense[i]);
    }

    public void Dispose()
    {
        foreach (var b in _tables) b.Dispose();
        foreach (var d in _dense) d.Dispose();
    }
}
