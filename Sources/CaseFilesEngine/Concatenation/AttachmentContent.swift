import Foundation
import NIOCore
import CaseFilesCore
import CaseFilesStorage

/// An attachment's bytes for downloads: its blob, or for a final upload (tus concatenation) its partials' blobs in
/// order, read in place: the final is a manifest of its partials, never a copy.
public struct AttachmentContent: Sendable {
    private struct Segment: Sendable {
        var start: Int64
        var length: Int64
        var reader: any BlobReader
    }

    private let segments: [Segment]

    /// Opens the blobs of a verified attachment.
    /// - Throws: `StorageError.missingBlob` and the store's errors.
    public static func open(_ upload: Upload, services: AppServices) async throws -> AttachmentContent {
        guard upload.concat == .final else {
            let reader = try await services.blobs.openForReading(id: upload.id)
            return AttachmentContent(segments: [Segment(start: 0, length: upload.offset, reader: reader)])
        }
        var segments: [Segment] = []
        var start: Int64 = 0
        for part in try await services.database.finalParts(finalID: upload.id) {
            segments.append(Segment(start: start, length: part.offset, reader: try await services.blobs.openForReading(id: part.id)))
            start += part.offset
        }
        return AttachmentContent(segments: segments)
    }

    /// Reads up to `count` bytes at `offset` of the whole content (fewer at a partial's end: call again from there).
    public func read(at offset: Int64, count: Int, allocator: ByteBufferAllocator) async throws -> ByteBuffer {
        guard let segment = segments.first(where: { offset >= $0.start && offset < $0.start + $0.length }) else {
            return allocator.buffer(capacity: 0)
        }
        let within = offset - segment.start
        return try await segment.reader.read(at: within, count: Int(min(Int64(count), segment.length - within)),
                                             allocator: allocator)
    }
}
