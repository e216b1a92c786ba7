using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Grpc.Net.Client;
using LiveDlrm.Checkpoints;
using LiveDlrm.Embeddings;
using LiveDlrm.Model;
using LiveDlrm.Serving;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;

namespace LiveDlrm.Tests.Serving;

/// <summary>A small base model on disk, servers started in process (TestServer) or on free loopback ports, and the
/// request bodies and parsers the serving tests share.</summary>
static class ServingTestSupport
{
    public const int Dense = 3;
    public static readonly long[] Rows = [20_000, 5_000, 10];

    /// <summary>Two tables big enough for an adapter under the 1 % budget, one too small (served as the base has it).</summary>
    public static DlrmConfig Config() => new(Dense, [8, 8], [16, 1],
        [new DlrmTableConfig("users", Rows[0], 8, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("items", Rows[1], 8, PoolingMode.Sum, EmbeddingStorage.Fp32),
         new DlrmTableConfig("device", Rows[2], 8, PoolingMode.Sum, EmbeddingStorage.Fp32)]);

    public static string SaveCheckpoint(string dir, int seed)
    {
        using var model = DlrmModel.Create(Config(), seed);
        Checkpoint.Save(model, dir);
        return dir;
    }

    public static ServeOptions Options(string model, Action<ServeOptions>? change = null)
    {
        var o = new ServeOptions
        {
            Model = model,
            Listen = "127.0.0.1:0",
            Qos = QosMode.Off,
            TrainerBatch = 8,
            LabelWindow = TimeSpan.FromMinutes(5),
            MaxBatchEvents = 64,
            MaxBagIds = 8,
            MaxRequestBytes = 64 * 1024,
            RingCapacity = 4096,
            ShutdownTimeout = TimeSpan.FromSeconds(10),
        };
        change?.Invoke(o);
        return o;
    }

    public sealed class InProcess : IAsyncDisposable
    {
        public required ServingHost Host { get; init; }
        public required HttpClient Http { get; init; }
        public required GrpcChannel Channel { get; init; }
        public List<string> Log { get; } = new();

        public async ValueTask DisposeAsync()
        {
            Channel.Dispose();
            Http.Dispose();
            await Host.DisposeAsync();
        }
    }

    public static async Task<InProcess> StartAsync(ServeOptions options)
    {
        var log = new List<string>();
        var host = ServingHost.Create(options, new ListLogger(log), wh => wh.UseTestServer());
        await host.App.StartAsync();
        var server = host.App.GetTestServer();
        var channel = GrpcChannel.ForAddress(server.BaseAddress, new GrpcChannelOptions { HttpHandler = server.CreateHandler() });
        var result = new InProcess { Host = host, Http = server.CreateClient(), Channel = channel };
        result.Log.AddRange(log);
        return result;
    }

    /// <summary>JSON of one event with valid values unless told otherwise.</summary>
    public static string Event(int seed, long requestId = 0)
    {
        var rng = new Random(seed);
        var dense = string.Join(",", Enumerable.Range(0, Dense).Select(_ => (rng.NextDouble()).ToString("R", CultureInfo.InvariantCulture)));
        var sparse = string.Join(",", Rows.Select(r => $"[{rng.NextInt64(r)},{rng.NextInt64(r)}]"));
        return $"{{{(requestId != 0 ? $"\"requestId\":{requestId}," : "")}\"dense\":[{dense}],\"sparse\":[{sparse}]}}";
    }

    public static string Body(params string[] events) => $"{{\"events\":[{string.Join(",", events)}]}}";

    public static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    public sealed record JsonScore(float[] Scores, long[] RequestIds, string Model);
    public sealed record JsonFeedback(long Joined, long Unknown, long Late);

    public static async Task<JsonScore> ScoreAsync(HttpClient http, string body)
    {
        using var response = await http.PostAsync("/v1/score", Json(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), text);
        return JsonSerializer.Deserialize<JsonScore>(text, ServingHost.Json)!;
    }

    public static async Task<JsonFeedback> FeedbackAsync(HttpClient http, IEnumerable<(long Id, float Label)> labels)
    {
        var body = "[" + string.Join(",", labels.Select(l => $"{{\"requestId\":{l.Id},\"label\":{l.Label.ToString(CultureInfo.InvariantCulture)}}}")) + "]";
        using var response = await http.PostAsync("/v1/feedback", Json(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), text);
        return JsonSerializer.Deserialize<JsonFeedback>(text, ServingHost.Json)!;
    }

    /// <summary>One sample of a Prometheus text exposition.</summary>
    public sealed record Sample(string Name, string Labels, double Value);

    /// <summary>Parses the text format: the TYPE of each family and every sample line (comments checked for shape).</summary>
    public static (Dictionary<string, string> Types, List<Sample> Samples) ParseMetrics(string text)
    {
        var types = new Dictionary<string, string>();
        var samples = new List<Sample>();
        foreach (var raw in text.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.Length == 0) continue;
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Assert.That(parts, Has.Length.EqualTo(4), line);
                types[parts[2]] = parts[3];
                continue;
            }
            if (line.StartsWith('#')) continue;
            int brace = line.IndexOf('{');
            int space = line.LastIndexOf(' ');
            string name = brace >= 0 && brace < space ? line[..brace] : line[..line.IndexOf(' ')];
            string labels = brace >= 0 && brace < space ? line[(brace + 1)..line.LastIndexOf('}')] : "";
            string value = line[(space + 1)..];
            Assert.That(double.TryParse(value.Replace("+Inf", "Infinity").Replace("-Inf", "-Infinity"), NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
                        || value == "NaN", Is.True, $"sample value of '{line}'");
            samples.Add(new Sample(name, labels, value == "NaN" ? double.NaN : v));
        }
        return (types, samples);
    }

    public static double Sum(List<Sample> samples, string name, string? labelContains = null) =>
        samples.Where(s => s.Name == name && (labelContains is null || s.Labels.Contains(labelContains, StringComparison.Ordinal))).Sum(s => s.Value);

    public static async Task<List<Sample>> ScrapeAsync(HttpClient http) => ParseMetrics(await http.GetStringAsync("/metrics")).Samples;

    /// <summary>Polls <paramref name="condition"/> every 20 ms for at most <paramref name="seconds"/>.</summary>
    public static async Task<bool> WaitUntilAsync(Func<Task<bool>> condition, double seconds = 20)
    {
        var end = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < end)
        {
            if (await condition()) return true;
            await Task.Delay(20);
        }
        return await condition();
    }

    /// <summary>A loopback port whose successor is free too (HTTP on P, gRPC on P + 1).</summary>
    public static int FreePortPair()
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            var a = new TcpListener(IPAddress.Loopback, 0);
            a.Start();
            int port = ((IPEndPoint)a.LocalEndpoint).Port;
            try
            {
                if (port >= 65535) continue;
                var b = new TcpListener(IPAddress.Loopback, port + 1);
                try { b.Start(); b.Stop(); return port; }
                catch (SocketException) { }
            }
            finally { a.Stop(); }
        }
        throw new InvalidOperationException("no free pair of loopback ports");
    }

    public static string TempDir(string prefix)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static string TokenFile(string dir, string token = "test-token-0123456789abcdef")
    {
        string file = Path.Combine(dir, "token");
        File.WriteAllText(file, token + "\n");
        return file;
    }

    public static HttpRequestMessage Admin(HttpMethod method, string path, string? token, string? body = null)
    {
        var m = new HttpRequestMessage(method, path);
        if (token is not null) m.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        if (body is not null) m.Content = Json(body);
        return m;
    }

    public static async Task<T> AdminJsonAsync<T>(HttpClient http, HttpMethod method, string path, string token, string? body = null)
    {
        using var response = await http.SendAsync(Admin(method, path, token, body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), text);
        return JsonSerializer.Deserialize<T>(text, ServingHost.Json)!;
    }

    public sealed record AdapterState(string State, string Model);
}
