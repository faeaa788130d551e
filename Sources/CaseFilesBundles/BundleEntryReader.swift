import CZlib
import CaseFilesCore
import CaseFilesStorage
import Foundation

/// Reads a byte range of one entry, straight from the archive blob: stored data (tar, zip stored) with
/// preads, zip deflate by inflating the entry from its start, gzip formats by inflating from the nearest
/// checkpoint at or before the range (zran.c's restart: `Inflater.restart`) or from the stream's start.
/// It never asks zlib for more output than the range's end: `plannedInflate` (decompressed bytes from where
/// inflating starts to the range's last byte) is exact and known before the first byte is sent.
/// One reader serves one response on one thread at a time, hence `@unchecked Sendable`.
public final class BundleEntryReader: @unchecked Sendable {
    /// Decompressed bytes this read inflates in all (0 for stored data).
    public let plannedInflate: Int64
    /// Decompressed bytes inflated so far.
    public private(set) var inflated: Int64 = 0

    private var input: BlobInput
    private let inflater: Inflater?
    private let format: BundleFormat
    /// Zip: where the entry's compressed data ends (reads never pass it).
    private let dataEnd: Int64
    private var skip: Int64
    private var remaining: Int64
    private let scratch: UnsafeMutableRawBufferPointer

    /// - Parameters:
    ///   - checkpoint: gzip formats: the last checkpoint whose output offset is at or before the range's first
    ///     byte (`entry.dataOffset + range.lowerBound`), if any (`MetadataStore.bundleCheckpoint(atOrBefore:)`).
    ///   - range: bytes of the entry, within `0..<entry.size`.
    /// - Throws: `BundleReadError` when the checkpoint or the gzip header cannot be used; storage errors.
    @available(*, noasync, message: "reads the blob: run it on a blocking thread")
    public init(blob: any BlobReader, blobSize: Int64, format: BundleFormat, entry: BundleEntry,
                checkpoint: BundleCheckpoint?, range: ClosedRange<Int64>) throws {
        self.format = format
        let count = range.upperBound - range.lowerBound + 1
        remaining = count
        let bufferSize = Int(min(1 << 20, max(4096, (entry.compressedSize ?? (1 << 20)) + 64)))
        let stored = format == .tar || (format == .zip && entry.method != 8)
        if stored {
            input = BlobInput(reader: blob, size: blobSize, at: entry.dataOffset + range.lowerBound, bufferSize: bufferSize)
            inflater = nil
            skip = 0
            plannedInflate = 0
            dataEnd = format == .zip ? entry.dataOffset + (entry.compressedSize ?? 0) : blobSize
        } else if format == .zip {
            input = BlobInput(reader: blob, size: blobSize, at: entry.dataOffset, bufferSize: bufferSize)
            inflater = try Inflater()
            skip = range.lowerBound
            plannedInflate = range.upperBound + 1
            dataEnd = entry.dataOffset + (entry.compressedSize ?? 0)
        } else {
            let target = entry.dataOffset + range.lowerBound
            var gzipInput = BlobInput(reader: blob, size: blobSize)
            let inflater = try Inflater()
            let start: Int64
            if let checkpoint, checkpoint.outputOffset <= target {
                let previous = try checkpoint.bits > 0 ? gzipInput.bytes(at: checkpoint.inputOffset - 1, count: 1) : [0]
                guard previous.count == 1 else { throw BundleReadError.corrupt("a checkpoint lies outside the archive") }
                gzipInput.seek(checkpoint.inputOffset)
                try inflater.restart(bits: checkpoint.bits, previousByte: previous[0],
                                     window: try WindowCodec.decompress(checkpoint.window))
                start = checkpoint.outputOffset
            } else {
                guard let header = GzipHeader.parse(try gzipInput.bytes(at: 0, count: 64 * 1024)) else {
                    throw BundleReadError.corrupt("unreadable gzip header")
                }
                gzipInput.seek(Int64(header.length))
                start = 0
            }
            input = gzipInput
            self.inflater = inflater
            skip = target - start
            plannedInflate = target - start + count
            dataEnd = blobSize
        }
        scratch = .allocate(byteCount: 256 * 1024, alignment: 64)
    }

    deinit { scratch.deallocate() }

    /// The next piece of the range, at most 256 KiB; nil once the range is done.
    /// - Throws: `BundleReadError.truncated` / `.corrupt` when the archive ends or its data is damaged.
    @available(*, noasync, message: "reads and inflates: run it on a blocking thread")
    public func next() throws -> [UInt8]? {
        guard remaining > 0 else { return nil }
        guard let inflater else {
            let available = try bounded(try input.available())
            guard !available.isEmpty else { throw BundleReadError.truncated("the archive ends inside this entry") }
            let count = Int(min(remaining, Int64(available.count), Int64(scratch.count)))
            let piece = Array(UnsafeRawBufferPointer(rebasing: available[0..<count]))
            input.consume(count)
            remaining -= Int64(count)
            return piece
        }
        while true {
            let want = Int(skip > 0 ? min(skip, Int64(scratch.count)) : min(remaining, Int64(scratch.count)))
            let available = try bounded(try input.available())
            let out = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<want])
            let step = inflater.inflate(available, into: out, flush: Z_NO_FLUSH)
            input.consume(step.consumed)
            inflated += Int64(step.produced)
            switch step.status {
            case Z_OK, Z_BUF_ERROR where step.consumed > 0 || step.produced > 0:
                break
            case Z_BUF_ERROR where available.isEmpty:
                // No input left and nothing more inflated: the archive ends before the range does.
                throw BundleReadError.truncated("the archive ends inside this entry")
            case Z_STREAM_END where skip + remaining - Int64(step.produced) > 0:
                try nextMember()
            case Z_STREAM_END:
                break  // the stream ends with the range's last byte
            default:
                throw BundleReadError.corrupt("corrupt deflate data at compressed offset \(input.position): \(inflater.message)")
            }
            if skip > 0 {
                skip -= Int64(step.produced)
                continue
            }
            if step.produced > 0 {
                remaining -= Int64(step.produced)
                return Array(UnsafeRawBufferPointer(rebasing: scratch[0..<step.produced]))
            }
        }
    }

    /// After a deflate stream's end: for gzip, the next member (its trailer, 8 bytes, then its header); for
    /// zip, the entry's data is over, which is an error while bytes of the range are still owed.
    private func nextMember() throws {
        guard format == .gzip || format == .tarGzip, let inflater else {
            throw BundleReadError.corrupt("the entry's deflate data ends before its declared size")
        }
        let next = input.position + 8
        guard let header = GzipHeader.parse(try input.bytes(at: next, count: 64 * 1024)) else {
            throw BundleReadError.corrupt("the gzip data ends before this entry does")
        }
        input.seek(next + Int64(header.length))
        inflater.reset()
    }

    private func bounded(_ available: UnsafeRawBufferPointer) throws -> UnsafeRawBufferPointer {
        let left = dataEnd - input.position
        return left >= Int64(available.count) ? available : UnsafeRawBufferPointer(rebasing: available[0..<Int(max(0, left))])
    }
}
