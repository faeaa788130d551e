import Foundation
import NIOCore
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesStorage

/// `casefiles verify`: re-hashes every verified attachment's blob and compares it with the SHA-256 recorded when
/// it was verified, to find bit rot. It reports and never fixes; `bytesPerSecond` paces the reads so it can run
/// beside the service.
public enum BlobVerification {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var uploadID: String
        public var caseNumber: String
        public var filename: String
        /// What is wrong: missing, or the SHA-256 (or the length) found.
        public var detail: String
        public var description: String { "case \(caseNumber) attachment \(uploadID) (\(filename)): \(detail)" }
    }

    public struct Report: Sendable {
        public var checked = 0
        public var bytes: Int64 = 0
        public var problems: [Problem] = []
    }

    /// Checks every verified attachment, reading at most `bytesPerSecond` bytes a second (nil: as fast as the disk).
    public static func run(services: AppServices, bytesPerSecond: Double?) async throws -> Report {
        var report = Report()
        let started = ContinuousClock.now
        let chunk = 1 << 20
        for supportCase in try await services.database.allCases() {
            for upload in try await services.database.uploads(caseNumber: supportCase.number) where upload.state == .verified {
                func problem(_ detail: String) -> Problem {
                    Problem(uploadID: upload.id, caseNumber: upload.caseNumber, filename: upload.filename, detail: detail)
                }
                let reader: any BlobReader
                do {
                    reader = try await services.blobs.openForReading(id: upload.id)
                } catch StorageError.missingBlob {
                    // Purged since the listing? Then it is no longer an attachment.
                    if try await services.database.upload(id: upload.id)?.state == .verified {
                        report.problems.append(problem("missing: the blob file is gone"))
                    }
                    continue
                }
                var digest = SHA256Digest()
                var offset: Int64 = 0
                while true {
                    let buffer = try await reader.read(at: offset, count: chunk, allocator: ByteBufferAllocator())
                    if buffer.readableBytes == 0 { break }
                    digest.update(buffer)
                    offset += Int64(buffer.readableBytes)
                    report.bytes += Int64(buffer.readableBytes)
                    if let bytesPerSecond, bytesPerSecond > 0 {
                        let due = started + .milliseconds(Int64(Double(report.bytes) / bytesPerSecond * 1000))
                        if due > ContinuousClock.now { try await Task.sleep(until: due) }
                    }
                }
                report.checked += 1
                let found = digest.finalize().hexString
                if offset != upload.length {
                    report.problems.append(problem("length \(offset) bytes, recorded \(upload.length ?? -1)"))
                } else if found != upload.sha256 {
                    report.problems.append(problem("SHA-256 \(found), recorded \(upload.sha256 ?? "none")"))
                }
            }
        }
        return report
    }
}
