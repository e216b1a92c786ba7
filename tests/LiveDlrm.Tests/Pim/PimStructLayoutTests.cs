using System.Runtime.InteropServices;
using LiveDlrm.Interop;
using LiveDlrm.Pim;

namespace LiveDlrm.Tests.Pim;

/// <summary>The C# mirrors of native/pim/common/pim_common.h must have the C sizes and offsets.</summary>
internal unsafe class PimStructLayoutTests
{
    [Test]
    public void MirrorsMatchTheCStructsAndConstants()
    {
        PimTestSupport.RequireLibrary();
        var values = new long[64];
        int n;
        fixed (long* v = values) n = LiveDlrm.Interop.Pim.StructLayout(v, values.Length);
        long[] expected =
        [
            Marshal.SizeOf<PimTableArgs>(), Offset<PimTableArgs>(nameof(PimTableArgs.SlotBase)), Offset<PimTableArgs>(nameof(PimTableArgs.Format)),
            Marshal.SizeOf<PimBatchHeader>(), Offset<PimBatchHeader>(nameof(PimBatchHeader.ItemsOffset)),
            Marshal.SizeOf<PimSegment>(), Offset<PimSegment>(nameof(PimSegment.Table)), Offset<PimSegment>(nameof(PimSegment.OutOffset)),
            Marshal.SizeOf<PimUpdate>(),
            Marshal.SizeOf<PimHostSegment>(), Offset<PimHostSegment>(nameof(PimHostSegment.Tile)),
            Offset<PimHostSegment>(nameof(PimHostSegment.ItemBegin)), Offset<PimHostSegment>(nameof(PimHostSegment.ItemCount)),
            sizeof(PimTableBatch), Offset<PimTableBatch>(nameof(PimTableBatch.Segs)), Offset<PimTableBatch>(nameof(PimTableBatch.Weights)),
            Offset<PimTableBatch>(nameof(PimTableBatch.Output)), Offset<PimTableBatch>(nameof(PimTableBatch.OutputFloats)),
            Marshal.SizeOf<PimSlotDesc>(), Offset<PimSlotDesc>(nameof(PimSlotDesc.RowB)), Offset<PimSlotDesc>(nameof(PimSlotDesc.Tile)),
            Offset<PimSlotDesc>(nameof(PimSlotDesc.Dpu)), Offset<PimSlotDesc>(nameof(PimSlotDesc.Slot)),
            Marshal.SizeOf<PimNativeStats>(), Offset<PimNativeStats>(nameof(PimNativeStats.Items)),
            Offset<PimNativeStats>(nameof(PimNativeStats.NsHostReduce)), Offset<PimNativeStats>(nameof(PimNativeStats.NsUpdate)),
            Offset<PimNativeStats>(nameof(PimNativeStats.NrDpus)), Offset<PimNativeStats>(nameof(PimNativeStats.Backend)),
            Marshal.SizeOf<PimProbeArgs>(), Offset<PimProbeArgs>(nameof(PimProbeArgs.WramOffset)),
            PimLayout.MramTableBytes, PimLayout.MramInBytes, PimLayout.MramOutBytes, PimLayout.MaxSliceFloats,
            PimLayout.WramCacheBytes, PimLayout.ItemCacheBit, PimLayout.MaxTables, PimLayout.IntBits, PimLayout.IntSegmentItems,
        ];
        Assert.That(n, Is.EqualTo(expected.Length), "pim_struct_layout returns a different number of values than the mirror checks");
        Assert.That(values[..n], Is.EqualTo(expected));
        Assert.That(Marshal.SizeOf<PimBatchHeader>(), Is.EqualTo(PimLayout.BatchHeaderBytes));
        Assert.That(Marshal.SizeOf<PimSegment>(), Is.EqualTo(PimLayout.SegmentBytes));
    }

    static long Offset<T>(string field) => Marshal.OffsetOf<T>(field).ToInt64();
}
