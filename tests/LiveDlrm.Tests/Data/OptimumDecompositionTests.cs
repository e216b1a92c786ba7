using LiveDlrm.Data;
using LiveDlrm.Metrics;
using LiveDlrm.Training;

namespace LiveDlrm.Tests.Data;

/// <summary>What part of the optimum a learner can get from the data: the held-out events of the stationary world
/// (events 300 000–400 000, `train`'s split in docs/model.md) scored by the generator's click model with terms left out.</summary>
internal class OptimumDecompositionTests
{
    static double Auc(SyntheticTerms omit, out double userShare)
    {
        var source = new SyntheticEventSource(new SyntheticStreamConfig { Drift = 0 }, 400_000) { OmitFromTrueProbability = omit };
        var batch = new EventBatch(source.Schema.Layout, 4096, 2);
        var seen = new Dictionary<long, int>();
        long read = 0, fewEvents = 0;
        var metrics = new MetricAccumulator();
        while (source.Read(batch) > 0)
        {
            var users = batch.Indices(0);
            for (int i = 0; i < batch.Count; i++, read++)
            {
                long user = users[i];
                if (read < 300_000) seen[user] = seen.GetValueOrDefault(user) + 1;
                else if (seen.GetValueOrDefault(user) < 20) fewEvents++;
            }
            if (read > 300_000)
            {
                int first = (int)Math.Max(0, batch.Count - (read - 300_000));
                metrics.Add(batch.TrueProbabilities[first..], batch.Labels[first..]);
            }
        }
        userShare = fewEvents / 100_000.0;
        return metrics.Auc();
    }

    [Test]
    public void EachTermLeftOutLowersTheHeldOutCeiling()
    {
        double full = Auc(SyntheticTerms.None, out double fewShare);
        double noUser = Auc(SyntheticTerms.UserDeviation, out _);
        double noDeviations = Auc(SyntheticTerms.UserDeviation | SyntheticTerms.ItemDeviation, out _);
        double noItem = Auc(SyntheticTerms.UserDeviation | SyntheticTerms.ItemDeviation | SyntheticTerms.ItemBias, out _);
        TestContext.Out.WriteLine($"held-out AUC of the click model: full {full:F4}; without user deviations {noUser:F4}; " +
                                  $"also without item deviations {noDeviations:F4}; also without item biases {noItem:F4}; " +
                                  $"held-out events from users with < 20 training events: {fewShare:P0}");
        Assert.That(noUser, Is.LessThan(full - 0.005));
        Assert.That(noDeviations, Is.LessThan(noUser - 0.005));
        Assert.That(noItem, Is.LessThan(noDeviations - 0.005));
        Assert.That(fewShare, Is.GreaterThan(0.5), "most held-out users have too few events to learn their deviation");
    }

    /// <summary>The stationary world's first 400 000 events (300 000 to learn from, 100 000 held out) with what an
    /// oracle needs: ids, and each logit without the terms that are learned from the data (δ_u, ε_i, b_i).</summary>
    sealed class WorldEvents
    {
        public const int Train = 300_000, Total = 400_000;
        public readonly int[] User = new int[Total], Item = new int[Total], Category = new int[Total], Segment = new int[Total];
        public readonly double[] Rest = new double[Total];
        public readonly float[] Label = new float[Total], Truth = new float[Total];
        public readonly SyntheticEventSource World;
        public readonly int K;

        public WorldEvents()
        {
            var terms = SyntheticTerms.UserDeviation | SyntheticTerms.ItemDeviation | SyntheticTerms.ItemBias;
            World = new SyntheticEventSource(new SyntheticStreamConfig { Drift = 0 }, Total) { OmitFromTrueProbability = terms };
            K = World.Config.LatentDim;
            using var full = new SyntheticEventSource(new SyntheticStreamConfig { Drift = 0 }, Total);
            var batch = new EventBatch(World.Schema.Layout, 4096, 2);
            var fullBatch = new EventBatch(World.Schema.Layout, 4096, 2);
            int n = 0;
            while (World.Read(batch) > 0)
            {
                full.Read(fullBatch);
                for (int i = 0; i < batch.Count; i++, n++)
                {
                    User[n] = (int)batch.Indices(0)[i];
                    Item[n] = (int)batch.Indices(1)[i];
                    Category[n] = (int)batch.Indices(2)[i];
                    Segment[n] = (int)batch.Indices(3)[i];
                    double p = batch.TrueProbabilities[i];
                    Rest[n] = Math.Log(p / (1 - p));
                    Label[n] = batch.Labels[i];
                    Truth[n] = fullBatch.TrueProbabilities[i];
                }
            }
        }

