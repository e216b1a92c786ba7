namespace LiveDlrm.Scheduling;

/// <summary>The knob the QoS controller turns. A duty cycle d in [0, 1] means the trainer computes for a fraction d
/// of wall time and idles for the rest; 0 and <see cref="Pause"/> both stop it between steps.</summary>
internal interface ITrainerThrottle
{
    double DutyCycle { get; }
    bool IsPaused { get; }
    /// <summary>Sets the duty cycle (clamped to [0, 1]); takes effect at each trainer thread's next step boundary.</summary>
    void SetDutyCycle(double dutyCycle);
    /// <summary>Stops every trainer thread at its next step boundary until <see cref="Resume"/>.</summary>
    void Pause();
    void Resume();
}

/// <summary>What a colocated trainer (the LoRA trainer, or the harness's sparse-update proxy) exposes so placement
/// and QoS can drive it: its threads' TIDs (for resctrl's <c>tasks</c>), its throttle, and its progress.</summary>
internal interface ITrainerHost : IDisposable
{
    string Name { get; }
    /// <summary>Linux TIDs of the trainer's threads, once started.</summary>
    IReadOnlyList<int> ThreadIds { get; }
    ITrainerThrottle Throttle { get; }
    /// <summary>Training samples processed since <see cref="Start"/> (monotonic; read from any thread).</summary>
    long SamplesProcessed { get; }
    /// <summary>Starts <paramref name="threads"/> threads; each calls <paramref name="onThreadStart"/>(index) on
    /// itself first (the plan's pinning hook), like the embedding worker pool does.</summary>
    void Start(int threads, Action<int>? onThreadStart = null);
    /// <summary>Stops the threads and waits for them.</summary>
    void Stop();
}
