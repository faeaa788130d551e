@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import NIOCore
import Testing

@Suite struct FileBlobStoreTests {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("blobs-\(UUID().uuidString)")

    @Test func appendsAreDurableAndDiscardReturnsToTheCommittedLength() async throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try await store.create(id: id)
        let first = testBytes(100_000)
        let appender = try await store.openForAppend(id: id, at: 0)
        try first.withUnsafeBytes { try appender.append($0) }
        try await appender.sync()
        #expect(appender.position == 100_000)

        let second = try await store.openForAppend(id: id, at: 100_000)
        try testBytes(5_000, seed: 7).withUnsafeBytes { try second.append($0) }
        try await second.discard()
        let reader = try await store.openForReading(id: id)
        let all = try await reader.read(at: 0, count: 200_000, allocator: ByteBufferAllocator())
        #expect(Array(buffer: all) == first)
    }

    @Test func resumesAtUnalignedOffsetsKeepEveryCommittedByte() async throws {
        // Direct I/O writes whole 4 KiB blocks through a 1 MiB buffer, so every resume rewrites the
        // committed start of its first block, and a request may end anywhere inside a block.
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try await store.create(id: id)
        var expected: [UInt8] = []
        for (round, size) in [1, 4095, 4097, 1_048_575, 3_000_001, 12_345, 1 << 20].enumerated() {
            let bytes = testBytes(size, seed: UInt64(round))
            let appender = try await store.openForAppend(id: id, at: Int64(expected.count))
            for piece in stride(from: 0, to: size, by: 70_001) {
                try bytes[piece..<min(piece + 70_001, size)].withUnsafeBytes { try appender.append($0) }
            }
            try await appender.sync()
            expected += bytes

            // A request that is then thrown away (a failed checksum) leaves the committed bytes alone,
            // even after it wrote whole buffers past them.
            let rejected = try await store.openForAppend(id: id, at: Int64(expected.count))
            try testBytes(2_500_000, seed: 99).withUnsafeBytes { try rejected.append($0) }
            try await rejected.discard()
        }
        let all = try await store.openForReading(id: id).read(at: 0, count: expected.count + 4096, allocator: ByteBufferAllocator())
        let stored = Array(buffer: all)
        #expect(stored.count == expected.count)
        let firstDifference = zip(stored, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstDifference == nil)  // a byte offset, not megabytes of array in the log
    }

    @Test func reopeningDropsBytesPastTheCommittedOffset() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try store.create(id: id)
        let appender = try store.openFileForAppend(id: id, at: 0)
        try testBytes(1000).withUnsafeBytes { try appender.append($0) }
        _ = try store.openFileForAppend(id: id, at: 600)
        let size = try FileManager.default.attributesOfItem(atPath: store.path(for: id))[.size] as? Int
        #expect(size == 600)
    }

    @Test func blobsAreListedAndRemoved() async throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let ids = (0..<5).map { _ in SecureRandom.identifier() }
        for id in ids { try await store.create(id: id) }
        #expect(Set(try await store.storedIDs()) == Set(ids))
        try await store.remove(id: ids[0])
        try await store.remove(id: ids[0])  // idempotent
        #expect(Set(try await store.storedIDs()) == Set(ids.dropFirst()))
        #expect(try await store.availableBytes() ?? 0 > 0)
    }

    @Test func creatingTheSameIdTwiceFails() throws {
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try store.create(id: id)
        #expect(throws: StorageError.self) { try store.create(id: id) }
    }
}

@Suite struct UploadWriterLocksTests {
    @Test func aNewcomerStopsTheHolderAndTakesOverWhenItReleases() async throws {
        let locks = UploadWriterLocks()
        let stopped = Flag()
        let first = try #require(await locks.acquire("u", stop: { stopped.set() }))
        async let second = locks.acquire("u", stop: {})
        try await Task.sleep(for: .milliseconds(50))
        #expect(stopped.value)
        await locks.release(first)
        #expect(await second != nil)
    }

    @Test func anOlderWaiterIsSupersededByANewerOne() async throws {
        let locks = UploadWriterLocks()
        let holder = try #require(await locks.acquire("u", stop: {}))
        async let older = locks.acquire("u", stop: {})
        try await Task.sleep(for: .milliseconds(50))
        async let newer = locks.acquire("u", stop: {})
        #expect(await older == nil)
        await locks.release(holder)
        let lease = await newer
        #expect(lease != nil)
    }

