using static TorchSharp.torch;

namespace LiveDlrm.Model;

/// <summary>An additive update ΔW, Δb of the top MLP's last layer (one logit), applied by
/// <see cref="DlrmDenseNet"/> in every forward while it is set as <see cref="DlrmDenseNet.LastLayerDelta"/>.</summary>
internal interface ILastLayerDelta
{
    /// <summary>ΔW as [inputs] and Δb as [1] of one published version, created in the caller's dispose scope. A
    /// batch calls this once, so it sees one whole version however often the update is republished.</summary>
    (Tensor Weight, Tensor Bias) Tensors();
}
