using System.Text;

namespace LiveDlrm.Numa;

/// <summary>Inputs to <see cref="ResourcePlan.Create"/>. Defaults suit a serving box: a quarter of each node's
/// physical cores (at least one) go to the trainer, every other PU runs an inference worker.</summary>
internal sealed record PlanOptions
{
    /// <summary>Fraction of each node's physical cores given to the trainer, in (0, 1).</summary>
    public double TrainerCoreShare { get; init; } = 0.25;
    /// <summary>Inference workers; default one per inference PU. More workers than PUs wrap round (noted).</summary>
    public int? InferenceWorkers { get; init; }
    /// <summary>Trainer threads; default one per trainer physical core (its SMT siblings stay available to it).</summary>
    public int? TrainerThreads { get; init; }
    /// <summary>Tables read from more than one node at least this large are interleaved; smaller ones are placed on
    /// the node with most of their readers (a small table stays hot in that node's caches anyway).</summary>
    public long InterleaveThresholdBytes { get; init; } = 64L << 20;
    /// <summary>Nice value inference threads give themselves when pinned (needs CAP_SYS_NICE below 0; without it
    /// they keep their nice value and the plan notes it). On a machine shared with other work this is what keeps
    /// the inference dispatcher from waiting behind them; null leaves priorities alone.</summary>
    public int? InferenceNice { get; init; } = -5;
    /// <summary>Nice value trainer threads give themselves. Null = automatic: 10 where the plan shares PUs between
    /// the roles (the trainer must yield the CPU to inference), unchanged where they have separate cores (a high nice
    /// value there only hands the trainer's core to unrelated processes).</summary>
    public int? TrainerNice { get; init; }
}

/// <summary>Which side of the process uses a table.</summary>
internal enum TableUser { Inference, Trainer }

internal sealed record TablePlacement(string Table, long Bytes, MemoryPolicy Policy, IReadOnlyList<int> Nodes, string Reason);

/// <summary>One NUMA node's split. <see cref="Shared"/> is true when inference and trainer PUs overlap there.</summary>
internal sealed record NodeAssignment(int Node, IReadOnlyList<int> InferencePus, IReadOnlyList<int> TrainerPus, bool Shared);

/// <summary>Where inference workers and trainer threads run and where tables live. Trainer PUs are whole physical
/// cores the inference workers do not use (so SMT siblings never split across roles, and a trainer never competes
/// for an inference core's execution units or L1/L2); within a node the trainer's cores are taken from the end of
/// the last LLC group so inference keeps whole cache groups where the machine has several. A machine with a single
/// physical core cannot separate the roles: the plan then shares all PUs and says so in <see cref="Notes"/>.</summary>
internal sealed class ResourcePlan
{
    public Topology Topology { get; }
    public PlanOptions Options { get; }
    public IReadOnlyList<NodeAssignment> Nodes { get; }
    public IReadOnlyList<int> InferencePus { get; }
    public IReadOnlyList<int> TrainerPus { get; }
    /// <summary>PU set of each inference worker (index = worker index of the embedding pool).</summary>
    public IReadOnlyList<IReadOnlyList<int>> InferenceWorkerPus { get; }
    /// <summary>PU set of each trainer thread.</summary>
    public IReadOnlyList<IReadOnlyList<int>> TrainerThreadPus { get; }
    public bool SharesPus { get; }
    public IReadOnlyList<string> Notes { get; }

    ResourcePlan(Topology topology, PlanOptions options, IReadOnlyList<NodeAssignment> nodes,
                 IReadOnlyList<IReadOnlyList<int>> workers, IReadOnlyList<IReadOnlyList<int>> trainer, IReadOnlyList<string> notes)
    {
        Topology = topology; Options = options; Nodes = nodes; InferenceWorkerPus = workers; TrainerThreadPus = trainer; Notes = notes;
        InferencePus = nodes.SelectMany(n => n.InferencePus).Order().ToList();
        TrainerPus = nodes.SelectMany(n => n.TrainerPus).Order().ToList();
        SharesPus = nodes.Any(n => n.Shared);
    }

