namespace LiveDlrm.Hosting;

/// <summary>A snapshot of a <see cref="HostedModel"/>'s counters (each read atomically; together not one instant).
/// The same figures are published continuously through the meters in <see cref="HostedModel.MeterNames"/>.</summary>
/// <param name="Scored">Events scored since the base model was loaded.</param>
/// <param name="LabelsJoined">Labels joined to a remembered request by <see cref="HostedModel.Feedback"/>.</param>
/// <param name="LabelsRefused">Labels whose request was unknown, expired or already labelled.</param>
/// <param name="SamplesTrained">Labelled events the trainer has learned from.</param>
/// <param name="TrainerSteps">Trainer steps applied to the adapters.</param>
/// <param name="TrainerQueue">Labelled events waiting for the trainer.</param>
/// <param name="TrainerDrops">Labelled events dropped because the trainer's queue was full.</param>
/// <param name="TrainerRunning">Whether the trainer thread runs.</param>
/// <param name="TrainerDutyCycle">The share of time the QoS controller lets the trainer compute (1 without QoS; 0 paused).</param>
/// <param name="AdapterBytes">Bytes the adapters hold now, all tables.</param>
/// <param name="AdapterBudgetBytes">Bytes the adapters may hold, all tables.</param>
/// <param name="AdaptedRows">Embedding rows with a live adapter row, all tables.</param>
public readonly record struct HostedModelStatus(
    long Scored, long LabelsJoined, long LabelsRefused, long SamplesTrained, long TrainerSteps, int TrainerQueue, long TrainerDrops,
    bool TrainerRunning, double TrainerDutyCycle, long AdapterBytes, long AdapterBudgetBytes, long AdaptedRows);
