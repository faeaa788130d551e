import CaseFilesCore
import CaseFilesStorage
import Foundation

/// Builds an attachment's index in one streaming pass over its verified blob: no temporary copy, nothing
/// extracted. The container is recognised by its first bytes, never by the file name.
public enum BundleIndexer {
    public struct Result: Sendable {
        public var index: BundleIndex
        public var entries: [BundleEntry]
        public var checkpoints: [BundleCheckpoint]

        public init(index: BundleIndex, entries: [BundleEntry], checkpoints: [BundleCheckpoint]) {
            self.index = index
            self.entries = entries
            self.checkpoints = checkpoints
        }
    }

    /// - Parameters:
    ///   - filename: the attachment's name, for a plain gzip without a stored name (`x.log.gz` → `x.log`).
    ///   - shouldStop: polled between buffers; true throws `CancellationError` (shutdown: the index stays pending).
    /// - Throws: storage errors (the blob cannot be read), `CancellationError`. Anything wrong with the archive
    ///   itself is a result (`unreadable`, or `ready` and `truncated`), never an error.
    @available(*, noasync, message: "reads the whole blob: run it on a blocking thread")
    public static func index(blob: any BlobReader, size: Int64, attachmentID: String, filename: String,
                             limits: BundleLimits, now: Date, shouldStop: () -> Bool = { false }) throws -> Result {
        var input = BlobInput(reader: blob, size: size)
        let head = try input.bytes(at: 0, count: 512)
        func result(_ state: BundleIndexState, _ format: BundleFormat? = nil, reason: String? = nil) -> Result {
            Result(index: BundleIndex(attachmentID: attachmentID, state: state, format: format, reason: reason, updatedAt: now),
                   entries: [], checkpoints: [])
        }
        switch Sniffed(head) {
        case .notAnArchive:
            return result(.notAnArchive)
        case .unsupported(let what):
            return result(.unreadable, reason: "\(what) is not indexed; only zip, tar, tar.gz and gzip are")
        case .tar:
            let parser = TarParser(attachmentID: attachmentID, limits: limits)
            while !parser.done {
                if shouldStop() { throw CancellationError() }
                let available = try input.available()
                if available.isEmpty { break }
                parser.consume(available)
                input.consume(available.count)
            }
            parser.finish(cutShort: nil)
            return finished(.tar, parser.entries, [], stop: parser.stopReason, at: parser.stoppedAt, spacing: nil,
                            attachmentID: attachmentID, now: now)
        case .gzip:
            return try gzip(&input, attachmentID: attachmentID, filename: filename, limits: limits, now: now,
                            shouldStop: shouldStop)
        case .zip:
            do {
                var (located, truncated): ([ZipDirectory.Located], String?)
                do {
                    (located, truncated) = try ZipDirectory.read(&input, attachmentID: attachmentID, limits: limits)
                } catch BundleReadError.truncated {
                    // No central directory: what the local headers say, so what was readable stays readable.
                    let scanned = try ZipDirectory.scanLocalHeaders(&input, attachmentID: attachmentID, limits: limits)
                    guard !scanned.entries.isEmpty else { return result(.unreadable, .zip, reason: scanned.stopReason) }
                    (located, truncated) = (scanned.entries, scanned.stopReason)
                }
                try ZipDirectory.hash(&located, input: &input, limits: limits, shouldStop: shouldStop)
                return finished(.zip, located.map(\.entry), [], stop: truncated, at: nil, spacing: nil,
                                attachmentID: attachmentID, now: now)
            } catch let error as BundleReadError {
                return result(.unreadable, .zip, reason: error.description)
            }
        }
    }

