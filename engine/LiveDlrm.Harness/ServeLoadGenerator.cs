using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;
using Grpc.Core;
using Grpc.Net.Client;
using HdrHistogram;
using LiveDlrm.Data;
using LiveDlrm.Scheduling;
using LiveDlrm.Serving.Grpc;

namespace LiveDlrm.Harness;

internal sealed record LoadOptions
{
    /// <summary>The node's HTTP endpoint (its model shape is read from /v1/model); loopback only.</summary>
    public required IPEndPoint Target { get; init; }
    /// <summary>The node's gRPC endpoint; default: the HTTP port + 1.</summary>
    public IPEndPoint? GrpcTarget { get; init; }
    public double Qps { get; init; } = 100;
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Requests scheduled in this first stretch are sent but not recorded.</summary>
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(1);
    public int EventsPerRequest { get; init; } = 16;
    /// <summary>Fraction of scored events whose label is sent back (the rest are left to the label window).</summary>
    public double FeedbackRate { get; init; } = 0.1;
    /// <summary>Fraction of the sent labels that are 1.</summary>
    public double PositiveRate { get; init; } = 0.5;
    public TimeSpan FeedbackDelay { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Requests outstanding at most; an arrival beyond it is not sent and counted as dropped (bounds memory
    /// and sockets when the node stalls).</summary>
    public int MaxInFlight { get; init; } = 2048;
    /// <summary>How long after the last arrival outstanding requests may still complete.</summary>
    public TimeSpan Drain { get; init; } = TimeSpan.FromSeconds(5);
    public double ZipfExponent { get; init; } = 1.05;
    public int Seed { get; init; } = 1;
    /// <summary>Real events to replay instead of synthetic ones (a TSV file with its schema): opened once, read in order
    /// (from the start again when exhausted), each event's own label sent back as its feedback. Its dense count and
    /// features must match the node's model. Null: synthetic events.</summary>
    public Func<IEventSource>? Source { get; init; }

    public void Validate()
    {
        if (!IPAddress.IsLoopback(Target.Address)) throw new ArgumentException($"--target: {Target} is not a loopback address; the load generator only targets this machine");
        if (GrpcTarget is not null && !IPAddress.IsLoopback(GrpcTarget.Address)) throw new ArgumentException($"--grpc-target: {GrpcTarget} is not a loopback address");
        if (!(Qps > 0) || Qps > 1_000_000) throw new ArgumentException($"--qps: must be in (0, 1e6], got {Qps}");
        if (Duration <= TimeSpan.Zero || Duration > TimeSpan.FromHours(1)) throw new ArgumentException($"--seconds: must be in (0, 3600], got {Duration.TotalSeconds}");
        if (Warmup < TimeSpan.Zero) throw new ArgumentException("--warmup: must be ≥ 0");
        if (EventsPerRequest is < 1 or > 100_000) throw new ArgumentException($"--batch: must be in [1, 100000], got {EventsPerRequest}");
        if (FeedbackRate is < 0 or > 1) throw new ArgumentException($"--feedback-rate: must be in [0, 1], got {FeedbackRate}");
        if (PositiveRate is < 0 or > 1) throw new ArgumentException($"--positive-rate: must be in [0, 1], got {PositiveRate}");
        if (FeedbackDelay < TimeSpan.Zero) throw new ArgumentException("--feedback-delay: must be ≥ 0");
        if (MaxInFlight < 1) throw new ArgumentException("--max-in-flight: must be ≥ 1");
    }
}

/// <summary>What one load run measured (after the warm-up). <see cref="Sent"/> counts the Poisson arrivals sent,
/// <see cref="Requests"/> those answered; latencies in milliseconds from each request's intended send time.
/// The generator's own share of that latency: <see cref="SendLateP99Ms"/>/<see cref="SendLateMaxMs"/> how late the
/// sender started a request after its intended time, <see cref="ClientGcPauseMs"/> and <see cref="ClientGcCount"/>
/// the garbage collections of the generator's process during the run (every thread of it stops for a pause, the
/// completions that time the requests too).</summary>
internal sealed record LoadResult(
    double OfferedQps, double AchievedQps, long Sent, long Requests, long Errors, long Dropped, long Events,
    double P50Ms, double P99Ms, double P999Ms, double MaxMs, double Seconds,
    long FeedbackSent, long FeedbackJoined, long FeedbackUnknown, long FeedbackLate, string? FirstError,
    double SendLateP99Ms = double.NaN, double SendLateMaxMs = double.NaN, double ClientGcPauseMs = double.NaN, int ClientGcCount = 0)
{
    public string Summary() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{OfferedQps:F0} QPS offered, {AchievedQps:F0} achieved: P50 {P50Ms:F3} ms  P99 {P99Ms:F3} ms  P99.9 {P999Ms:F3} ms  max {MaxMs:F3} ms; " +
        $"{Sent} sent, {Requests} answered ({Events} events), {Errors} errors, {Dropped} dropped; feedback {FeedbackSent} sent: {FeedbackJoined} joined, {FeedbackUnknown} unknown, {FeedbackLate} late; " +
        $"generator: send lateness P99 {SendLateP99Ms:F3} ms max {SendLateMaxMs:F3} ms, {ClientGcCount} GCs pausing {ClientGcPauseMs:F1} ms")
        + (FirstError is null ? "" : $"; first error: {FirstError}");
}

/// <summary>
/// Open-loop load against a live node over gRPC: arrival times are drawn up front from a Poisson process at the
/// target rate and never wait for responses; each request's latency runs from its intended send time, so when the
/// sender or the node falls behind the queueing delay is in the figures (no coordinated omission). Events are
/// synthetic — Zipf-distributed ids per table and normal dense values, shaped by the node's /v1/model — or real ones
/// replayed from a data file (<see cref="LoadOptions.Source"/>), and a fraction of them get a label back after a
/// delay, streamed (a replayed event its own label). Bounded in time and in outstanding requests.
/// </summary>
internal static class LoadGenerator
{
    const long HighestTrackableMicros = 60_000_000;
    const int DistinctRequests = 64;
    static readonly JsonSerializerOptions JsonWeb = new(JsonSerializerDefaults.Web);

