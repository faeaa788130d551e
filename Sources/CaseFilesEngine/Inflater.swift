import CZlib
import CaseFilesCore

/// zlib's `inflate` over one stream (one request body of `casefiles-content-encoding`), fed piece by piece,
/// into ONE fixed output buffer allocated at creation: each `inflate` call hands its output to the caller,
/// who copies it on (the blob appender's staging buffer) before the next call reuses the buffer. Used by
/// one thread at a time (the request's bulk work), hence `@unchecked Sendable`.
package final class Inflater: @unchecked Sendable {
    /// Why the encoded bytes are not one complete stream.
    package enum Failure: Error, Sendable, Equatable {
        /// zlib refused the data (`Z_DATA_ERROR`: a bad header, a bad block, a CRC or length check that failed);
        /// `detail` is zlib's own message.
        case corrupt(String)
        /// Bytes followed the end of the stream: trailing garbage or a second gzip member (RFC 1952 allows
        /// several members; our extension says one stream per request).
        case trailingData
    }

    /// The output buffer's size in bytes: large enough that one call does real work (a 1 MiB staging
    /// buffer takes four), small enough to stay in cache.
    package static let outputSize = 256 * 1024

    package let coding: ContentCoding
    private let stream: UnsafeMutablePointer<z_stream>
    private let output: UnsafeMutableRawBufferPointer
    /// The stream's end was reached (and, for gzip, its CRC-32 and length checked).
    package private(set) var ended = false

    /// - Throws: `Failure.corrupt` if zlib cannot start (out of memory).
    package init(_ coding: ContentCoding) throws {
        self.coding = coding
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        output = .allocate(byteCount: Self.outputSize, alignment: 64)
        // gzip: windowBits 15 + 16 accepts only the gzip wrapper; deflate: 15 accepts only the zlib wrapper
        // (RFC 9110 §8.4.1.2), so raw deflate fails on its first bytes.
        let status = casefiles_inflate_init2(stream, coding.zlibWindowBits)
        guard status == Z_OK else {
            stream.deallocate()
            output.deallocate()
            throw Failure.corrupt("inflateInit2 failed (\(status))")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
        output.deallocate()
    }

    /// Encoded bytes consumed so far.
    package var totalIn: Int64 { Int64(stream.pointee.total_in) }
    /// Decoded bytes produced so far.
    package var totalOut: Int64 { Int64(stream.pointee.total_out) }

    /// Inflates all of `input`, handing each piece of output to `deliver` (valid only during that call).
    /// - Throws: `Failure` when the data is corrupt or runs past the stream's end; whatever `deliver` throws,
    ///   which stops inflating at once.
    package func inflate(_ input: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard input.count > 0 else { return }
        if ended { throw Failure.trailingData }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        let out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
        while true {
            stream.pointee.next_out = out
            stream.pointee.avail_out = uInt(Self.outputSize)
            let status = CZlib.inflate(stream, Z_NO_FLUSH)
            let produced = Self.outputSize - Int(stream.pointee.avail_out)
            switch status {
            case Z_OK, Z_BUF_ERROR:
                break  // Z_BUF_ERROR: no progress possible; more input is needed (checked below)
            case Z_STREAM_END:
                ended = true
            default:  // Z_DATA_ERROR, Z_NEED_DICT (a zlib preset dictionary, which no HTTP coding uses), Z_MEM_ERROR
                let message = stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                throw Failure.corrupt(message)
            }
            if produced > 0 { try deliver(UnsafeRawBufferPointer(start: output.baseAddress, count: produced)) }
            if ended {
                if stream.pointee.avail_in > 0 { throw Failure.trailingData }
                return
            }
            // All input taken and the output buffer not filled: zlib holds nothing more to give until more input.
            if stream.pointee.avail_in == 0 && produced < Self.outputSize { return }
        }
    }
}