    private static func gzip(_ input: inout BlobInput, attachmentID: String, filename: String, limits: BundleLimits,
                             now: Date, shouldStop: () -> Bool) throws -> Result {
        var pass = GzipPass(attachmentID: attachmentID, limits: limits)
        // The first 512 decompressed bytes decide: a tar header there makes it a tar.gz, else one gzipped file.
        var firstBlock: [UInt8] = []
        var tar: TarParser?
        var single = SHA256Digest()
        try pass.run(&input, shouldStop: shouldStop) { bytes in
            var bytes = bytes
            if tar == nil && firstBlock.count < 512 {
                let take = min(512 - firstBlock.count, bytes.count)
                firstBlock.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
                guard firstBlock.count == 512 else { return true }
                bytes = UnsafeRawBufferPointer(rebasing: bytes[take...])
                // A tar header, not merely zeros: a gzipped run of zeros (a gzip bomb) is one file, not an empty tar.
                if TarParser.checksumMatches(firstBlock) {
                    let parser = TarParser(attachmentID: attachmentID, limits: limits)
                    firstBlock.withUnsafeBytes { _ = parser.consume($0) }
                    tar = parser
                } else {
                    firstBlock.withUnsafeBytes { single.update($0) }
                }
            }
            if let tar { return tar.consume(bytes) }
            single.update(bytes)
            return true
        }
        let checkpoints = pass.checkpoints.enumerated().map { offset, point in
            var point = point
            point.number = offset + 1
            return point
        }
        if tar == nil && firstBlock.count < 512 {
            // Shorter than a tar header: one small gzipped file, whose bytes are all still in `firstBlock`.
            firstBlock.withUnsafeBytes { single.update($0) }
        }
        if let tar {
            tar.finish(cutShort: pass.stopReason)
            return finished(.tarGzip, tar.entries, checkpoints, stop: tar.stopReason, at: tar.stoppedAt,
                            spacing: pass.spacing, attachmentID: attachmentID, now: now)
        }
        let name = pass.originalName.flatMap { $0.isEmpty ? nil : $0 } ?? Self.gunzippedName(filename)
        let entry = BundleEntry(
            attachmentID: attachmentID, number: 1, path: name, size: pass.output, modifiedAt: nil, type: .file,
            dataOffset: 0, problem: pass.stopReason, sha256: pass.stopReason == nil ? single.finalize().hexString : nil,
            flags: BundleEntry.pathFlags(name))
        return finished(.gzip, [entry], checkpoints, stop: pass.stopReason, at: pass.stopReason == nil ? nil : pass.output,
                        spacing: pass.spacing, attachmentID: attachmentID, now: now)
    }

    static func gunzippedName(_ filename: String) -> String {
        for suffix in [".gz", ".gzip", ".z"] where filename.lowercased().hasSuffix(suffix) && filename.count > suffix.count {
            return String(filename.dropLast(suffix.count))
        }
        return filename
    }

    private static func finished(_ format: BundleFormat, _ entries: [BundleEntry], _ checkpoints: [BundleCheckpoint],
                                 stop: String?, at stoppedAt: Int64?, spacing: Int64?, attachmentID: String,
                                 now: Date) -> Result {
        // What the rows cost in the database, roughly: the text columns plus a fixed share for the rest.
        let entryBytes = entries.reduce(Int64(0)) { sum, entry in
            sum + 96 + Int64(entry.path.utf8.count + (entry.linkTarget?.utf8.count ?? 0) + (entry.sha256 == nil ? 0 : 64))
        }
        let checkpointBytes = checkpoints.reduce(Int64(0)) { $0 + 48 + Int64($1.window.count) }
        let index = BundleIndex(
            attachmentID: attachmentID, state: .ready, format: format, reason: stop, entryCount: entries.count,
            truncated: stop != nil, stoppedAt: stop == nil ? nil : stoppedAt, checkpointSpacing: spacing,
            indexBytes: entryBytes + checkpointBytes, updatedAt: now)
        return Result(index: index, entries: entries, checkpoints: checkpoints)
    }
}

/// What the first bytes of a blob say it is (the magic numbers of each format's specification).
enum Sniffed {
    case zip, tar, gzip, notAnArchive
    case unsupported(String)

    init(_ head: [UInt8]) {
        func starts(_ magic: [UInt8]) -> Bool { head.starts(with: magic) }
        if starts([0x1f, 0x8b]) {
            self = .gzip
        } else if starts([0x50, 0x4b, 3, 4]) || starts([0x50, 0x4b, 5, 6]) || starts([0x50, 0x4b, 7, 8]) {
            self = .zip
        } else if head.count == 512 && !head.allSatisfy({ $0 == 0 }) && TarParser.checksumMatches(head) {
            self = .tar
        } else if starts([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]) {
            self = .unsupported("xz compression")
        } else if starts(Array("BZh".utf8)) {
            self = .unsupported("bzip2 compression")
        } else if starts([0x28, 0xb5, 0x2f, 0xfd]) {
            self = .unsupported("Zstandard compression")
        } else if starts([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]) {
            self = .unsupported("a 7z archive")
        } else if starts(Array("Rar!".utf8)) {
            self = .unsupported("a RAR archive")
        } else {
            self = .notAnArchive
        }
    }
}
