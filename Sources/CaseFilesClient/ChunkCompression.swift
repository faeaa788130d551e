import CZlib
import Foundation
import NIOCore
import CaseFilesCore

/// `casefiles upload --compress`: whether chunks are sent gzip-compressed (`casefiles-content-encoding`).
public enum CompressMode: String, Sendable, CaseIterable {
    /// On for text-like files, off for already-compressed ones, decided from the file's first bytes.
    case auto
    case on
    case off
}

/// Compresses upload chunks in memory (the chunk is in memory anyway) and decides whether a file is worth it.
package enum ChunkCompression {
    /// How much of the file's start `looksCompressible` reads.
    package static let sampleSize = 64 * 1024
    /// Byte entropy (bits per byte) above which a sample counts as already compressed or encrypted: text
    /// and logs run at 4.5-6, deflate/zstd output and random bytes at 7.9-8.
    package static let entropyLimit = 7.5
    /// A chunk that would expand more than this (decoded bytes per byte sent) goes uncompressed: the server
    /// refuses a body past its `--max-compression-ratio` (default 1000:1) as a possible bomb, and runs of
    /// zeros deflate at up to ~1032:1.
    package static let maxRatio = 500

    /// The signatures of formats that are compressed already (their first bytes).
    private static let compressedMagic: [[UInt8]] = [
        [0x1F, 0x8B],  // gzip (RFC 1952)
        [0x50, 0x4B, 0x03, 0x04],  // zip (and docx, xlsx, jar, apk)
        [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00],  // xz
        [0x28, 0xB5, 0x2F, 0xFD],  // zstd
        [0x42, 0x5A, 0x68],  // bzip2 "BZh"
        [0x89, 0x50, 0x4E, 0x47],  // PNG
        [0xFF, 0xD8, 0xFF],  // JPEG
        [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C],  // 7z
    ]

    /// Whether a file starting with `sample` (its first `sampleSize` bytes, or all of a smaller file) is worth
    /// compressing: not a known compressed format, and the sample's byte entropy under `entropyLimit`.
    package static func looksCompressible(_ sample: UnsafeRawBufferPointer) -> Bool {
        guard !sample.isEmpty else { return false }
        for magic in compressedMagic where sample.count >= magic.count && zip(sample, magic).allSatisfy({ $0 == $1 }) {
            return false
        }
        return entropy(sample) < entropyLimit
    }

    /// Shannon entropy of the bytes' frequencies, in bits per byte (0...8).
    package static func entropy(_ bytes: UnsafeRawBufferPointer) -> Double {
        var counts = [Int](repeating: 0, count: 256)
        for byte in bytes { counts[Int(byte)] += 1 }
        let total = Double(bytes.count)
        return counts.reduce(0.0) { sum, count in
            guard count > 0 else { return sum }
            let p = Double(count) / total
            return sum - p * log2(p)
        }
    }

    /// `input` as one complete stream of `coding` (zlib `deflate`, `level` 1: fastest, about `gzip -1`).
    /// - Returns: the encoded bytes, in one buffer.
    package static func compress(_ input: UnsafeRawBufferPointer, coding: ContentCoding = .gzip, level: Int32 = 1) -> ByteBuffer {
        var stream = z_stream()
        guard casefiles_deflate_init2(&stream, level, coding.zlibWindowBits) == Z_OK else {
            fatalError("deflateInit2 failed: out of memory")
        }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count)))
        var encoded = ByteBufferAllocator().buffer(capacity: bound)
        encoded.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out -> Int in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(out.count)
            // deflateBound's size always holds the whole stream, so one Z_FINISH call ends it.
            let status = deflate(&stream, Z_FINISH)
            precondition(status == Z_STREAM_END, "deflate into deflateBound's size ends in one call")
            return out.count - Int(stream.avail_out)
        }
        return encoded
    }
}
