using LiveDlrm.Embeddings;

namespace LiveDlrm.Tests.Embeddings;

/// <summary>The kernels skip the prefetch of a row's middle line when no row of the table can span three lines; the
/// rule is checked against every row start a 64-byte aligned table can have.</summary>
[TestFixture]
internal class RowPrefetchTests
{
    [Test]
    public void ThreeLineRuleMatchesEveryRowStart()
    {
        for (long stride = 1; stride <= 128; stride++)
        {
            bool three = false;
            for (long r = 0; r < 64; r++)   // row starts repeat their offset into a line after 64 rows
            {
                long first = r * stride / 64, last = (r * stride + stride - 1) / 64;
                three |= last - first + 1 >= 3;
            }
            Assert.That(RowPrefetch.MayTouchThreeLines(stride), Is.EqualTo(three), $"stride {stride}");
        }
        Assert.That(RowPrefetch.MayTouchThreeLines(72), Is.False, "int8 rowwise at dim 64");
        Assert.That(RowPrefetch.MayTouchThreeLines(128), Is.False, "fp16 at dim 64");
        Assert.That(RowPrefetch.MayTouchThreeLines(100), Is.True, "int8 rowwise at dim 92");
    }
}
