@testable import CaseFilesEngine
@testable import CaseFilesStorage
import Foundation
import NIOCore
import NIOPosix
import Testing

#if os(Linux)  // Elsewhere nice values are per process and the calls are ENOSYS.
@Suite struct ThreadPriorityTests {
    /// Every loop of a group takes the nice value, and only that group's loops: another group's keep theirs.
    /// Raising a nice value (a lower priority) is allowed to anyone, so this branch runs on every machine.
    /// (No check of the test's own thread: a task may resume on another thread, whose nice value can differ.)
    @Test func everyLoopAndOnlyTheLoopsTakeTheNiceValue() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let bystander = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let untouched = try await niceValues(of: bystander)
        #expect(await ThreadPriority.setEventLoops(of: group, nice: 19) == nil)
        #expect(try await niceValues(of: group) == [19, 19])
        #expect(try await niceValues(of: bystander) == untouched)
        try await group.shutdownGracefully()
        try await bystander.shutdownGracefully()
    }

    /// Lowering it (a higher priority) needs CAP_SYS_NICE or RLIMIT_NICE: with either the loops take it, without
    /// both the refusal comes back as EACCES and the loops keep the value they had.
    @Test func aHigherPriorityIsTakenOrTheRefusalReported() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let before = try await niceValues(of: group)
        let target = before.min()! - 3
        let refusal = await ThreadPriority.setEventLoops(of: group, nice: target)
        let after = try await niceValues(of: group)
        if let refusal {
            #expect(refusal == EACCES || refusal == EPERM)
            #expect(after == before)
        } else {
            #expect(after == [target, target])
        }
        try await group.shutdownGracefully()
    }

    /// Bulk work (hashing, staging copies) runs below everything else, on both pools.
    @Test func bulkWorkRunsAtItsNiceValueOnBothPools() async throws {
        let bulk = BulkWork(threadsPerPool: 1)
        let primary = try await bulk.run { ThreadPriority.currentThreadNice() }
        let secondary = try await bulk.run {
            var nice = 0
            bulk.inParallel({}, { nice = ThreadPriority.currentThreadNice() })
            return nice
        }
        #expect(primary == ThreadPriority.bulkWork)
        #expect(secondary == ThreadPriority.bulkWork)
        try await bulk.shutdown()
    }

    private func niceValues(of group: MultiThreadedEventLoopGroup) async throws -> [Int] {
        var values: [Int] = []
        for loop in group.makeIterator() {
            values.append(try await loop.submit { ThreadPriority.currentThreadNice() }.get())
        }
        return values
    }
}
#endif
