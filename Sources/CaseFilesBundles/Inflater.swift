import CZlib
import Foundation

/// A raw deflate decoder (zlib, windowBits -15: no zlib or gzip wrapper; the gzip headers are parsed by
/// `GzipHeader`, so a restart at a checkpoint and a start at byte 0 are the same code). The `z_stream` lives
/// at a fixed address: zlib's state points back at it, so it must never move (hence a class and a pointer).
final class Inflater {
    let stream: UnsafeMutablePointer<z_stream>

    init() throws {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = casefiles_inflate_init2(stream, -15)
        // On failure `deinit` still runs (every property is set): inflateEnd refuses the unset state, and the
        // pointer is freed there, once.
        guard status == Z_OK else { throw BundleReadError.zlib("inflateInit2", status) }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Starts a new raw deflate stream (the next gzip member).
    func reset() { inflateReset2(stream, -15) }

    /// zran.c's restart: the `bits` unused high bits of the byte before the checkpoint's input offset, then
    /// the 32 KiB of output before it as the dictionary (RFC 1951 §3.2: back-references reach 32 KiB).
    func restart(bits: Int, previousByte: UInt8, window: [UInt8]) throws {
        if bits > 0 {
            let status = inflatePrime(stream, Int32(bits), Int32(previousByte >> (8 - UInt8(bits))))
            guard status == Z_OK else { throw BundleReadError.zlib("inflatePrime", status) }
        }
        if !window.isEmpty {
            let status = window.withUnsafeBufferPointer { inflateSetDictionary(stream, $0.baseAddress, uInt($0.count)) }
            guard status == Z_OK else { throw BundleReadError.zlib("inflateSetDictionary", status) }
        }
    }

    struct Step {
        var consumed: Int
        var produced: Int
        var status: Int32
    }

    /// One `inflate` call over `input` into `output`. `flush`: Z_NO_FLUSH, or Z_BLOCK to stop at each deflate
    /// block boundary (the indexer's checkpoints; `blockBoundary` tells).
    func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, flush: Int32) -> Step {
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        let status = CZlib.inflate(stream, flush)
        return Step(consumed: input.count - Int(stream.pointee.avail_in),
                    produced: output.count - Int(stream.pointee.avail_out), status: status)
    }

    /// zlib.h, inflate with Z_BLOCK: bit 7 of data_type is set at the end of a block header or block, bit 6
    /// when that block is the last one, and bits 0-2 are the unused bits of the last byte consumed.
    var atBlockBoundary: Bool { stream.pointee.data_type & 128 != 0 && stream.pointee.data_type & 64 == 0 }
    var unusedBits: Int { Int(stream.pointee.data_type & 7) }
    var message: String { stream.pointee.msg.map { String(cString: $0) } ?? "invalid deflate data" }
}

/// Why an entry or an archive could not be read.
public enum BundleReadError: Error, Equatable, CustomStringConvertible {
    case zlib(String, Int32)
    case corrupt(String)
    case truncated(String)

    public var description: String {
        switch self {
        case .zlib(let call, let status): "zlib \(call) failed (\(status))"
        case .corrupt(let what): what
        case .truncated(let what): what
        }
    }
}

/// The gzip member header (RFC 1952 §2.3): its length, and the original file name if it carries one.
enum GzipHeader {
    struct Parsed {
        var length: Int
        var name: String?
    }

    /// Nil when `bytes` does not start with a complete gzip header (the magic, deflate, and the optional
    /// fields all present).
    static func parse(_ bytes: [UInt8]) -> Parsed? {
        guard bytes.count >= 10, bytes[0] == 0x1f, bytes[1] == 0x8b, bytes[2] == 8 else { return nil }
        let flags = bytes[3]
        var at = 10
        if flags & 4 != 0 {  // FEXTRA
            guard bytes.count >= at + 2 else { return nil }
            at += 2 + (Int(bytes[at]) | Int(bytes[at + 1]) << 8)
        }
        var name: String?
        if flags & 8 != 0 {  // FNAME, zero-terminated ISO 8859-1
            guard let end = bytes[min(at, bytes.count)...].firstIndex(of: 0) else { return nil }
            name = String(bytes[at..<end].map { Character(Unicode.Scalar($0)) })
            at = end + 1
        }
        if flags & 16 != 0 {  // FCOMMENT
            guard let end = bytes[min(at, bytes.count)...].firstIndex(of: 0) else { return nil }
            at = end + 1
        }
        if flags & 2 != 0 { at += 2 }  // FHCRC
        guard at <= bytes.count else { return nil }
        return Parsed(length: at, name: name)
    }
}