    @Test func differentUploadsDoNotContend() async throws {
        let locks = UploadWriterLocks()
        let a = await locks.acquire("a", stop: { Issue.record("a must not be stopped") })
        let b = await locks.acquire("b", stop: {})
        #expect(a != nil && b != nil)
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = false
    var value: Bool { lock.withLock { _value } }
    func set() { lock.withLock { _value = true } }
}

/// Everything under the storage root is private: folders 0700, files 0600, checked at every open.
@Suite struct StoragePermissionTests {
    static func mode(_ path: String) -> mode_t {
        var info = stat()
        #expect(lstat(path, &info) == 0, "\(path) should exist")
        return info.st_mode & 0o7777
    }

    @Test func openingAFreshRootMakesEveryPathPrivate() async throws {
        let world = try await TestWorld()
        try await world.withServer { client in _ = try await DownloadTests.attach(client, world, testBytes(10)) }
        let root = world.root.path
        #expect(Self.mode(root) == 0o700)
        // On PostgreSQL (`TestDatabase`) there is no SQLite file in the root.
        for name in (TestDatabase.postgres == nil ? ["casefiles.sqlite"] : []) + ["link-signing.key"] {
            #expect(Self.mode("\(root)/\(name)") == 0o600, "\(name)")
        }
        #expect(TestDatabase.postgres == nil || !FileManager.default.fileExists(atPath: "\(root)/casefiles.sqlite"))
        #expect(Self.mode("\(root)/blobs") == 0o700)
        let shards = try FileManager.default.contentsOfDirectory(atPath: "\(root)/blobs")
        #expect(shards.count == 1)
        for shard in shards {
            #expect(Self.mode("\(root)/blobs/\(shard)") == 0o700)
            for blob in try FileManager.default.contentsOfDirectory(atPath: "\(root)/blobs/\(shard)") {
                #expect(Self.mode("\(root)/blobs/\(shard)/\(blob)") == 0o600)
            }
        }
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: "\(root)/casefiles.sqlite\(suffix)") {
            #expect(Self.mode("\(root)/casefiles.sqlite\(suffix)") == 0o600, "\(suffix)")
        }
        #expect(AppServices.permissionProblems(storage: world.root) == [])
    }

    @Test(.enabled(if: TestDatabase.postgres == nil, "tests the SQLite file itself"))
    func aDatabaseOpenToOthersIsReportedAndStrictOpeningRefuses() async throws {
        let world = try await TestWorld()
        let database = world.root.appendingPathComponent("casefiles.sqlite").path
        let blobs = world.root.appendingPathComponent("blobs").path
        #expect(chmod(database, 0o644) == 0 && chmod(blobs, 0o755) == 0)
        let problems = AppServices.permissionProblems(storage: world.root)
        #expect(problems.map(\.path) == [database, blobs])
        #expect(problems.map(\.mode) == [0o644, 0o755])
        #expect(problems[0].description == "\(database) has mode 0644 but holds secrets: it should be 0600 (run: chmod 600 '\(database)')")
        let root = world.root
        _ = try await testWorkers.storage.blockingIO { try AppServices.open(storage: root, workers: testWorkers) }  // warns, opens
        #expect(throws: StoragePermissionsError.self) {
            try AppServices.open(storage: world.root, workers: testWorkers, security: SecurityPolicy(strictPermissions: true))
        }
        do {
            _ = try await testWorkers.storage.blockingIO {
                try AppServices.open(storage: root, workers: testWorkers, security: SecurityPolicy(strictPermissions: true))
            }
        } catch let error as StoragePermissionsError {
            #expect(error.description.contains("chmod 600 '\(database)'") && error.description.contains("chmod 700 '\(blobs)'"))
        }
    }

    @Test func aDamagedKeyFileIsRefusedNotReplaced() async throws {
        let world = try await TestWorld()
        let keyFile = world.root.appendingPathComponent("link-signing.key")
        try Data("current nothex\n".utf8).write(to: keyFile)
        #expect(throws: LinkKeyFileError.self) { try AppServices.open(storage: world.root, workers: testWorkers).linkKeys.keys() }
        #expect(try String(contentsOf: keyFile, encoding: .utf8) == "current nothex\n")
    }
}

@Suite struct StagingBuffersTests {
    /// A returned buffer is the next one taken (no fresh pages), and at most `retained` are kept.
    @Test func returnedBuffersAreReusedAndAtMostRetainedAreKept() throws {
        let pool = StagingBuffers(size: 1 << 20, retained: 2)
        let first = try pool.take(), second = try pool.take(), third = try pool.take()
        #expect(Set([first.baseAddress, second.baseAddress, third.baseAddress]).count == 3)
        #expect(pool.mappedCount == 3)
        for buffer in [first, second, third] {
            for page in stride(from: 0, to: buffer.count, by: 4096) { buffer.storeBytes(of: 0xA5, toByteOffset: page, as: UInt8.self) }
        }
        pool.give(first)
        pool.give(second)
        pool.give(third)  // over `retained`: unmapped, not kept
        #expect(pool.idleCount == 2)
        #expect(pool.mappedCount == 2)
        let again = try pool.take()
        #expect(again.baseAddress == second.baseAddress)
        let more = try pool.take()
        #expect(more.baseAddress == first.baseAddress)
        #expect(pool.idleCount == 0)
        #expect(pool.mappedCount == 2)
        pool.give(again)
        pool.give(more)
    }

