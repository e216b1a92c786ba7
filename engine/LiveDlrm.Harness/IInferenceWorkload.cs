using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>What the latency harness drives: one call serves one inference request, synchronously, on the harness's
/// dispatch thread: <see cref="DlrmLiveWorkload"/> (the default) or the <see cref="EmbeddingLookupWorkload"/> proxy.</summary>
internal interface IInferenceWorkload : IDisposable
{
    /// <summary>Short label for output and JSON, e.g. "dlrm-live".</summary>
    string Name { get; }
    string Description { get; }
    /// <summary>Linux TIDs of helper threads the workload runs requests on (besides the dispatch thread), for resctrl.</summary>
    IReadOnlyList<int> ThreadIds { get; }
    /// <summary>Serves request number <paramref name="request"/>; must not allocate in steady state.</summary>
    void Serve(long request);
}