        /// <summary>Logit of event j with the given user deviation, item deviation and item bias.</summary>
        public double Logit(int j, ReadOnlySpan<double> userDev, ReadOnlySpan<double> itemDev, double bias)
        {
            var s = World.SegmentInterestNow(Segment[j]);
            var e = World.CategoryCentroid(Category[j]);
            double logit = Rest[j] + bias;
            for (int d = 0; d < K; d++) logit += s[d] * itemDev[d] + userDev[d] * (e[d] + itemDev[d]);
            return logit;
        }

        public double HeldOutAuc(Func<int, double> logit)
        {
            var metrics = new MetricAccumulator();
            for (int j = Train; j < Total; j++) metrics.Add((float)(1 / (1 + Math.Exp(-logit(j)))), Label[j]);
            return metrics.Auc();
        }
    }

    /// <summary>Training events grouped by a key (CSR): the events of one user, or of one item.</summary>
    static (int[] Start, int[] Events) Group(int[] key, int groups)
    {
        var start = new int[groups + 1];
        for (int j = 0; j < WorldEvents.Train; j++) start[key[j] + 1]++;
        for (int g = 0; g < groups; g++) start[g + 1] += start[g];
        var events = new int[WorldEvents.Train];
        var fill = (int[])start.Clone();
        for (int j = 0; j < WorldEvents.Train; j++) events[fill[key[j]]++] = j;
        return (start, events);
    }

    /// <summary>MAP estimate of one group's weights w (Gaussian prior of precision <paramref name="precision"/> per
    /// weight) in logit_j = offset_j + ⟨w, x_j⟩ over its events, by Newton steps: a ridge logistic regression with the
    /// world's true prior, the best a learner told the model's form could do with this group's clicks.</summary>
    static void FitMap(ReadOnlySpan<int> events, Span<double> w, ReadOnlySpan<double> precision, Action<int, Span<double>> features,
                       Func<int, double> offset, float[] labels, int newtonSteps, Span<double> cholesky)
    {
        int m = w.Length;
        Span<double> x = stackalloc double[m], g = stackalloc double[m];
        var h = new double[m * m];
        for (int step = 0; step < newtonSteps; step++)
        {
            for (int a = 0; a < m; a++) g[a] = precision[a] * w[a];
            Array.Clear(h);
            for (int a = 0; a < m; a++) h[a * m + a] = precision[a];
            foreach (int j in events)
            {
                features(j, x);
                double z = offset(j);
                for (int a = 0; a < m; a++) z += w[a] * x[a];
                double p = 1 / (1 + Math.Exp(-z)), r = p - labels[j], c = p * (1 - p);
                for (int a = 0; a < m; a++)
                {
                    g[a] += r * x[a];
                    for (int b = 0; b <= a; b++) h[a * m + b] += c * x[a] * x[b];
                }
            }
            // Cholesky of the (lower-filled) Hessian, then w -= H⁻¹ g.
            for (int a = 0; a < m; a++)
            {
                for (int b = 0; b <= a; b++)
                {
                    double sum = h[a * m + b];
                    for (int k = 0; k < b; k++) sum -= h[a * m + k] * h[b * m + k];
                    h[a * m + b] = a == b ? Math.Sqrt(sum) : sum / h[b * m + b];
                }
            }
            for (int a = 0; a < m; a++) { double sum = g[a]; for (int k = 0; k < a; k++) sum -= h[a * m + k] * g[k]; g[a] = sum / h[a * m + a]; }
            for (int a = m - 1; a >= 0; a--) { double sum = g[a]; for (int k = a + 1; k < m; k++) sum -= h[k * m + a] * g[k]; g[a] = sum / h[a * m + a]; }
            for (int a = 0; a < m; a++) w[a] -= g[a];
        }
        h.CopyTo(cholesky); // the last step's Hessian factor: the Laplace approximation of the posterior
    }