    /// An appender takes its buffers (`buffersPerAppender`) from its store and gives them back when it goes, synced
    /// or discarded: one request after another maps no more than two appenders' worth (the last appender's writer
    /// thread may hold it a moment), and bytes left in a reused buffer by an earlier request never reach the blob.
    @Test func appendersGiveTheirBuffersBackAndStaleBytesNeverReachTheBlob() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("blobs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try FileBlobStore(root: root, threads: testWorkers.storage)
        let id = SecureRandom.identifier()
        try await store.create(id: id)
        var expected: [UInt8] = []
        for round in 0..<6 {
            // Rounds after the first start mid-block (3,000,000 is not a multiple of 4096), in a reused buffer;
            // the later ones fill more buffers than an appender holds, so each reuses buffers it wrote from.
            let appender = try await store.openForAppend(id: id, at: Int64(expected.count))
            let bytes = testBytes(3_000_000 + round * 1_100_000, seed: UInt64(round))
            try bytes.withUnsafeBytes { try appender.append($0) }
            if round % 2 == 0 {
                try await appender.sync()
                expected += bytes
            } else {
                try await appender.discard()
            }
        }
        #expect(store.staging.mappedCount <= 2 * FileBlobAppender.buffersPerAppender)
        let deadline = ContinuousClock.now + .seconds(10)
        while store.staging.idleCount != store.staging.mappedCount && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(store.staging.idleCount == store.staging.mappedCount)  // none lost
        let stored = Array(buffer: try await store.openForReading(id: id).read(
            at: 0, count: expected.count + 1, allocator: ByteBufferAllocator()))
        #expect(stored.count == expected.count)
        #expect(zip(stored, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset == nil)
    }

    /// Device writes that fail while others are in flight: the failure surfaces (at an append that finds no spare
    /// buffer, or at `sync`: before any 204), the discard waits for every write and empties the blob, and every
    /// buffer comes back to the pool once the appender goes.
    @Test func aFailedBackgroundWriteSurfacesAndEveryBufferComesBack() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("blobs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let path = root.appendingPathComponent("blob").path
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let fd = open(path, O_RDWR | O_CLOEXEC)
        let readOnly = open(path, O_RDONLY | O_CLOEXEC)  // as the O_DIRECT descriptor: every device write fails (EBADF)
        #expect(fd >= 0 && readOnly >= 0)
        let pool = StagingBuffers(size: FileBlobAppender.stagingSize)
        do {
            let appender = try FileBlobAppender(fd: fd, directFD: readOnly, start: 0, threads: testWorkers.storage, buffers: pool)
            // More full buffers than the appender holds: it must wait for a failed write to refill its buffer.
            let bytes = testBytes((FileBlobAppender.buffersPerAppender + 1) * FileBlobAppender.stagingSize + 123)
            await #expect(throws: StorageError.io(operation: "write", errno: EBADF)) {
                try bytes.withUnsafeBytes { try appender.append($0) }
                try await appender.sync()
            }
            try await appender.discard()
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
            #expect(size == 0)
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while pool.idleCount != FileBlobAppender.buffersPerAppender && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(pool.idleCount == FileBlobAppender.buffersPerAppender)
        #expect(pool.mappedCount == FileBlobAppender.buffersPerAppender)
    }

    /// An appender that fails to start (its committed head cannot be read back) gives its buffers back.
    @Test func anAppenderThatFailsToStartGivesItsBuffersBack() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("blobs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let path = root.appendingPathComponent("blob").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 10_000)))
        let fd = open(path, O_WRONLY | O_CLOEXEC)  // write-only: reading the head back fails
        #expect(fd >= 0)
        let pool = StagingBuffers(size: FileBlobAppender.stagingSize)
        #expect(throws: StorageError.self) {
            _ = try FileBlobAppender(fd: fd, directFD: -1, start: 5_000, threads: testWorkers.storage, buffers: pool)
        }
        #expect(pool.mappedCount == FileBlobAppender.buffersPerAppender)
        #expect(pool.idleCount == FileBlobAppender.buffersPerAppender)
    }
}
