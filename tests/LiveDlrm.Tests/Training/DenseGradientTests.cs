using LiveDlrm.Model;
using LiveDlrm.Runtime;
using LiveDlrm.Tests.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LiveDlrm.Tests.Training;

/// <summary>Autograd through the dense part (bottom MLP, dot interaction, top MLP, BCE) against central finite
/// differences, in float64 so the comparison is tight. Covers the parameters and the pooled-embedding input (the
/// gradient the embedding trainers scatter to rows).</summary>
internal class DenseGradientTests
{
    [Test]
    public void GradientsMatchFiniteDifferences([Values] bool selfInteraction)
    {
        TorchRuntime.EnsureInitialised();
        var config = TinyDlrm.SmallConfig(self: selfInteraction);
        using var net = new DlrmDenseNet(config);
        net.Initialise(new Random(3));
        net.to(ScalarType.Float64);
        var random = new Random(7);
        const int b = 5;
        int tables = config.Tables.Count, d = config.Dim;
        using var dense = tensor(Enumerable.Range(0, b * config.DenseFeatures).Select(_ => random.NextDouble() * 2 - 1).ToArray()).reshape(b, config.DenseFeatures);
        using var pooled = tensor(Enumerable.Range(0, tables * b * d).Select(_ => random.NextDouble() * 2 - 1).ToArray()).reshape(tables, b, d).requires_grad_(true);
        using var labels = tensor(new double[] { 1, 0, 0, 1, 1 });

        double Loss()
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            return nn.functional.binary_cross_entropy_with_logits(net.forward(dense, pooled), labels).item<double>();
        }

        using (var scope = NewDisposeScope())
            nn.functional.binary_cross_entropy_with_logits(net.forward(dense, pooled), labels).backward();

        const double h = 1e-6;
        int checkedCount = 0;
        void Check(Tensor param, string name)
        {
            var flat = param.detach().view(-1);
            var grad = param.grad!.view(-1);
            long n = flat.shape[0];
            for (long i = 0; i < n; i += Math.Max(1, n / 7))
            {
                double original = flat[i].item<double>();
                using (no_grad()) flat[i] = original + h;
                double plus = Loss();
                using (no_grad()) flat[i] = original - h;
                double minus = Loss();
                using (no_grad()) flat[i] = original;
                double numeric = (plus - minus) / (2 * h);
                double analytic = grad[i].item<double>();
                Assert.That(analytic, Is.EqualTo(numeric).Within(1e-6 + 1e-4 * Math.Abs(numeric)), $"{name}[{i}]");
                checkedCount++;
            }
        }

        foreach (var (name, p) in net.NamedParameters()) Check(p, name);
        Check(pooled, "pooled");
        Assert.That(checkedCount, Is.GreaterThan(40));
    }
}
