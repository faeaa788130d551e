@testable import CaseFilesEngine
@testable import CaseFilesStorage
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct ThreadPriorityTests {
    /// Every loop of a group takes the nice value, and only the loops: the caller's thread keeps its own. Without
    /// CAP_SYS_NICE (an unprivileged run) the refusal comes back as EACCES and the loops keep the value they had.
    @Test func eventLoopsTakeTheNiceValueOrReportTheRefusal() async throws {
        let caller = ThreadPriority.currentThreadNice()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let before = try await niceValues(of: group)
        let refusal = await ThreadPriority.setEventLoops(of: group, nice: caller - 3)
        let after = try await niceValues(of: group)
        if let refusal {
            #expect(refusal == EACCES || refusal == EPERM)
            #expect(after == before)
        } else {
            #expect(after == [caller - 3, caller - 3])
        }
        #expect(ThreadPriority.currentThreadNice() == caller)
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
