@testable import CaseFilesBundles
@testable import CaseFilesCore
@testable import CaseFilesStorage
import Foundation
import Testing

/// The bundle index's parts on real files: a gzip stream made by the system's gzip, indexed with checkpoints, then
/// read back at many offsets from the nearest checkpoint (zlib's zran.c restart); and the tar header fields.
@Suite struct BundleTests {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("bundles-\(UUID().uuidString)")

    /// Text with long-range repeats, so deflate's back-references reach into the window a restart must supply.
    static func logText(_ count: Int) -> [UInt8] {
        let words = ["call", "queue", "agent", "route", "trunk", "invite", "timeout", "retry", "session", "jitter"]
        var out: [UInt8] = []
        out.reserveCapacity(count + 100)
        var state: UInt64 = 21
        while out.count < count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let line = "t=\(state >> 40) " + (0..<6).map { words[Int((state >> UInt64(8 * $0)) % 10)] }.joined(separator: " ") + "\n"
            out += Array(line.utf8)
        }
        return Array(out.prefix(count))
    }

    static func gzip(_ data: [UInt8], at path: URL) throws -> [UInt8] {
        let plain = path.appendingPathExtension("plain")
        try Data(data).write(to: plain)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-n", "-c", plain.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let compressed = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return [UInt8](compressed)
    }

    @Test func aGzipStreamIsReadFromTheNearestCheckpointAtAnyOffset() async throws {
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let original = Self.logText(22 << 20)
        let compressed = try Self.gzip(original, at: root.appendingPathComponent("x"))
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try await store.create(id: id)
        let appender = try await store.openForAppend(id: id, at: 0)
        try compressed.withUnsafeBytes { try appender.append($0) }
        try await appender.sync()
        let reader = try await store.openForReading(id: id)
        // 1 MiB spacing and at most 4 checkpoints: the 5th drops every other one and doubles the spacing, three
        // times over 22 MiB of output (1, 2, 3, 4 → 2, 4 → … → 4, 8, 12, 16 → 8, 16), leaving 2, 8 MiB apart.
        let limits = BundleLimits(checkpointSpacing: 1 << 20, maxCheckpoints: 4)
        let size = Int64(compressed.count)
        let result = try await testWorkers.storage.blockingIO {
            try BundleIndexer.index(blob: reader, size: size, attachmentID: id, filename: "x.log.gz", limits: limits,
                                    now: Date())
        }
        #expect(result.index.state == .ready && result.index.format == .gzip && !result.index.truncated)
        #expect(result.index.checkpointSpacing == 8 << 20)
        #expect(result.checkpoints.map(\.number) == [1, 2])
        #expect(result.checkpoints[1].outputOffset - result.checkpoints[0].outputOffset >= 8 << 20)
        let entry = try #require(result.entries.first)
        #expect(entry.path == "x.log" && entry.size == Int64(original.count))
        #expect(entry.sha256 == SHA256Digest.hash(original).hexString)

        for first in [0, 1, 4 << 20, (12 << 20) + 12_345, (16 << 20) + 5, (22 << 20) - 70_000, original.count - 1_000] {
            let last = min(first + 65_536, original.count - 1)
            let checkpoint = result.checkpoints.last { $0.outputOffset <= Int64(first) }
            let entryReader = try await testWorkers.storage.blockingIO {
                try BundleEntryReader(blob: reader, blobSize: size, format: .gzip, entry: entry, checkpoint: checkpoint,
                                      range: Int64(first)...Int64(last))
            }
            var read: [UInt8] = []
            while let piece = try await testWorkers.storage.blockingIO({ try entryReader.next() }) { read += piece }
            #expect(read == Array(original[first...last]), "range starting at \(first)")
            #expect(entryReader.inflated == entryReader.plannedInflate)
            #expect(entryReader.plannedInflate == Int64(last - first + 1) + Int64(first) - (checkpoint?.outputOffset ?? 0))
            #expect(entryReader.plannedInflate <= (8 << 20) + 65_536 + 1)
        }
    }

    @Test func tarNumbersAreOctalOrBase256AndPaxRecordsAreLengthPrefixed() {
        var block = [UInt8](repeating: 0, count: 512)
        block.replaceSubrange(124..<136, with: Array("00000001750 ".utf8))
        #expect(TarParser.number(block, 124, 12) == 0o1750)
        block.replaceSubrange(124..<136, with: [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(TarParser.number(block, 124, 12) == 1 << 16)
        block.replaceSubrange(124..<136, with: Array("0000000175x ".utf8))
        #expect(TarParser.number(block, 124, 12) == nil)
        let pax = Array("30 path=logs/a very long name\n19 linkpath=/etc/x\n".utf8)
        #expect(TarParser.paxRecords(pax) == ["path": "logs/a very long name", "linkpath": "/etc/x"])
        #expect(BundleEntry.pathFlags("../x") == ["parent_path"])
        #expect(BundleEntry.pathFlags("/a/../b") == ["absolute_path", "parent_path"])
        #expect(BundleEntry.pathFlags("a/..b/c") == [])
    }
}
