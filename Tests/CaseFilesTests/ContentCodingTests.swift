@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesEngine
import Foundation
import NIOCore
import Testing

/// `casefiles-content-encoding` without a server: the `Content-Encoding` parser, zlib both ways through our
/// wrappers, the decision for a broken stream, and the client's text-or-not guess.
@Suite struct ContentCodingTests {
    @Test func parsesTheCodingsWeAcceptAndRefusesTheRest() {
        #expect(ContentCoding.parse(nil) == .success(nil))
        #expect(ContentCoding.parse("identity") == .success(nil))
        #expect(ContentCoding.parse("GZip") == .success(.gzip))
        #expect(ContentCoding.parse("x-gzip") == .success(.gzip))
        #expect(ContentCoding.parse(" deflate ") == .success(.deflate))
        #expect(ContentCoding.parse("identity, gzip") == .success(.gzip))
        #expect(ContentCoding.parse("br") == .failure(.unsupported("br")))
        #expect(ContentCoding.parse("gzip, gzip") == .failure(.unsupported("gzip, gzip")))
    }

    /// Inflates `encoded` in `pieces` slices, as a body arrives; returns the output, or the failure.
    private func inflate(_ encoded: [UInt8], as coding: ContentCoding, pieces: Int = 7) throws -> ([UInt8], Bool) {
        let inflater = try Inflater(coding)
        var out: [UInt8] = []
        let step = max(1, encoded.count / pieces)
        for start in stride(from: 0, to: encoded.count, by: step) {
            try encoded[start..<min(encoded.count, start + step)].withUnsafeBytes { slice in
                try inflater.inflate(slice) { out.append(contentsOf: $0) }
            }
        }
        return (out, inflater.ended)
    }

    @Test(arguments: [ContentCoding.gzip, .deflate])
    func roundTripsThroughOurDeflateAndInflate(coding: ContentCoding) throws {
        // Past the inflater's 256 KiB output buffer several times over.
        let text = Array(String(repeating: "2024-03-11 02:00:00.009 INFO call 7340001 state=READY\n", count: 40_000).utf8)
        let encoded = Array(buffer: text.withUnsafeBytes { ChunkCompression.compress($0, coding: coding) })
        #expect(encoded.count < text.count / 10)
        let (decoded, ended) = try inflate(encoded, as: coding)
        #expect(ended)
        #expect(decoded == text)
    }

    @Test func trailingDataAndASecondMemberAreRefused() throws {
        let member = Array(buffer: Array("hello\n".utf8).withUnsafeBytes { ChunkCompression.compress($0) })
        #expect(throws: Inflater.Failure.trailingData) { try inflate(member + member, as: .gzip, pieces: 1) }
        #expect(throws: Inflater.Failure.trailingData) { try inflate(member + [0x00], as: .gzip, pieces: 1) }
        let (_, ended) = try inflate(Array(member.dropLast(3)), as: .gzip)
        #expect(!ended)  // truncated: the receiver refuses it when the body itself was complete
    }

    @Test func rawDeflateIsNotTheDeflateCoding() {
        // zlib's own raw-deflate bytes for "hello" (windowBits -15): no zlib header, so RFC 9110's deflate refuses it.
        let raw: [UInt8] = [0xCB, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
        #expect(throws: Inflater.Failure.self) { try inflate(raw, as: .deflate, pieces: 1) }
    }

    @Test func aBrokenStreamIsDiscardedWithOrWithoutAChecksumAndBeforeAStop() {
        let failure = UploadError.contentEncodingInvalid(.gzip, problem: "truncated", offset: 0)
        let outcome = AppendOutcome(received: 4, stopReason: .clientGone, decodingFailure: failure)
        #expect(AppendDecision.decide(outcome, checksum: .absent) == .discard(.undecodable(failure)))
        #expect(AppendDecision.decide(outcome, checksum: .matched) == .discard(.undecodable(failure)))
        // Past the room is still the room's answer (413 as for a plain body).
        let over = AppendOutcome(received: 4, overran: true, decodingFailure: .compressionRatioExceeded(limit: 1000))
        #expect(AppendDecision.decide(over, checksum: .absent) == .discard(.overran))
    }

    @Test func autoCompressesTextAndLeavesCompressedFormatsAlone() {
        let text = Array(String(repeating: "GET /api/v2/agents/agent0007/status 200 422ms\n", count: 2000).utf8)
        #expect(text.withUnsafeBytes { ChunkCompression.looksCompressible($0) })
        let gzipped = Array(buffer: text.withUnsafeBytes { ChunkCompression.compress($0) })
        #expect(!gzipped.withUnsafeBytes { ChunkCompression.looksCompressible($0) })
        var random = SystemRandomNumberGenerator()
        let noise = (0..<65_536).map { _ in UInt8.random(in: 0...255, using: &random) }
        #expect(!noise.withUnsafeBytes { ChunkCompression.looksCompressible($0) })
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47] + Array(repeating: 0x20, count: 1000)
        #expect(!png.withUnsafeBytes { ChunkCompression.looksCompressible($0) })
    }
}