    /// <summary>xᵀ H⁻¹ x for the Cholesky factor L of H (lower, row-major): |L⁻¹ x|².</summary>
    static double PosteriorVariance(ReadOnlySpan<double> cholesky, ReadOnlySpan<double> x)
    {
        int m = x.Length;
        Span<double> y = stackalloc double[m];
        double sum = 0;
        for (int a = 0; a < m; a++)
        {
            double v = x[a];
            for (int b = 0; b < a; b++) v -= cholesky[a * m + b] * y[b];
            y[a] = v / cholesky[a * m + a];
            sum += y[a] * y[a];
        }
        return sum;
    }

    /// <summary>The achievable bound: an oracle that knows the click model's form and every shared parameter (segment
    /// and category vectors, intercept, context effects, the priors) and estimates only the per-id terms — each
    /// user's δ_u, each item's ε_i and b_i — from the 300 000 training events (MAP under the true priors, users and
    /// items alternated). A DLRM also has to learn the shared parts, so it cannot be expected to do better.</summary>
    [Test]
    public void PerIdTermsEstimatedFromTheTrainingEventsBoundTheLearnableAuc()
    {
        var w = new WorldEvents();
        var c = w.World.Config;
        int k = w.K, items = (int)c.ItemRows;
        var trueUser = new double[c.Users * k];
        for (int u = 0; u < c.Users; u++) for (int d = 0; d < k; d++) trueUser[u * k + d] = w.World.UserDeviationOf(u)[d];
        var trueItem = new double[items * (k + 1)]; // ε_i then b_i
        for (int i = 0; i < items; i++)
        {
            for (int d = 0; d < k; d++) trueItem[i * (k + 1) + d] = w.World.ItemDeviationOf(i)[d];
            trueItem[i * (k + 1) + k] = w.World.ItemBiasOf(i);
        }
        double Auc(double[] user, double[] item) => w.HeldOutAuc(j => w.Logit(j, user.AsSpan(w.User[j] * k, k),
            item.AsSpan(w.Item[j] * (k + 1), k), item[w.Item[j] * (k + 1) + k]));

        double full = Auc(trueUser, trueItem);
        var check = new MetricAccumulator();
        for (int j = WorldEvents.Train; j < WorldEvents.Total; j++) check.Add(w.Truth[j], w.Label[j]);
        Assert.That(full, Is.EqualTo(check.Auc()).Within(1e-4), "the oracle's logit reproduces the generator's");

        var byUser = Group(w.User, c.Users);
        var byItem = Group(w.Item, items);
        var userPrecision = Enumerable.Repeat(1 / (c.UserDeviation * c.UserDeviation), k).ToArray();
        var itemPrecision = Enumerable.Repeat(1 / (c.ItemDeviation * c.ItemDeviation), k).Append(1 / (c.ItemBiasStd * c.ItemBiasStd)).ToArray();

        var userCholesky = new double[c.Users * k * k];
        var itemCholesky = new double[items * (k + 1) * (k + 1)];
        void FitUsers(double[] user, double[] item)
        {
            for (int u = 0; u < c.Users; u++)
            {
                var events = byUser.Events.AsSpan(byUser.Start[u], byUser.Start[u + 1] - byUser.Start[u]);
                if (events.IsEmpty) continue;
                FitMap(events, user.AsSpan(u * k, k), userPrecision,
                       (j, x) => { var e = w.World.CategoryCentroid(w.Category[j]); for (int d = 0; d < k; d++) x[d] = e[d] + item[w.Item[j] * (k + 1) + d]; },
                       j => w.Logit(j, new double[k], item.AsSpan(w.Item[j] * (k + 1), k), item[w.Item[j] * (k + 1) + k]), w.Label, 3,
                       userCholesky.AsSpan(u * k * k, k * k));
            }
        }
        void FitItems(double[] user, double[] item)
        {
            for (int i = 0; i < items; i++)
            {
                var events = byItem.Events.AsSpan(byItem.Start[i], byItem.Start[i + 1] - byItem.Start[i]);
                if (events.IsEmpty) continue;
                FitMap(events, item.AsSpan(i * (k + 1), k + 1), itemPrecision,
                       (j, x) => { var s = w.World.SegmentInterestNow(w.Segment[j]); for (int d = 0; d < k; d++) x[d] = s[d] + user[w.User[j] * k + d]; x[k] = 1; },
                       j => w.Logit(j, user.AsSpan(w.User[j] * k, k), new double[k], 0), w.Label, 3,
                       itemCholesky.AsSpan(i * (k + 1) * (k + 1), (k + 1) * (k + 1)));
            }
        }

        // Items known exactly, users' deviations estimated.
        var userEstimate = new double[c.Users * k];
        FitUsers(userEstimate, trueItem);
        double usersEstimated = Auc(userEstimate, trueItem);
        // No user term at all, items estimated.
        var zeroUser = new double[c.Users * k];
        var itemOnly = new double[items * (k + 1)];
        FitItems(zeroUser, itemOnly);
        double itemsEstimatedNoUser = Auc(zeroUser, itemOnly);
        // Everything per id estimated: items first (no user term yet), then users given those items; a second
        // round of this alternation is printed too (joint MAP of the bilinear term starts fitting the tail's noise).
        var user = new double[c.Users * k];
        var item = new double[items * (k + 1)];
        FitItems(user, item);
        FitUsers(user, item);
        double allEstimated = Auc(user, item);
        // The same estimates scored by their Laplace-approximated posterior predictive, σ(μ / √(1 + π v / 8)) with v
        // the logit's variance from the user's and the item's posterior: ranks uncertain (tail) ids as a Bayes
        // predictor would. Ids never seen keep the prior.
        for (int u = 0; u < c.Users; u++) if (byUser.Start[u] == byUser.Start[u + 1]) for (int d = 0; d < k; d++) userCholesky[u * k * k + d * k + d] = Math.Sqrt(userPrecision[d]);
        for (int i = 0; i < items; i++) if (byItem.Start[i] == byItem.Start[i + 1]) for (int d = 0; d <= k; d++) itemCholesky[i * (k + 1) * (k + 1) + d * (k + 1) + d] = Math.Sqrt(itemPrecision[d]);
        double bayes = w.HeldOutAuc(j =>
        {
            int u = w.User[j], i = w.Item[j];
            double mean = w.Logit(j, user.AsSpan(u * k, k), item.AsSpan(i * (k + 1), k), item[i * (k + 1) + k]);
            Span<double> xu = stackalloc double[k], xi = stackalloc double[k + 1];
            var e = w.World.CategoryCentroid(w.Category[j]);
            var s = w.World.SegmentInterestNow(w.Segment[j]);
            for (int d = 0; d < k; d++) { xu[d] = e[d] + item[i * (k + 1) + d]; xi[d] = s[d] + user[u * k + d]; }
            xi[k] = 1;
            double variance = PosteriorVariance(userCholesky.AsSpan(u * k * k, k * k), xu)
                            + PosteriorVariance(itemCholesky.AsSpan(i * (k + 1) * (k + 1), (k + 1) * (k + 1)), xi);
            return mean / Math.Sqrt(1 + Math.PI * variance / 8);
        });
        FitItems(user, item);
        FitUsers(user, item);
        double secondRound = Auc(user, item);
        TestContext.Out.WriteLine($"held-out AUC, true model {full:F4}; per-id terms MAP-estimated from the 300 000 training events: " +
                                  $"users' δ_u (items exact) {usersEstimated:F4}; items' ε_i, b_i without any user term {itemsEstimatedNoUser:F4}; " +
                                  $"items then users {allEstimated:F4} (gap to the optimum {full - allEstimated:F4}), scored by the posterior predictive {bayes:F4}; " +
                                  $"a second round {secondRound:F4}");
        Assert.That(usersEstimated, Is.LessThan(full));
        Assert.That(allEstimated, Is.LessThan(usersEstimated));
        Assert.That(allEstimated, Is.GreaterThan(itemsEstimatedNoUser - 0.002), "estimating the users' terms too must not lose ranking");
        Assert.That(Math.Max(allEstimated, bayes), Is.LessThan(full - 0.02), "the per-id terms 300 000 events can teach leave more than 0.02 to the optimum");
    }
}