    public static ResourcePlan Create(Topology topology, PlanOptions? options = null)
    {
        options ??= new PlanOptions();
        if (!(options.TrainerCoreShare is > 0 and < 1))
            throw new ArgumentOutOfRangeException(nameof(options), options.TrainerCoreShare, "TrainerCoreShare must be in (0, 1)");
        if (options.InferenceWorkers is < 1) throw new ArgumentOutOfRangeException(nameof(options), options.InferenceWorkers, "InferenceWorkers must be at least 1");
        if (options.TrainerThreads is < 1) throw new ArgumentOutOfRangeException(nameof(options), options.TrainerThreads, "TrainerThreads must be at least 1");

        var notes = new List<string>();
        var assignments = new List<NodeAssignment>();
        var trainerCores = new List<PhysicalCore>();
        if (topology.Cores.Count == 1)
        {
            // Nothing to separate: both roles run everywhere and only software QoS (duty cycle) isolates them.
            var all = topology.Pus.Select(p => p.Id).ToList();
            assignments.Add(new NodeAssignment(topology.Nodes[0].Id, all, all, Shared: true));
            trainerCores.Add(topology.Cores[0]);
            notes.Add($"the machine has one physical core ({all.Count} PU{(all.Count > 1 ? "s" : "")}): inference and trainer SHARE it; only the software QoS controller separates them");
        }
        else
        {
            foreach (var node in topology.Nodes)
            {
                // Cores of this node ordered by LLC group then index, so trainer cores come from the end of the last group.
                var cores = topology.Cores.Where(c => c.Node == node.Id).OrderBy(c => c.LlcGroup).ThenBy(c => c.Index).ToList();
                int want = cores.Count >= 2 ? Math.Clamp((int)Math.Round(cores.Count * options.TrainerCoreShare), 1, cores.Count - 1) : 0;
                var mine = cores.Skip(cores.Count - want).ToList();
                trainerCores.AddRange(mine);
                var inference = cores.Take(cores.Count - want).SelectMany(c => c.Pus).Order().ToList();
                assignments.Add(new NodeAssignment(node.Id, inference, mine.SelectMany(c => c.Pus).Order().ToList(), Shared: false));
                if (cores.Count == 1)
                    notes.Add($"node {node.Id} has one physical core: kept for inference, no trainer there");
            }
            if (trainerCores.Count == 0)
            {
                // Every node has a single core: give the trainer the last node's core, inference keeps the rest.
                var last = assignments[^1];
                var core = topology.Cores.Where(c => c.Node == last.Node).Single();
                assignments[^1] = last with { InferencePus = [], TrainerPus = core.Pus.ToList() };
                trainerCores.Add(core);
                notes.Add($"every node has one core: node {last.Node}'s core goes to the trainer");
            }
            int inferenceCores = topology.Cores.Count - trainerCores.Count;
            var inferenceLlc = assignments.SelectMany(a => a.InferencePus).Select(p => topology.Pu(p).LlcGroup).ToHashSet();
            bool sharedLlc = trainerCores.Any(c => inferenceLlc.Contains(c.LlcGroup));
            if (inferenceCores == 1)
                notes.Add($"tiny machine: one physical core for inference, {trainerCores.Count} for the trainer");
            notes.Add(sharedLlc
                ? "inference and trainer share a last-level cache and memory bandwidth: only resctrl (if present) or the software QoS controller limits that interference"
                : "inference and trainer are on separate last-level caches; memory bandwidth is still shared");
        }

        var inferencePus = assignments.SelectMany(a => a.InferencePus).Order().ToList();
        int workers = options.InferenceWorkers ?? inferencePus.Count;
        if (workers > inferencePus.Count)
            notes.Add($"{workers} inference workers on {inferencePus.Count} inference PU(s): workers share PUs round-robin");
        var workerPus = Enumerable.Range(0, workers).Select(i => (IReadOnlyList<int>)[inferencePus[i % inferencePus.Count]]).ToList();

        int trainerThreads = options.TrainerThreads ?? trainerCores.Count;
        if (trainerThreads > trainerCores.Count)
            notes.Add($"{trainerThreads} trainer threads on {trainerCores.Count} trainer core(s): threads share cores round-robin");
        var trainerPus = Enumerable.Range(0, trainerThreads).Select(i => (IReadOnlyList<int>)trainerCores[i % trainerCores.Count].Pus.ToList()).ToList();

        return new ResourcePlan(topology, options, assignments, workerPus, trainerPus, notes);
    }

