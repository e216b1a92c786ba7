using System.Diagnostics;

namespace LiveDlrm.Scheduling;

/// <summary>An <see cref="ITrainerThrottle"/> trainer threads call between steps: <see cref="AfterStep"/> idles the
/// thread long enough that busy time / wall time equals the duty cycle, and blocks while paused. Idling happens at
/// step boundaries only, so a trainer's step should be short (≈ 1 ms) for the duty cycle to act quickly.</summary>
internal sealed class DutyCycleGate : ITrainerThrottle, IDisposable
{
    readonly ManualResetEventSlim _running = new(initialState: true);
    readonly CancellationTokenSource _stop = new();
    double _duty = 1.0;

    /// <summary>Below this the gate treats the duty cycle as a pause (idle time would exceed 100× the work).</summary>
    public const double MinimumDutyCycle = 0.01;

    public double DutyCycle => Volatile.Read(ref _duty);
    public bool IsPaused => !_running.IsSet;

    public void SetDutyCycle(double dutyCycle)
    {
        if (double.IsNaN(dutyCycle)) throw new ArgumentOutOfRangeException(nameof(dutyCycle), "duty cycle is NaN");
        Volatile.Write(ref _duty, Math.Clamp(dutyCycle, 0, 1));
    }

    public void Pause() => _running.Reset();
    public void Resume() => _running.Set();

    /// <summary>Idle time that makes a step of <paramref name="busy"/> take fraction <paramref name="dutyCycle"/> of
    /// the wall time: busy·(1−d)/d.</summary>
    public static TimeSpan IdleAfter(TimeSpan busy, double dutyCycle) =>
        dutyCycle >= 1 ? TimeSpan.Zero : busy * ((1 - Math.Max(dutyCycle, MinimumDutyCycle)) / Math.Max(dutyCycle, MinimumDutyCycle));

    /// <summary>Called by a trainer thread after each step of <paramref name="busyTicks"/> Stopwatch ticks. Returns
    /// false once <see cref="Release"/> was called (the thread should exit).</summary>
    public bool AfterStep(long busyTicks)
    {
        var token = _stop.Token;
        if (token.IsCancellationRequested) return false;
        double d = DutyCycle;
        if (d < MinimumDutyCycle) { try { Task.Delay(5, token).Wait(token); } catch (OperationCanceledException) { return false; } }
        else if (d < 1)
        {
            var idle = IdleAfter(TimeSpan.FromTicks(busyTicks * TimeSpan.TicksPerSecond / Stopwatch.Frequency), d);
            if (idle > TimeSpan.Zero) token.WaitHandle.WaitOne(idle);
        }
        try { _running.Wait(token); } catch (OperationCanceledException) { return false; }
        return !token.IsCancellationRequested;
    }

    /// <summary>Wakes every waiting thread for shutdown; <see cref="AfterStep"/> returns false from then on.</summary>
    public void Release() => _stop.Cancel();

    public void Dispose() { _stop.Cancel(); _running.Dispose(); _stop.Dispose(); }
}