    public static async Task<LoadResult> RunAsync(LoadOptions o, CancellationToken token = default)
    {
        o.Validate();
        var grpcTarget = o.GrpcTarget ?? new IPEndPoint(o.Target.Address, o.Target.Port + 1);
        using var http = new HttpClient { BaseAddress = new Uri($"http://{o.Target}"), Timeout = TimeSpan.FromSeconds(10) };
        var shape = await http.GetFromJsonAsync<ModelShape>("/v1/model", JsonWeb, token)
            ?? throw new InvalidOperationException($"{o.Target}/v1/model returned nothing");
        var (requests, labels) = o.Source is null ? (MakeRequests(shape, o), null) : ReadRequests(shape, o);
        using var channel = GrpcChannel.ForAddress($"http://{grpcTarget}", new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true, PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5) },
        });
        var client = new LiveNode.LiveNodeClient(channel);
        // One warm call outside the measurement: connection set-up is not the node's latency.
        await client.ScoreAsync(requests[0], cancellationToken: token);

        var histogram = new LongHistogram(HighestTrackableMicros, 3);
        var lateness = new LongHistogram(HighestTrackableMicros, 3);   // written by the pacing thread only
        int gcCount0 = GC.CollectionCount(0);
        var gcPause0 = GC.GetTotalPauseDuration();
        var feedback = new FeedbackSender(client, o);
        long sent = 0, completed = 0, errors = 0, dropped = 0, events = 0, inFlight = 0;
        string? firstError = null;
        var rng = new Random(o.Seed);
        double freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 100;
        long measureFrom = start + (long)(o.Warmup.TotalSeconds * freq);
        long end = measureFrom + (long)(o.Duration.TotalSeconds * freq);
        var outstanding = new List<Task>();
        // The arrivals are paced on a thread of their own: a sleeping pool thread would delay completions.
        await Task.Factory.StartNew(() =>
        {
            double next = start;
            int k = 0;
            while (!token.IsCancellationRequested)
            {
                next += -Math.Log(1 - rng.NextDouble()) / o.Qps * freq;
                long intended = (long)next;
                if (intended >= end) break;
                if (Stopwatch.GetTimestamp() < intended) PreciseClock.SleepUntil(intended);
                bool record = intended >= measureFrom;
                if (record) lateness.RecordValue(Math.Clamp((long)((Stopwatch.GetTimestamp() - intended) * 1e6 / freq), 0, HighestTrackableMicros));
                if (Interlocked.Read(ref inFlight) >= o.MaxInFlight) { if (record) dropped++; continue; }
                Interlocked.Increment(ref inFlight);
                if (record) sent++;
                int index = k++ % requests.Length;
                outstanding.Add(Send(requests[index], labels?[index], intended, record));
                if (outstanding.Count > 4096) outstanding.RemoveAll(t => t.IsCompleted);
            }
        }, token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var all = Task.WhenAll(outstanding);
        await Task.WhenAny(all, Task.Delay(o.Drain, token));
        long late = Interlocked.Read(ref inFlight);
        int gcCount = GC.CollectionCount(0) - gcCount0;
        double gcPauseMs = (GC.GetTotalPauseDuration() - gcPause0).TotalMilliseconds;
        await feedback.FlushAsync(token);
        double seconds = o.Duration.TotalSeconds;
        double Ms(double p) => histogram.TotalCount == 0 ? double.NaN : histogram.GetValueAtPercentile(p) / 1000.0;
        return new LoadResult(o.Qps, completed / seconds, sent, completed, errors, dropped + late, events, Ms(50), Ms(99), Ms(99.9),
                              histogram.TotalCount == 0 ? double.NaN : histogram.GetMaxValue() / 1000.0, seconds,
                              feedback.Sent, feedback.Joined, feedback.Unknown, feedback.Late, firstError ?? feedback.FirstError,
                              lateness.TotalCount == 0 ? double.NaN : lateness.GetValueAtPercentile(99) / 1000.0,
                              lateness.TotalCount == 0 ? double.NaN : lateness.GetMaxValue() / 1000.0, gcPauseMs, gcCount);

        async Task Send(ScoreRequest request, float[]? eventLabels, long intended, bool record)
        {
            try
            {
                var reply = await client.ScoreAsync(request, cancellationToken: token).ConfigureAwait(false);
                long micros = (long)((Stopwatch.GetTimestamp() - intended) * 1e6 / freq);
                if (record)
                {
                    lock (histogram) histogram.RecordValue(Math.Clamp(micros, 1, HighestTrackableMicros));
                    Interlocked.Increment(ref completed);
                    Interlocked.Add(ref events, reply.Scores.Count);
                }
                feedback.Schedule(reply.RequestIds, eventLabels);
            }
            catch (RpcException e)
            {
                if (record) Interlocked.Increment(ref errors);
                Interlocked.CompareExchange(ref firstError, $"{e.StatusCode}: {e.Status.Detail}", null);
            }
            finally { Interlocked.Decrement(ref inFlight); }
        }
    }

    internal sealed record ModelShape(string Fingerprint, int DenseFeatures, TableShape[] Tables);
    internal sealed record TableShape(string Name, long Rows);

    static ScoreRequest[] MakeRequests(ModelShape shape, LoadOptions o)
    {
        var rng = new Random(o.Seed);
        int n = DistinctRequests * o.EventsPerRequest;
        var ids = shape.Tables.Select((t, i) => ZipfIds.Generate(t.Rows, o.ZipfExponent, n, o.Seed + 1 + i)).ToArray();
        var result = new ScoreRequest[DistinctRequests];
        for (int r = 0; r < result.Length; r++)
        {
            var request = new ScoreRequest();
            for (int e = 0; e < o.EventsPerRequest; e++)
            {
                var ev = new Event();
                for (int d = 0; d < shape.DenseFeatures; d++) ev.Dense.Add((float)Math.Abs(rng.NextDouble() * 2 - 1));
                foreach (var tableIds in ids)
                {
                    var bag = new Bag();
                    bag.Ids.Add(tableIds[r * o.EventsPerRequest + e]);
                    ev.Sparse.Add(bag);
                }
                request.Events.Add(ev);
            }
            result[r] = request;
        }
        return result;
    }

    /// <summary>Requests made of the source's events in file order, <see cref="LoadOptions.EventsPerRequest"/> each,
    /// with each event's label: as many as the run can send (its arrivals, plus a margin), at most
    /// <see cref="MaxReplayRequests"/>; the sender cycles through them, so a shorter file is replayed from its start
    /// again.</summary>
    internal static (ScoreRequest[] Requests, float[][] Labels) ReadRequests(ModelShape shape, LoadOptions o)
    {
        using var source = o.Source!();
        var layout = source.Schema.Layout;
        if (layout.DenseCount != shape.DenseFeatures || layout.SparseCount != shape.Tables.Length)
            throw new DataFormatException($"--data: the events have {layout.DenseCount} dense and {layout.SparseCount} sparse features, the node's model {shape.DenseFeatures} and {shape.Tables.Length}");
        for (int t = 0; t < layout.SparseCount; t++)
            if (layout.Sparse[t].Rows > shape.Tables[t].Rows)
                throw new DataFormatException($"--data: feature '{layout.Sparse[t].Name}' has ids up to {layout.Sparse[t].Rows - 1}, the node's table '{shape.Tables[t].Name}' has {shape.Tables[t].Rows} rows");
        long wanted = (long)Math.Ceiling(o.Qps * (o.Warmup + o.Duration).TotalSeconds * 1.1) + 1;
        int count = (int)Math.Min(wanted, MaxReplayRequests);
        var requests = new List<ScoreRequest>(count);
        var labels = new List<float[]>(count);
        var batch = new EventBatch(layout, o.EventsPerRequest);
        while (requests.Count < count)
        {
            int n = source.Read(batch);
            if (n == 0) break;   // the whole file: the sender cycles through it
            var request = new ScoreRequest();
            for (int e = 0; e < n; e++)
            {
                var ev = new Event();
                foreach (float x in batch.DenseRow(e)) ev.Dense.Add(x);
                for (int t = 0; t < layout.SparseCount; t++)
                {
                    var bag = new Bag();
                    foreach (long id in batch.Bag(t, e)) bag.Ids.Add(id);
                    ev.Sparse.Add(bag);
                }
                request.Events.Add(ev);
            }
            requests.Add(request);
            labels.Add(batch.Labels.ToArray());
        }
        if (requests.Count == 0) throw new DataFormatException("--data: the file holds no events");
        return (requests.ToArray(), labels.ToArray());
    }

    /// <summary>Requests built from a data file at most (bounds the generator's memory; a longer run cycles).</summary>
    public const int MaxReplayRequests = 100_000;

    /// <summary>Labels for a fraction of the scored events, sent in streams once their delay has passed.</summary>
    sealed class FeedbackSender
    {
        readonly LiveNode.LiveNodeClient _client;
        readonly LoadOptions _o;
        readonly Queue<(long Due, long Id, float Label)> _due = new();
        readonly Random _rng;
        readonly Timer _timer;
        int _flushing;
        public long Sent, Joined, Unknown, Late;
        public string? FirstError;

        public FeedbackSender(LiveNode.LiveNodeClient client, LoadOptions o)
        {
            _client = client; _o = o; _rng = new Random(o.Seed + 7);
            _timer = new Timer(_ => _ = FlushAsync(CancellationToken.None, onlyDue: true), null, 20, 20);
        }

        /// <summary>Schedules labels for a fraction of <paramref name="ids"/>: the events' own (<paramref name="labels"/>,
        /// replayed data) or drawn at <see cref="LoadOptions.PositiveRate"/>.</summary>
        public void Schedule(IReadOnlyList<long> ids, float[]? labels)
        {
            if (_o.FeedbackRate == 0) return;
            long due = Stopwatch.GetTimestamp() + (long)(_o.FeedbackDelay.TotalSeconds * Stopwatch.Frequency);
            lock (_due)
                for (int i = 0; i < ids.Count; i++)
                    if (_rng.NextDouble() < _o.FeedbackRate)
                        _due.Enqueue((due, ids[i], labels is not null ? labels[i] : _rng.NextDouble() < _o.PositiveRate ? 1f : 0f));
        }

        public async Task FlushAsync(CancellationToken token, bool onlyDue = false)
        {
            if (!onlyDue) _timer.Dispose();
            while (Interlocked.Exchange(ref _flushing, 1) != 0) { if (onlyDue) return; await Task.Delay(5, token); }
            try
            {
                var batch = new List<FeedbackRequest>();
                long now = Stopwatch.GetTimestamp();
                lock (_due)
                    while (_due.Count > 0 && (!onlyDue || _due.Peek().Due <= now))
                    {
                        var (_, id, label) = _due.Dequeue();
                        batch.Add(new FeedbackRequest { RequestId = id, Label = label });
                    }
                if (batch.Count == 0) return;
                using var call = _client.FeedbackStream(cancellationToken: token);
                foreach (var f in batch) await call.RequestStream.WriteAsync(f, token);
                await call.RequestStream.CompleteAsync();
                var reply = await call.ResponseAsync;
                Sent += batch.Count; Joined += reply.Joined; Unknown += reply.Unknown; Late += reply.Late;
            }
            catch (RpcException e) { FirstError ??= $"feedback: {e.StatusCode}: {e.Status.Detail}"; }
            finally { Volatile.Write(ref _flushing, 0); }
        }
    }

    /// <summary>The result as JSON (the CLI's --json file and the serve benchmark read it).</summary>
    public static string ToJson(LoadResult r) => JsonSerializer.Serialize(r, LoadJsonContext.Default.LoadResult);
}

/// <summary>Source-generated writer of <see cref="LoadResult"/> (camelCase like the node's own API; a figure that
/// could not be measured is null).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true,
                             Converters = [typeof(LiveDlrm.Reports.NonFiniteAsNullConverter)])]
[JsonSerializable(typeof(LoadResult))]
internal sealed partial class LoadJsonContext : JsonSerializerContext;
