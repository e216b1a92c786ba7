using System.Diagnostics;
using Grpc.Core;
using LiveDlrm.Serving.Grpc;
using LiveDlrm.Serving.Node;

namespace LiveDlrm.Serving.Api;

/// <summary>The gRPC service (h2c endpoint): the same scoring, validation and label join as the JSON API.</summary>
internal sealed class GrpcApi(ServingHost host) : LiveNode.LiveNodeBase
{
    public override Task<ScoreReply> Score(ScoreRequest request, ServerCallContext context)
    {
        long start = Stopwatch.GetTimestamp();
        if (!host.Enter()) { host.CountError("unavailable"); throw new RpcException(new Status(StatusCode.Unavailable, "draining: the node is shutting down")); }
        string? error = null;
        try
        {
            var result = host.Score(host.Decoder.Decode(request));
            var reply = new ScoreReply { Model = result.Model };
            reply.Scores.Add(result.Scores);
            reply.RequestIds.Add(result.RequestIds);
            return Task.FromResult(reply);
        }
        catch (BadRequestException e)
        {
            error = "invalid_argument";
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        catch (Exception e) when (e is not RpcException)
        {
            error = "internal";
            throw new RpcException(new Status(StatusCode.Internal, $"internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]}"));
        }
        finally
        {
            host.Exit();
            host.Completed("grpc", start, error);
        }
    }

    public override Task<FeedbackReply> Feedback(FeedbackRequest request, ServerCallContext context)
    {
        var reply = new FeedbackReply();
        Apply(request, reply, "");
        return Task.FromResult(reply);
    }

    public override async Task<FeedbackReply> FeedbackStream(IAsyncStreamReader<FeedbackRequest> requestStream, ServerCallContext context)
    {
        var reply = new FeedbackReply();
        int i = 0;
        // Each message stands alone: a bad one ends the stream with INVALID_ARGUMENT; the ones before it were applied
        // (the reply would have counted them), as each label is its own request.
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken))
            Apply(request, reply, $"[{i++}].");
        return reply;
    }

    void Apply(FeedbackRequest request, FeedbackReply reply, string prefix)
    {
        try { JsonApi.CheckFeedback(request.RequestId, request.Label, prefix); }
        catch (BadRequestException e)
        {
            host.CountError("invalid_argument");
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        switch (host.Feedback(request.RequestId, request.Label))
        {
            case FeedbackResult.Joined: reply.Joined++; break;
            case FeedbackResult.Late: reply.Late++; break;
            default: reply.Unknown++; break;
        }
    }
}