    /// <summary>Where a table of <paramref name="bytes"/> used by <paramref name="user"/> should live.</summary>
    public TablePlacement PlaceTable(string table, long bytes, TableUser user)
    {
        ArgumentException.ThrowIfNullOrEmpty(table);
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"table '{table}': size must be non-negative");
        var byNode = Nodes.Select(n => (n.Node, Count: user == TableUser.Inference ? n.InferencePus.Count : n.TrainerPus.Count))
                          .Where(x => x.Count > 0).OrderByDescending(x => x.Count).ThenBy(x => x.Node).ToList();
        if (Topology.Nodes.Count == 1)
            return new TablePlacement(table, bytes, MemoryPolicy.NodeLocal, [Topology.Nodes[0].Id], "single NUMA node");
        if (byNode.Count == 1)
            return new TablePlacement(table, bytes, MemoryPolicy.NodeLocal, [byNode[0].Node], $"all {user.ToString().ToLowerInvariant()} PUs are on node {byNode[0].Node}");
        if (bytes >= Options.InterleaveThresholdBytes)
            return new TablePlacement(table, bytes, MemoryPolicy.Interleaved, byNode.Select(x => x.Node).Order().ToList(),
                $"read from nodes {CpuList.Format(byNode.Select(x => x.Node))} and ≥ {Options.InterleaveThresholdBytes >> 20} MiB: interleave to use every node's bandwidth");
        return new TablePlacement(table, bytes, MemoryPolicy.NodeLocal, [byNode[0].Node],
            $"small (< {Options.InterleaveThresholdBytes >> 20} MiB): on node {byNode[0].Node}, which has most of its readers");
    }

    /// <summary>The embedding pool's <c>onWorkerStart</c>: pins worker <c>i</c> (from inside its own thread) to
    /// <see cref="InferenceWorkerPus"/>[i mod count].</summary>
    public Action<int> InferenceWorkerStart => i =>
    {
        ThreadAffinity.PinCurrentThread(InferenceWorkerPus[i % InferenceWorkerPus.Count]);
        ApplyNice(Options.InferenceNice);
    };

    /// <summary>Called by trainer thread <c>i</c> on itself before its loop: pins it to <see cref="TrainerThreadPus"/>[i mod count].</summary>
    public Action<int> TrainerThreadStart => i =>
    {
        ThreadAffinity.PinCurrentThread(TrainerThreadPus[i % TrainerThreadPus.Count]);
        ApplyNice(TrainerNice);
    };

    /// <summary>The nice value trainer threads take (see <see cref="PlanOptions.TrainerNice"/>), null = unchanged.</summary>
    public int? TrainerNice => Options.TrainerNice ?? (SharesPus ? 10 : null);

    int _niceRefused;

    /// <summary>True once a thread could not take its nice value (no CAP_SYS_NICE).</summary>
    public bool NiceRefused => Volatile.Read(ref _niceRefused) != 0;

    void ApplyNice(int? nice)
    {
        if (nice is int n && !ThreadAffinity.TrySetCurrentThreadNice(n)) Volatile.Write(ref _niceRefused, 1);
    }

    /// <summary>For threads of the inference side that are not pool workers (request dispatch, the QoS controller).</summary>
    public void PinToInference()
    {
        ThreadAffinity.PinCurrentThread(InferencePus.Count > 0 ? InferencePus : TrainerPus);
        ApplyNice(Options.InferenceNice);
    }

    public string Describe()
    {
        var sb = new StringBuilder();
        foreach (var n in Nodes)
            sb.AppendLine($"node {n.Node}: inference PUs [{CpuList.Format(n.InferencePus)}]  trainer PUs [{CpuList.Format(n.TrainerPus)}]{(n.Shared ? "  (SHARED)" : "")}");
        for (int i = 0; i < InferenceWorkerPus.Count; i++) sb.AppendLine($"inference worker {i} → PUs [{CpuList.Format(InferenceWorkerPus[i])}]");
        for (int i = 0; i < TrainerThreadPus.Count; i++) sb.AppendLine($"trainer thread {i}   → PUs [{CpuList.Format(TrainerThreadPus[i])}]");
        sb.AppendLine($"priorities: inference nice {(Options.InferenceNice?.ToString() ?? "unchanged")}, trainer nice {(TrainerNice?.ToString() ?? "unchanged")}{(NiceRefused ? " (REFUSED for some thread: no CAP_SYS_NICE)" : "")}");
        foreach (var note in Notes) sb.AppendLine($"note: {note}");
        return sb.ToString();
    }
}
