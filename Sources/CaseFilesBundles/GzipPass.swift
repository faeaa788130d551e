import CZlib
import CaseFilesCore
import CaseFilesStorage
import Foundation

/// The one pass over a gzip blob (RFC 1952; several members are read one after another, as gzip does):
/// inflates it with Z_BLOCK, hands the output to `sink`, and records checkpoints as zlib's zran.c does
/// (examples/zran.c): at a deflate block boundary at least `spacing` output bytes after the previous one, the
/// compressed offset, the unused bits of the byte before it, the output offset and the 32 KiB window.
/// When the checkpoints would pass `limits.maxCheckpoints`, every other one is dropped and the spacing doubles.
struct GzipPass {
    static let windowSize = 32 * 1024

    var checkpoints: [BundleCheckpoint] = []
    private(set) var spacing: Int64
    private(set) var output: Int64 = 0
    /// Why the pass stopped before the end of the gzip data (corrupt, truncated, a bomb); nil if it did not.
    private(set) var stopReason: String?
    /// The original file name of the first member's header (FNAME), if any.
    private(set) var originalName: String?

    private let attachmentID: String
    private let limits: BundleLimits
    private var window: [UInt8]
    private var windowEnd = 0
    private var windowFilled = 0

    init(attachmentID: String, limits: BundleLimits) {
        self.attachmentID = attachmentID
        self.limits = limits
        self.spacing = limits.checkpointSpacing
        self.window = [UInt8](repeating: 0, count: Self.windowSize)
    }

    /// Runs the pass; `sink` gets the output in order and returns false to stop early (the tar parser is
    /// done). `shouldStop` is polled between buffers (shutdown).
    mutating func run(_ input: inout BlobInput, shouldStop: () -> Bool,
                      sink: (UnsafeRawBufferPointer) -> Bool) throws {
        guard let first = GzipHeader.parse(try input.bytes(at: 0, count: 64 * 1024)) else {
            stopReason = "unreadable gzip header"
            return
        }
        originalName = first.name
        input.seek(Int64(first.length))
        let inflater = try Inflater()
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 64)
        defer { out.deallocate() }
        var sinkWantsMore = true
        while sinkWantsMore {
            if shouldStop() { throw CancellationError() }
            // At the end of the blob inflate still runs once with no input: it may hold output it could not place.
            let available = try input.available()
            let step = inflater.inflate(available, into: out, flush: Z_BLOCK)
            input.consume(step.consumed)
            if step.produced > 0 {
                let produced = UnsafeRawBufferPointer(rebasing: out[0..<step.produced])
                remember(produced)
                output += Int64(step.produced)
                sinkWantsMore = sink(produced)
            }
            switch step.status {
            case Z_OK, Z_BUF_ERROR:
                if available.isEmpty && step.produced == 0 {
                    stopReason = "the gzip data ends early (truncated) at compressed offset \(input.position)"
                    return
                }
            case Z_STREAM_END:
                // The member's trailer (CRC-32, ISIZE: 8 bytes), then another member or the end. Bytes after
                // the last member that are not a gzip header (padding) are ignored, as gzip does.
                let next = input.position + 8
                guard next < input.size,
                      let header = GzipHeader.parse(try input.bytes(at: next, count: 64 * 1024)) else { return }
                input.seek(next + Int64(header.length))
                inflater.reset()
                continue
            default:
                stopReason = "corrupt deflate data at compressed offset \(input.position): \(inflater.message)"
                return
            }
            if limits.exceedsExpansion(output: output, input: input.position) {
                stopReason = "the gzip data expands more than \(limits.maxExpansionRatio):1 (a gzip bomb?); "
                    + "stopped at decompressed offset \(output)"
                return
            }
            if inflater.atBlockBoundary, output - (checkpoints.last?.outputOffset ?? 0) >= spacing {
                try addCheckpoint(inputOffset: input.position, bits: inflater.unusedBits)
            }
        }
    }

    private mutating func remember(_ bytes: UnsafeRawBufferPointer) {
        var bytes = bytes
        if bytes.count > Self.windowSize { bytes = UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - Self.windowSize)...]) }
        var at = 0
        while at < bytes.count {
            let end = windowEnd
            let take = min(Self.windowSize - end, bytes.count - at)
            window.withUnsafeMutableBytes { target in
                UnsafeMutableRawBufferPointer(rebasing: target[end..<end + take])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at..<at + take]))
            }
            windowEnd = (windowEnd + take) % Self.windowSize
            at += take
        }
        windowFilled = min(Self.windowSize, windowFilled + bytes.count)
    }

    private mutating func addCheckpoint(inputOffset: Int64, bits: Int) throws {
        let recent: [UInt8] = windowFilled < Self.windowSize
            ? Array(window[0..<windowFilled])
            : Array(window[windowEnd...] + window[..<windowEnd])
        checkpoints.append(BundleCheckpoint(
            attachmentID: attachmentID, number: 0, outputOffset: output, inputOffset: inputOffset, bits: bits,
            window: try WindowCodec.compress(recent)))
        if checkpoints.count > limits.maxCheckpoints {
            checkpoints = checkpoints.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
            spacing *= 2
        }
    }
}

/// Checkpoint windows are kept deflated (zlib `compress2`): text windows shrink several times.
enum WindowCodec {
    static func compress(_ bytes: [UInt8]) throws -> Data {
        var length = compressBound(uLong(bytes.count))
        var out = [UInt8](repeating: 0, count: Int(length))
        let status = CZlib.compress2(&out, &length, bytes, uLong(bytes.count), 6)
        guard status == Z_OK else { throw BundleReadError.zlib("compress2", status) }
        return Data(out[0..<Int(length)])
    }

    static func decompress(_ data: Data) throws -> [UInt8] {
        var length = uLongf(GzipPass.windowSize)
        var out = [UInt8](repeating: 0, count: GzipPass.windowSize)
        let source = [UInt8](data)
        let status = CZlib.uncompress(&out, &length, source, uLong(source.count))
        guard status == Z_OK else { throw BundleReadError.zlib("uncompress", status) }
        return Array(out[0..<Int(length)])
    }
}
