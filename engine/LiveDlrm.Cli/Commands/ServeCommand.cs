using LiveDlrm.Serving;

namespace LiveDlrm.Cli.Commands;

public sealed class ServeCommand : ICommand
{
    public string Name => "serve";
    public string Summary => "a live inference node: gRPC/HTTP scoring and feedback, the trainer under QoS, adapters saved and restored, /metrics";
    public string Usage => """
          --model DIR               base model checkpoint (required)
          --adapters DIR            save live adapters here and restore them on start (the only place the server writes)
          --listen ADDR:PORT        HTTP/1.1: JSON API, /metrics, /healthz, /readyz, /admin (default 127.0.0.1:7070)
          --grpc-listen ADDR:PORT   gRPC over h2c (default: the HTTP port + 1)
          --config FILE             JSON file with a "Serve" section (command-line options win)
          --admin-token-file FILE   bearer token for /admin/*; absent = admin endpoints disabled
          --label-window DUR        how long a served request waits for its label (default 2m)
          --labels POLICY           implicit-negative (default: unlabelled requests train as 0) or off
          --qos MODE                full (plan, pinning, resctrl, controller; default), throttle (controller), off
          --qos-target-ms MS        server-side P99 the controller defends (default 10)
          --checkpoint-interval DUR adapter save interval (default 60s); also saved on SIGTERM/SIGINT
          --adapters-reset          ignore saved adapters (they are replaced at the next save)
          --shutdown-timeout DUR    graceful drain limit (default 10s)
          --no-trainer              serve without starting the trainer
          --max-batch-events N      events per request at most (default 1024)
          --max-bag-ids N           ids per bag at most (default 1024)
          --max-request-bytes N     request body limit (default 4194304)
          --ring-capacity N         served events kept for their label (default 65536)
          --trainer-batch N         events per trainer step (default 256)
        """;

    public int Run(CommandArgs args)
    {
        var o = new Dictionary<string, string?>();
        void Map(string option, string key, Func<string, string>? convert = null)
        {
            if (args.String(option) is string v) o[key] = convert is null ? v : convert(v);
        }
        string? configFile = args.String("config");
        try
        {
            Map("model", nameof(ServeOptions.Model));
            Map("adapters", nameof(ServeOptions.Adapters));
            Map("listen", nameof(ServeOptions.Listen));
            Map("grpc-listen", nameof(ServeOptions.GrpcListen));
            Map("admin-token-file", nameof(ServeOptions.AdminTokenFile));
            Map("label-window", nameof(ServeOptions.LabelWindow), v => ServeConfiguration.Duration("label-window", v));
            Map("labels", nameof(ServeOptions.Labels), v => v switch
            {
                "implicit-negative" => nameof(LabelPolicy.ImplicitNegative),
                "off" => nameof(LabelPolicy.Off),
                _ => throw new UsageException($"--labels: '{v}' is not implicit-negative or off"),
            });
            Map("qos", nameof(ServeOptions.Qos), v => v is "off" or "throttle" or "full" ? v : throw new UsageException($"--qos: '{v}' is not off, throttle or full"));
            Map("qos-target-ms", nameof(ServeOptions.QosTargetMs));
            Map("checkpoint-interval", nameof(ServeOptions.CheckpointInterval), v => ServeConfiguration.Duration("checkpoint-interval", v));
            Map("shutdown-timeout", nameof(ServeOptions.ShutdownTimeout), v => ServeConfiguration.Duration("shutdown-timeout", v));
            Map("max-batch-events", nameof(ServeOptions.MaxBatchEvents));
            Map("max-bag-ids", nameof(ServeOptions.MaxBagIds));
            Map("max-request-bytes", nameof(ServeOptions.MaxRequestBytes));
            Map("ring-capacity", nameof(ServeOptions.RingCapacity));
            Map("trainer-batch", nameof(ServeOptions.TrainerBatch));
            if (args.Flag("adapters-reset")) o[nameof(ServeOptions.AdaptersReset)] = "true";
            if (args.Flag("no-trainer")) o[nameof(ServeOptions.Trainer)] = "false";
            args.EnsureAllUsed();
            var options = ServeConfiguration.Bind(configFile, o);
            return ServeRunner.Run(options, Console.Out, Console.Error);
        }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
    }
}
