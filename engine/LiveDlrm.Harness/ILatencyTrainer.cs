using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>The harness's colocated trainer: an <see cref="ITrainerHost"/> it can start once per mode.</summary>
internal interface ILatencyTrainer : ITrainerHost
{
    string Description { get; }
    /// <summary>How many trainer threads <see cref="ITrainerHost.Start"/> accepts at most (null = any).</summary>
    int? MaxThreads { get; }
}
