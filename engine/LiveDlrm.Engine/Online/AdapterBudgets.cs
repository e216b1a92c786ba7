using LiveDlrm.Embeddings;
using LiveDlrm.Lora;
using LiveDlrm.Model;
using LiveDlrm.Runtime;
using Microsoft.Extensions.Logging;

namespace LiveDlrm.Online;

/// <summary>Which tables of a live model get an adapter and how many bytes each may hold: the per-table budget, or
/// the joint budget that funds tiny tables from the model's total (<see cref="OnlineTrainerOptions.JointBudget"/>).</summary>
static class AdapterBudgets
{
    /// <summary>Adapters for every table of <paramref name="model"/> whose budget (<paramref name="options"/>'s
    /// <see cref="AdapterOptions.BudgetFraction"/> of its bytes) holds B and at least
    /// <see cref="OnlineTrainerOptions.MinAdapterRows"/> rows, attached to <paramref name="backend"/> (the model's);
    /// null entries for the others. Adapter seeds differ per table.</summary>
    public static TableAdapter?[] Create(DlrmModel model, AdapterEmbeddingBackend backend, OnlineTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var result = new TableAdapter?[model.Tables.Count];
        var fractions = BudgetFractions(model, options);
        try
        {
            for (int t = 0; t < result.Length; t++)
            {
                var table = model.Tables[t];
                var ao = options.Adapter with { Seed = options.Adapter.Seed + t, MaxRank = Math.Min(options.Adapter.MaxRank, table.Dim), BudgetFraction = fractions[t] };
                if (ao.InitialRank > ao.MaxRank) ao = ao with { InitialRank = ao.MaxRank };
                if (ao.MinRank > ao.MaxRank) ao = ao with { MinRank = ao.MaxRank };
                if (ao.InPlaceRows && table.Storage == EmbeddingStorage.Int8Rowwise)
                {
                    // Re-quantising an int8 row per step loses every update below half a quantisation step.
                    options.Logger.LogInformation("table '{Table}' is stored int8: rows its adapter cannot hold are dropped, not trained in place", table.Name);
                    ao = ao with { InPlaceRows = false, InPlaceOnly = false };
                }
                long budget = (long)Math.Floor(ao.BudgetFraction * table.ByteSize);
                var (slots, _) = ao.BudgetFraction > 0 ? TableAdapter.SizeFor(budget, ao.InitialRank, table.Dim) : (0, 0);
                bool tooFewSlots = slots < Math.Min(options.MinAdapterRows, table.Rows);
                if ((tooFewSlots || ao.InPlaceOnly) && ao.InPlaceRows && ao.BudgetFraction > 0 && InPlaceOnlyBudget(table) is long least && least <= budget)
                {
                    // Every row of the table is trained in W itself (too few slots to be worth a pool, or asked for). The
                    // adapter is the smallest one: B at rank 1 and one slot, which carry the write epoch, the observer
                    // and the row state.
                    if (tooFewSlots)
                        options.Logger.LogInformation("table '{Table}' ({Bytes} bytes): a {Budget} budget holds {Rows} adapter rows at rank {Rank} (< {MinRows}); every row is trained in place",
                            table.Name, table.ByteSize, Percent(ao.BudgetFraction), slots, ao.InitialRank, options.MinAdapterRows);
                    ao = ao with { InPlaceOnly = true, InitialRank = 1, MinRank = 1, MaxRank = 1, RankAdaptInterval = 0, BudgetFraction = (least + 0.5) / table.ByteSize };   // + 0.5: floor(fraction × bytes) is least
                }
                else if (slots < Math.Min(options.MinAdapterRows, table.Rows))
                {
                    options.Logger.LogInformation("table '{Table}' ({Bytes} bytes): a {Budget} budget holds {Rows} adapter rows at rank {Rank} (< {MinRows}); not adapted",
                        table.Name, table.ByteSize, Percent(ao.BudgetFraction), slots, ao.InitialRank, options.MinAdapterRows);
                    continue;
                }
                result[t] = new TableAdapter(table, ao);
                backend.Attach(result[t]!);
            }
            // A budget too small for every table is the caller's choice of budget, not a fault of the engine: say so
            // in its own terms rather than fail later in the trainer with nothing to train.
            if (result.Length > 0 && result.All(a => a is null))
                throw new UserInputException($"an adapter budget of {Percent(options.Adapter.BudgetFraction)} of the table bytes holds fewer than "
                    + $"{options.MinAdapterRows} adapter rows at rank {options.Adapter.InitialRank} in every table: nothing to adapt (raise the budget)");
        }
        catch
        {
            // Nothing half-built survives: the caller never saw these adapters.
            foreach (var a in result) a?.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>The bytes of the smallest adapter (B at rank 1 and one slot) of <paramref name="table"/>, or null
    /// when that is more than the table may be granted.</summary>
    static long? InPlaceOnlyBudget(EmbeddingTable table)
    {
        for (long b = 64; b <= (long)(AdapterOptions.MaxBudgetFraction * table.ByteSize); b += 64)
            if (TableAdapter.SizeFor(b, 1, table.Dim).Slots >= 1)
                return b;
        return null;
    }

    /// <summary>A fraction as a percentage with three significant digits (0.0001 → "0.01 %"), so a small budget never
    /// prints as "0.00 %".</summary>
    static string Percent(double fraction) => (fraction * 100).ToString("G3", System.Globalization.CultureInfo.InvariantCulture) + " %";

    /// <summary>Each table's budget fraction: the option itself per table, or with <see cref="OnlineTrainerOptions.JointBudget"/>
    /// grants whose bytes sum to at most BudgetFraction × Σ table bytes (0 = no adapter).</summary>
    static double[] BudgetFractions(DlrmModel model, OnlineTrainerOptions options)
    {
        var tables = model.Tables;
        double fraction = options.Adapter.BudgetFraction;
        var result = new double[tables.Count];
        if (!options.JointBudget) { Array.Fill(result, fraction); return result; }
        long total = (long)Math.Floor(fraction * tables.Sum(t => t.ByteSize));
        var grant = new long[tables.Count];
        var small = new List<int>();
        for (int t = 0; t < tables.Count; t++)
        {
            var (slots, _) = TableAdapter.SizeFor((long)Math.Floor(fraction * tables[t].ByteSize), options.Adapter.InitialRank, tables[t].Dim);
            if (slots < options.MinAdapterRows) small.Add(t);
        }
        long left = total;
        foreach (int t in small.OrderBy(t => tables[t].ByteSize))
        {
            // Smallest budget whose pool holds every row, never more than SmallTableBudgetMultiple × the table; failing that, the
            // smallest that holds MinAdapterRows; failing that, no adapter.
            long need = SmallestBudget(tables[t], tables[t].Rows) ?? SmallestBudget(tables[t], Math.Min(options.MinAdapterRows, tables[t].Rows)) ?? long.MaxValue;
            if (need > left) continue;
            grant[t] = need; left -= need;
        }
        var large = Enumerable.Range(0, tables.Count).Where(t => !small.Contains(t)).ToArray();
        long largeBytes = large.Sum(t => tables[t].ByteSize);
        foreach (int t in large) grant[t] = (long)Math.Floor((double)left * tables[t].ByteSize / largeBytes);
        long? SmallestBudget(EmbeddingTable table, long rows)
        {
            long max = (long)Math.Floor(options.SmallTableBudgetMultiple * table.ByteSize);
            for (long b = 64; b <= max; b += 64)
                if (TableAdapter.SizeFor(b, options.Adapter.InitialRank, table.Dim).Slots >= rows) return b;
            return null;
        }
        for (int t = 0; t < tables.Count; t++)
            // Rounded down so floor(fraction × bytes) in the adapter never exceeds the grant.
            result[t] = grant[t] == 0 ? 0 : Math.Min(AdapterOptions.MaxBudgetFraction, Math.Max(1e-12, (grant[t] - 1) / (double)tables[t].ByteSize));
        if (tables.Select((tb, t) => (long)Math.Floor(result[t] * tb.ByteSize)).Sum() > total)
            throw new InvalidOperationException("joint adapter budgets exceed the total budget");
        return result;
    }
}
