using System.Diagnostics;
using System.Text.Json;
using LiveDlrm.Serving.Node;
using LiveDlrm.Serving.Qos;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace LiveDlrm.Serving.Api;

/// <summary>The HTTP/1.1 side: JSON scoring and feedback for curl users, the model's shape, health, /metrics, and
/// the admin endpoints (bearer token; disabled without a token file). Errors are one JSON line
/// <c>{"error": "field: what is wrong"}</c>.</summary>
internal static class JsonApi
{
    public static void Map(IEndpointRouteBuilder app, ServingHost host)
    {
        app.MapPost("/v1/score", ctx => Score(ctx, host));
        app.MapPost("/v1/feedback", ctx => Feedback(ctx, host));
        app.MapGet("/v1/model", ctx => Model(ctx, host));
        app.MapGet("/healthz", ctx => Text(ctx, 200, "ok\n"));
        app.MapGet("/readyz", ctx => host.Ready ? Text(ctx, 200, host.ReadyText) : Text(ctx, 503, host.Draining ? "draining\n" : "trainer not running\n"));
        app.MapPost("/admin/reload", ctx => Admin(ctx, host, Reload));
        app.MapPost("/admin/trainer", ctx => Admin(ctx, host, Trainer));
        app.MapPost("/admin/checkpoint", ctx => Admin(ctx, host, Checkpoint));
        app.MapGet("/admin/adapters", ctx => Admin(ctx, host, Adapters));
    }

    static async Task Score(HttpContext ctx, ServingHost host)
    {
        long start = Stopwatch.GetTimestamp();
        if (!host.Enter()) { host.CountError("unavailable"); await Error(ctx, 503, "draining: the node is shutting down"); return; }
        string? error = null;
        try
        {
            var (doc, tooLarge) = await ReadJson(ctx, host);
            if (doc is null) { error = tooLarge ? "too_large" : "invalid_argument"; return; }
            ServingHost.Scored result;
            using (doc)
            {
                var batch = host.Decoder.Decode(doc.RootElement);
                result = host.Score(batch);
            }
            ctx.Response.ContentType = "application/json";
            await using var w = new Utf8JsonWriter(ctx.Response.Body);
            w.WriteStartObject();
            w.WriteStartArray("scores");
            foreach (float s in result.Scores) w.WriteNumberValue(s);
            w.WriteEndArray();
            w.WriteStartArray("requestIds");
            foreach (long id in result.RequestIds) w.WriteNumberValue(id);
            w.WriteEndArray();
            w.WriteString("model", result.Model);
            w.WriteEndObject();
        }
        catch (BadRequestException e)
        {
            error = "invalid_argument";
            await Error(ctx, 400, e.Message);
        }
        catch (Exception e) when (e is not OperationCanceledException && !ctx.Response.HasStarted)
        {
            error = "internal";
            await Error(ctx, 500, $"internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
        }
        finally
        {
            host.Exit();
            host.Completed("http", start, error);
        }
    }

    static async Task Feedback(HttpContext ctx, ServingHost host)
    {
        var (doc, tooLarge) = await ReadJson(ctx, host);
        if (doc is null) { host.CountError(tooLarge ? "too_large" : "invalid_argument"); return; }
        using (doc)
        {
            List<(long Id, float Label)> labels;
            try { labels = DecodeFeedback(doc.RootElement); }
            catch (BadRequestException e)
            {
                host.CountError("invalid_argument");
                await Error(ctx, 400, e.Message);
                return;
            }
            long joined = 0, unknown = 0, late = 0;
            foreach (var (id, label) in labels)
                switch (host.Feedback(id, label))
                {
                    case FeedbackResult.Joined: joined++; break;
                    case FeedbackResult.Late: late++; break;
                    default: unknown++; break;
                }
            await ctx.Response.WriteAsJsonAsync(new { joined, unknown, late }, ServingHost.Json);
        }
    }

    /// <summary>One label <c>{"requestId": N, "label": 0|1}</c> or an array of them; all are checked before any is applied.</summary>
    internal static List<(long, float)> DecodeFeedback(JsonElement root)
    {
        var result = new List<(long, float)>();
        if (root.ValueKind == JsonValueKind.Object) result.Add(DecodeLabel(root, "body"));
        else if (root.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var e in root.EnumerateArray()) result.Add(DecodeLabel(e, $"[{i++}]"));
            if (result.Count == 0) throw new BadRequestException("body: the array has no labels");
        }
        else throw new BadRequestException("body: expected {\"requestId\": N, \"label\": 0 or 1} or an array of them");
        return result;
    }

