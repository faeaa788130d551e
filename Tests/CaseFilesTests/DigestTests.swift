@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import Testing

@Suite struct DigestTests {
    @Test func sha256MatchesTheFIPSVectors() {
        #expect(SHA256Digest.hash(Array("abc".utf8)).hexString
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256Digest.hash([UInt8]()).hexString
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func sha1MatchesTheFIPSVector() {
        var digest = ChunkDigest(.sha1)
        Array("abc".utf8).withUnsafeBytes { digest.update($0) }
        #expect(digest.finalize().hexString == "a9993e364706816aba3e25717850c26c9cd0d89d")
    }

    @Test func aSavedStateResumesTheDigestExactly() throws {
        let bytes = testBytes(1_000_003)
        var first = SHA256Digest()
        bytes[..<333_333].withUnsafeBytes { first.update($0) }
        var resumed = try #require(SHA256Digest(savedState: first.savedState))
        bytes[333_333...].withUnsafeBytes { resumed.update($0) }
        #expect(resumed.finalize() == SHA256Digest.hash(bytes))
    }

    @Test func aTruncatedStateIsRejected() {
        #expect(SHA256Digest(savedState: Data(count: 10)) == nil)
    }

    @Test func finalizingDoesNotDisturbTheRunningDigest() {
        var digest = SHA256Digest()
        Array("ab".utf8).withUnsafeBytes { digest.update($0) }
        _ = digest.finalize()
        Array("c".utf8).withUnsafeBytes { digest.update($0) }
        #expect(digest.finalize() == SHA256Digest.hash(Array("abc".utf8)))
    }

    @Test func hexRoundTripsAndRejectsJunk() {
        let bytes = testBytes(32)
        #expect([UInt8](hex: bytes.hexString, byteCount: 32) == bytes)
        #expect([UInt8](hex: bytes.hexString.uppercased(), byteCount: 32) == bytes)
        #expect([UInt8](hex: "zz" + bytes.hexString.dropFirst(2), byteCount: 32) == nil)
        #expect([UInt8](hex: bytes.hexString + "00", byteCount: 32) == nil)
    }

    @Test func identifiersAreUniqueHex() {
        let ids = (0..<1000).map { _ in SecureRandom.identifier() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { $0.count == 32 && $0.allSatisfy(\.isHexDigit) })
    }
}
