using LiveDlrm.Data;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Training;

/// <summary>The validation split of <see cref="TrainingLoop.Train"/>: the time-ordered tail is never trained on,
/// is scored after every epoch, and training stops at the first epoch whose validation logloss rises, with the
/// model put back to the best epoch's weights.</summary>
internal class ValidationSplitTests
{
    // Many users with a handful of events each: a second pass memorises them, so validation logloss rises.
    static readonly SyntheticStreamConfig World = new() { Seed = 3, Drift = 0, Users = 20_000, InitialItems = 2_000, MaxNewItems = 0 };

    [Test]
    public void StopsWhenValidationLoglossRisesAndKeepsTheBestEpoch()
    {
        TorchRuntime.EnsureInitialised();
        const int events = 20_000;
        using var model = DlrmModel.Create(TrainingLoop.DefaultConfig(World.Schema().Layout), 1);
        using var trainer = new DlrmTrainer(model, new DlrmTrainerOptions { DenseLearningRate = 0.05, Threads = 1 });
        using var source = new SyntheticEventSource(World, events);
        var summary = TrainingLoop.Train(trainer, source, 256, epochs: 6, validationFraction: 0.25);
        var v = summary.Validation!;
        TestContext.Out.WriteLine($"validation logloss per epoch: {string.Join(", ", v.Select(m => m.LogLoss.ToString("F4")))}; best epoch {summary.BestEpoch}");

        Assert.That(summary.TrainEvents, Is.EqualTo(15_000));
        Assert.That(summary.ValidationEvents, Is.EqualTo(5_000));
        Assert.That(v.All(m => m.Events == 5_000), Is.True);
        Assert.That(summary.StoppedEarly, Is.True, "this world memorises within six epochs");
        Assert.That(summary.Epochs, Is.EqualTo(v.Count).And.LessThan(6));
        Assert.That(v[^1].LogLoss, Is.GreaterThanOrEqualTo(v[summary.BestEpoch - 1].LogLoss));
        Assert.That(summary.Events, Is.EqualTo(15_000L * summary.Epochs), "the tail is never trained on");

        // The model holds the best epoch's weights: scoring the tail again gives that epoch's validation metrics.
        source.Reset();
        TrainingLoop.Skip(source, 15_000);
        var again = TrainingLoop.Evaluate(model, source, 4096, out _);
        Assert.That(again.LogLoss, Is.EqualTo(v[summary.BestEpoch - 1].LogLoss).Within(1e-9));
        Assert.That(again.LogLoss, Is.EqualTo(v.Min(m => m.LogLoss)).Within(1e-9));
    }

    [Test]
    public void WithoutValidationEveryEpochRunsOnAllEvents()
    {
        TorchRuntime.EnsureInitialised();
        using var model = DlrmModel.Create(TrainingLoop.DefaultConfig(World.Schema().Layout), 1);
        using var trainer = new DlrmTrainer(model, new DlrmTrainerOptions { Threads = 1 });
        using var source = new SyntheticEventSource(World, 5_000);
        var summary = TrainingLoop.Train(trainer, source, 256, epochs: 2);
        Assert.That((summary.Events, summary.Epochs, summary.TrainEvents, summary.Validation!.Count), Is.EqualTo((10_000L, 2, 5_000L, 0)));
        source.Reset();
        Assert.That(() => TrainingLoop.Train(trainer, source, 256, validationFraction: 0.9999),
                    Throws.InstanceOf<LiveDlrm.Runtime.UserInputException>().With.Message.Contains("both need at least one"));
    }
}
