using System.Text.Json;
using LiveDlrm.Data;
using LiveDlrm.Serving.Grpc;

namespace LiveDlrm.Serving.Api;

/// <summary>A request that breaks a rule; the message starts with the field at fault (<c>events[2].dense[0]: …</c>).
/// Becomes HTTP 400 or gRPC INVALID_ARGUMENT; nothing of the request has been applied.</summary>
internal sealed class BadRequestException(string message) : Exception(message);

/// <summary>Decodes score requests (JSON or protobuf) into an <see cref="EventBatch"/> of the model's layout,
/// checking the rules the TSV reader applies to a stream — the dense count and every value finite, one bag per table,
/// every id in [0, rows) — plus the server's size limits. Everything is checked before the batch is handed on, so a
/// bad request is refused whole. Server-assigned request ids have bit 62 set; caller ids must be in [1, 2^62).</summary>
internal sealed class RequestDecoder(EventBatchLayout layout, int maxEvents, int maxBagIds)
{
    public const long AssignedIdBit = 1L << 62;
    // Starts at the process's start time in microseconds, not at 0: a fleet log deduplicates by replica and request
    // id over a window of minutes, and a restarted node that numbered from 0 again would have its first examples
    // taken for retries of the previous run's. (Ids stay below 2^62 for millennia at a million requests a second.)
    static long s_nextId = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000;

    public EventBatchLayout Layout => layout;

    public static long AssignId() => AssignedIdBit | Interlocked.Increment(ref s_nextId);

    public EventBatch Decode(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new BadRequestException("body: expected a JSON object {\"events\": [...]}");
        JsonElement events = default;
        foreach (var p in root.EnumerateObject())
        {
            if (p.NameEquals("events")) events = p.Value;
            else throw new BadRequestException($"{p.Name}: unknown field");
        }
        if (events.ValueKind != JsonValueKind.Array) throw new BadRequestException("events: expected an array of events");
        var batch = NewBatch(events.GetArrayLength());
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();   // the event time a fleet example carries
        int i = 0;
        foreach (var e in events.EnumerateArray())
        {
            string at = $"events[{i}]";
            if (e.ValueKind != JsonValueKind.Object) throw new BadRequestException($"{at}: expected an object");
            long id = 0;
            JsonElement dense = default, sparse = default;
            foreach (var p in e.EnumerateObject())
            {
                if (p.NameEquals("requestId"))
                {
                    if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt64(out id)) throw new BadRequestException($"{at}.requestId: expected an integer");
                }
                else if (p.NameEquals("dense")) dense = p.Value;
                else if (p.NameEquals("sparse")) sparse = p.Value;
                else throw new BadRequestException($"{at}.{p.Name}: unknown field");
            }
            int row = batch.AddEvent(0f, now, CheckId(id, at));
            if (dense.ValueKind != JsonValueKind.Array) throw new BadRequestException($"{at}.dense: expected an array of {layout.DenseCount} numbers");
            if (dense.GetArrayLength() != layout.DenseCount) throw new BadRequestException($"{at}.dense: {dense.GetArrayLength()} values, the model has {layout.DenseCount} dense features");
            var d = batch.DenseRowForWrite(row);
            int k = 0;
            foreach (var v in dense.EnumerateArray())
            {
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double x)) throw new BadRequestException($"{at}.dense[{k}]: expected a number");
                d[k] = CheckDense((float)x, $"{at}.dense[{k}]");
                k++;
            }
            if (sparse.ValueKind != JsonValueKind.Array) throw new BadRequestException($"{at}.sparse: expected an array of {layout.SparseCount} id arrays");
            if (sparse.GetArrayLength() != layout.SparseCount) throw new BadRequestException($"{at}.sparse: {sparse.GetArrayLength()} bags, the model has {layout.SparseCount} tables");
            int t = 0;
            foreach (var bag in sparse.EnumerateArray())
            {
                string bagAt = $"{at}.sparse[{t}]";
                if (bag.ValueKind != JsonValueKind.Array) throw new BadRequestException($"{bagAt}: expected an array of ids");
                CheckBagSize(bag.GetArrayLength(), bagAt);
                int j = 0;
                foreach (var v in bag.EnumerateArray())
                {
                    if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long index)) throw new BadRequestException($"{bagAt}[{j}]: expected an integer id");
                    batch.AddIndex(t, CheckIndex(index, t, $"{bagAt}[{j}]"));
                    j++;
                }
                t++;
            }
            i++;
        }
        return Finish(batch);
    }

    public EventBatch Decode(ScoreRequest request)
    {
        var batch = NewBatch(request.Events.Count);
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        for (int i = 0; i < request.Events.Count; i++)
        {
            var e = request.Events[i];
            string at = $"events[{i}]";
            int row = batch.AddEvent(0f, now, CheckId(e.RequestId, at));
            if (e.Dense.Count != layout.DenseCount) throw new BadRequestException($"{at}.dense: {e.Dense.Count} values, the model has {layout.DenseCount} dense features");
            var d = batch.DenseRowForWrite(row);
            for (int k = 0; k < e.Dense.Count; k++) d[k] = CheckDense(e.Dense[k], $"{at}.dense[{k}]");
            if (e.Sparse.Count != layout.SparseCount) throw new BadRequestException($"{at}.sparse: {e.Sparse.Count} bags, the model has {layout.SparseCount} tables");
            for (int t = 0; t < e.Sparse.Count; t++)
            {
                var ids = e.Sparse[t].Ids;
                CheckBagSize(ids.Count, $"{at}.sparse[{t}]");
                for (int j = 0; j < ids.Count; j++) batch.AddIndex(t, CheckIndex(ids[j], t, $"{at}.sparse[{t}][{j}]"));
            }
        }
        return Finish(batch);
    }

    EventBatch NewBatch(int events)
    {
        if (events == 0) throw new BadRequestException("events: the request has no events");
        if (events > maxEvents) throw new BadRequestException($"events: {events} events, the limit is {maxEvents} per request");
        return new EventBatch(layout, events);
    }

    static long CheckId(long id, string at)
    {
        if (id < 0 || id >= AssignedIdBit) throw new BadRequestException($"{at}.requestId: {id} is outside [1, 2^62) (0 = assigned by the server)");
        return id;
    }

    static float CheckDense(float value, string at) =>
        float.IsFinite(value) ? value : throw new BadRequestException($"{at}: {value} is not a finite number");

    void CheckBagSize(int count, string at)
    {
        if (count > maxBagIds) throw new BadRequestException($"{at}: {count} ids, the limit is {maxBagIds} per bag");
    }

    long CheckIndex(long index, int table, string at)
    {
        long rows = layout.Sparse[table].Rows;
        if ((ulong)index >= (ulong)rows) throw new BadRequestException($"{at}: id {index} is outside [0, {rows}) of table '{layout.Sparse[table].Table}'");
        return index;
    }

    /// <summary>Duplicate caller ids within the batch are refused (a label could not say which event it is for); then
    /// ids are assigned and the serving time stamped.</summary>
    static EventBatch Finish(EventBatch batch)
    {
        var seen = new Dictionary<long, int>();
        var ids = batch.RequestIds;
        for (int i = 0; i < batch.Count; i++)
        {
            if (ids[i] == 0) continue;
            if (!seen.TryAdd(ids[i], i)) throw new BadRequestException($"events[{i}].requestId: {ids[i]} repeats events[{seen[ids[i]]}].requestId");
        }
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        for (int i = 0; i < batch.Count; i++)
        {
            if (ids[i] == 0) batch.SetRequestId(i, AssignId());
            batch.SetTimestamp(i, now);
        }
        return batch;
    }
}
