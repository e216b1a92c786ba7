namespace LiveDlrm.Serving.Node;

/// <summary>The node serving now, swapped atomically on reload. A request leases the node for its whole batch, so a
/// batch is scored by one model from start to end; a replaced node is disposed only after its last lease ends.</summary>
internal sealed class NodeSlot
{
    internal sealed class Entry(ILiveNode node)
    {
        public readonly ILiveNode Node = node;
        public int Leases;
    }

    Entry _current;

    public NodeSlot(ILiveNode node) => _current = new Entry(node);

    public ILiveNode Current => Volatile.Read(ref _current).Node;

    public Lease Acquire()
    {
        while (true)
        {
            var e = Volatile.Read(ref _current);
            Interlocked.Increment(ref e.Leases);          // full fence before the re-check
            if (ReferenceEquals(Volatile.Read(ref _current), e)) return new Lease(e);
            Interlocked.Decrement(ref e.Leases);          // swapped meanwhile: lease the new one
        }
    }

    public readonly struct Lease(Entry entry) : IDisposable
    {
        public ILiveNode Node => entry.Node;
        public void Dispose() => Interlocked.Decrement(ref entry.Leases);
    }

    /// <summary>Makes <paramref name="next"/> current and returns the old node once no request holds it any more.</summary>
    public async Task<ILiveNode> SwapAsync(ILiveNode next)
    {
        var old = Interlocked.Exchange(ref _current, new Entry(next));
        while (Volatile.Read(ref old.Leases) != 0) await Task.Delay(1);
        return old.Node;
    }
}
