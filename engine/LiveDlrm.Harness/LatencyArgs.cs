using System.Globalization;

using LiveDlrm.Scheduling;

namespace LiveDlrm.Harness;

/// <summary>Options shared by <c>livedlrm latency</c> and <c>./build.sh bench latency</c>.</summary>
public static class LatencyArgs
{
    public const string Usage = """
          --seconds S           measured length of each mode (default 20)
          --warmup S            warm-up before each mode (default 2)
          --trial-seconds S     length of each max-QPS search trial (default 3)
          --max-qps Q           skip the search, take Q as the maximum sustainable QPS
          --load F              fraction of max QPS the modes run at (default 0.5)
          --slo-factor K        sustainable = all served and P50 ≤ K × P50 at light load (default 5)
          --qos-target-ms T     QoS P99 target in mode 3 (default: mode 1's P99)
          --workload W          dlrm (default: the synthetic DLRM model's Predict through LoRA adapters, with the
                                online LoRA trainer fed from the stream) or proxy (embedding-bag lookups, sparse
                                Adagrad trainer proxy: the stand-ins from before the model existed)
          --batch B             events per request (dlrm default 128)
          --base-events N       dlrm: prefix events the base model is trained on, one pass (default 100000; 0 = random init)
          --tables N --rows R --dim D --batch B --pooling L     inference proxy shape (4, 500000, 64, 128, 32)
          --trainer-tables N --trainer-rows R --trainer-threads T   trainer proxy (2, 1000000, plan's thread count)
          --quick               tiny tables and 1-second modes (a smoke run, numbers meaningless)
        """;

    /// <summary>Builds the options from a name → value lookup (so the CLI's parser and perf's can both feed it);
    /// throws ArgumentException naming a bad option.</summary>
    public static LatencyHarnessOptions Parse(Func<string, string?> value, Func<string, bool> flag)
    {
        double D(string name, double fallback, double min, double max)
        {
            string? s = value(name);
            if (s is null) return fallback;
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                throw new ArgumentException($"--{name}: '{s}' is not a number");
            if (v < min || v > max) throw new ArgumentException($"--{name}: {v} is outside [{min}, {max}]");
            return v;
        }
        int I(string name, int fallback, int min, int max) => (int)D(name, fallback, min, max);
        double? Opt(string name, double min, double max) => value(name) is null ? null : D(name, 0, min, max);

        bool quick = flag("quick");
        var o = new LatencyHarnessOptions();
        var kind = value("workload") switch
        {
            null or "dlrm" or "dlrm-live" => LatencyWorkloadKind.DlrmLive,
            "proxy" => LatencyWorkloadKind.Proxy,
            var other => throw new ArgumentException($"--workload: '{other}' is not dlrm or proxy"),
        };
        var dlrm = o.Dlrm;
        var w = o.Workload;
        var t = o.Trainer;
        if (quick)
        {
            w = w with { Rows = 20_000, Batch = 32, Pooling = 8 };
            t = t with { Rows = 20_000 };
            dlrm = dlrm with { Batch = 32, BaseTrainEvents = 5_000, RequestBatches = 16 };
            o = o with { ModeDuration = TimeSpan.FromSeconds(1), Warmup = TimeSpan.FromSeconds(0.2), SearchTrial = TimeSpan.FromSeconds(0.5) };
        }
        w = w with
        {
            Tables = I("tables", w.Tables, 1, 64), Rows = (long)D("rows", w.Rows, 1, 1e9), Dim = I("dim", w.Dim, 1, 4096),
            Batch = I("batch", w.Batch, 1, 65536), Pooling = I("pooling", w.Pooling, 1, 4096),
        };
        dlrm = dlrm with
        {
            Batch = I("batch", dlrm.Batch, 1, 65536),
            BaseTrainEvents = (long)D("base-events", dlrm.BaseTrainEvents, 0, 1e9),
        };
        t = t with { Tables = I("trainer-tables", t.Tables, 1, 64), Rows = (long)D("trainer-rows", t.Rows, 1, 1e9) };
        double? target = Opt("qos-target-ms", 0.001, 60_000);
        return o with
        {
            Kind = kind,
            Dlrm = dlrm,
            Workload = w,
            Trainer = t,
            ModeDuration = TimeSpan.FromSeconds(D("seconds", o.ModeDuration.TotalSeconds, 0.1, 3600)),
            Warmup = TimeSpan.FromSeconds(D("warmup", o.Warmup.TotalSeconds, 0, 600)),
            SearchTrial = TimeSpan.FromSeconds(D("trial-seconds", o.SearchTrial.TotalSeconds, 0.1, 600)),
            MaxQps = Opt("max-qps", 0.001, 1e9),
            LoadFraction = D("load", o.LoadFraction, 0.01, 1),
            SloFactor = D("slo-factor", o.SloFactor, 1.01, 1e6),
            QosTarget = target is double ms ? TimeSpan.FromMilliseconds(ms) : null,
            TrainerThreads = value("trainer-threads") is null ? null : I("trainer-threads", 1, 1, 1024),
        };
    }
}