    static (long, float) DecodeLabel(JsonElement e, string at)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new BadRequestException($"{at}: expected an object");
        long? id = null;
        float? label = null;
        string prefix = at == "body" ? "" : at + ".";
        foreach (var p in e.EnumerateObject())
        {
            if (p.NameEquals("requestId"))
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt64(out long v)) throw new BadRequestException($"{prefix}requestId: expected an integer");
                id = v;
            }
            else if (p.NameEquals("label"))
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetDouble(out double v)) throw new BadRequestException($"{prefix}label: expected 0 or 1");
                label = (float)v;
            }
            else throw new BadRequestException($"{prefix}{p.Name}: unknown field");
        }
        if (id is null) throw new BadRequestException($"{prefix}requestId: missing");
        if (label is null) throw new BadRequestException($"{prefix}label: missing");
        return (CheckFeedback(id.Value, label.Value, prefix));
    }

    internal static (long, float) CheckFeedback(long id, float label, string prefix = "")
    {
        if (id <= 0) throw new BadRequestException($"{prefix}requestId: {id} is not a request id (ids are positive)");
        if (label is not (0f or 1f)) throw new BadRequestException($"{prefix}label: {label} is not 0 or 1");
        return (id, label);
    }

    static async Task Model(HttpContext ctx, ServingHost host)
    {
        var node = host.Node;
        await ctx.Response.WriteAsJsonAsync(new
        {
            fingerprint = node.Fingerprint,
            denseFeatures = node.Layout.DenseCount,
            tables = node.Layout.Sparse.Select(s => new { name = s.Table, rows = s.Rows }).ToArray(),
        }, ServingHost.Json);
    }

    // ------------------------------------------------------------------ admin

    static async Task Admin(HttpContext ctx, ServingHost host, Func<HttpContext, ServingHost, Task> action)
    {
        if (!host.AdminEnabled) { host.CountError("unauthenticated"); await Error(ctx, 404, "admin endpoints are disabled (no --admin-token-file)"); return; }
        if (!host.Authorized(ctx.Request.Headers.Authorization))
        {
            host.CountError("unauthenticated");
            ctx.Response.Headers.WWWAuthenticate = "Bearer";
            await Error(ctx, 401, "admin endpoints need 'Authorization: Bearer TOKEN' with the token of --admin-token-file");
            return;
        }
        await action(ctx, host);
    }

    static async Task Reload(HttpContext ctx, ServingHost host)
    {
        string? checkpoint = null;
        if (ctx.Request.ContentLength is > 0 || ctx.Request.Headers.TransferEncoding.Count > 0)
        {
            var (doc, _) = await ReadJson(ctx, host);
            if (doc is null) return;
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) { await Error(ctx, 400, "body: expected {\"checkpoint\": \"DIR\"}"); return; }
                foreach (var p in doc.RootElement.EnumerateObject())
                {
                    if (p.NameEquals("checkpoint") && p.Value.ValueKind == JsonValueKind.String) checkpoint = p.Value.GetString();
                    else { await Error(ctx, 400, $"{p.Name}: unknown field or not a string"); return; }
                }
            }
        }
        var (ok, message) = await host.ReloadAsync(checkpoint ?? host.ModelPath);
        if (!ok) { await Error(ctx, 400, message); return; }
        await ctx.Response.WriteAsJsonAsync(new { message, model = host.Node.Fingerprint }, ServingHost.Json);
    }

    static async Task Trainer(HttpContext ctx, ServingHost host)
    {
        if (host.FleetMode) { await Error(ctx, 409, "fleet node: the fleet log is its only trainer (a local trainer would make it differ from its peers)"); return; }
        var (doc, _) = await ReadJson(ctx, host);
        if (doc is null) return;
        bool running;
        QosMode mode;
        double? target = null;
        TrainerPriority? priority = null;
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("running", out var r) || r.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            { await Error(ctx, 400, "running: expected true or false"); return; }
            running = r.GetBoolean();
            mode = host.Qos.Mode;
            if (root.TryGetProperty("qos", out var q))
            {
                if (q.ValueKind != JsonValueKind.String || !Enum.TryParse(q.GetString(), ignoreCase: true, out mode) || !Enum.IsDefined(mode))
                { await Error(ctx, 400, "qos: expected \"off\", \"throttle\" or \"full\""); return; }
            }
            if (root.TryGetProperty("qosTargetMs", out var t))
            {
                if (t.ValueKind != JsonValueKind.Number || !(t.GetDouble() is > 0 and < 60_000)) { await Error(ctx, 400, "qosTargetMs: expected a positive number of milliseconds"); return; }
                target = t.GetDouble();
            }
            if (root.TryGetProperty("trainerPriority", out var pr))
            {
                if (pr.ValueKind != JsonValueKind.String || !Enum.TryParse(pr.GetString(), ignoreCase: true, out TrainerPriority p) || !Enum.IsDefined(p))
                { await Error(ctx, 400, "trainerPriority: expected \"idle\" or \"nice\""); return; }
                priority = p;
            }
        }
        await host.SetTrainerAsync(running, mode, target, priority);
        await ctx.Response.WriteAsJsonAsync(new { trainer = host.TrainerDescription() }, ServingHost.Json);
    }

    static async Task Checkpoint(HttpContext ctx, ServingHost host)
    {
        if (host.FleetMode) { await Error(ctx, 409, "fleet node: its replica checkpoints every --checkpoint-interval and on shutdown"); return; }
        ulong? saved = await Task.Run(() => host.SaveAdapters("admin"));
        if (saved is null) { await Error(ctx, 409, "no checkpoint written (no --adapters, or the trainer did not quiesce; see the log)"); return; }
        await ctx.Response.WriteAsJsonAsync(new { state = saved.Value.ToString("x16") }, ServingHost.Json);
    }

    static async Task Adapters(HttpContext ctx, ServingHost host)
    {
        ulong state = await Task.Run(host.AdapterFingerprint);
        await ctx.Response.WriteAsJsonAsync(new { state = state.ToString("x16"), model = host.Node.Fingerprint, trainer = host.TrainerDescription() }, ServingHost.Json);
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Reads the body as JSON within the size limit; on failure answers 400/413 itself and returns null.</summary>
    static async Task<(JsonDocument? Doc, bool TooLarge)> ReadJson(HttpContext ctx, ServingHost host)
    {
        long max = host.MaxRequestBytes;
        if (ctx.Request.ContentLength > max)
        {
            await Error(ctx, 413, $"body: {ctx.Request.ContentLength} bytes, the limit is {max}");
            return (null, true);
        }
        using var buffer = new MemoryStream();
        var chunk = new byte[16384];
        int n;
        try
        {
            while ((n = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0)
            {
                if (buffer.Length + n > max) { await Error(ctx, 413, $"body: more than {max} bytes, the limit"); return (null, true); }
                buffer.Write(chunk, 0, n);
            }
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await Error(ctx, 413, $"body: more than {max} bytes, the limit");
            return (null, true);
        }
        try
        {
            return (JsonDocument.Parse(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), new JsonDocumentOptions { MaxDepth = 8 }), false);
        }
        catch (JsonException e)
        {
            await Error(ctx, 400, $"body: not valid JSON ({e.Message.Split('\n')[0]})");
            return (null, false);
        }
    }

    static Task Error(HttpContext ctx, int status, string message)
    {
        ctx.Response.StatusCode = status;
        return ctx.Response.WriteAsJsonAsync(new { error = message }, ServingHost.Json);
    }

    static Task Text(HttpContext ctx, int status, string text)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "text/plain";
        return ctx.Response.WriteAsync(text);
    }
}
