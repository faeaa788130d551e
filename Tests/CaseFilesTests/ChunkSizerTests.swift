import Testing
import CaseFilesClient

/// `ChunkSizer`: the CLI's chunk size follows the measured rate, within its bounds, a step at a time.
@Suite struct ChunkSizerTests {
    let mib = 1 << 20

    @Test func fastLinkGrowsByDoublingUpToTheMaximum() {
        var sizer = ChunkSizer.adaptive
        #expect(sizer.size == 8 * mib)
        // 8 MiB in 16 ms: ~524 MB/s, which wants 2 s × 524 MB/s ≈ 1 GB, far past the maximum.
        sizer.record(bytes: 8 * mib, seconds: 0.016)
        #expect(sizer.size == 16 * mib)  // at most double per chunk
        sizer.record(bytes: 16 * mib, seconds: 0.032)
        #expect(sizer.size == 32 * mib)
        sizer.record(bytes: 32 * mib, seconds: 0.064)
        #expect(sizer.size == ChunkSizer.maximum)
    }

    @Test func slowLinkShrinksByHalvingDownToTheMinimum() {
        var sizer = ChunkSizer.adaptive
        // 8 MiB in 8 s: ~1 MB/s wants 2 MiB chunks; halving is the largest step.
        sizer.record(bytes: 8 * mib, seconds: 8)
        #expect(sizer.size == 4 * mib)
        sizer.record(bytes: 4 * mib, seconds: 4)
        #expect(sizer.size == 2 * mib)
        sizer.record(bytes: 2 * mib, seconds: 2)
        #expect(sizer.size == 2 * mib)  // 1 MiB/s × 2 s = 2 MiB: settled
        sizer.record(bytes: 2 * mib, seconds: 20)  // the link got ten times slower
        #expect(sizer.size == ChunkSizer.minimum)
        sizer.record(bytes: mib, seconds: 60)
        #expect(sizer.size == ChunkSizer.minimum)
    }

    @Test func oneOddMeasurementMovesTheSizeOneStep() {
        var sizer = ChunkSizer.adaptive
        sizer.record(bytes: 8 * mib, seconds: 2)  // 4 MiB/s: 8 MiB is right
        #expect(sizer.size == 8 * mib)
        sizer.record(bytes: 8 * mib, seconds: 0.01)  // a burst
        #expect(sizer.size == 16 * mib)
    }

    @Test func aFixedSizeNeverChanges() {
        var sizer = ChunkSizer.fixed(5 * mib)
        sizer.record(bytes: 5 * mib, seconds: 0.001)
        sizer.record(bytes: 5 * mib, seconds: 100)
        #expect(sizer.size == 5 * mib)
        #expect(sizer.rate == nil)
    }
}
