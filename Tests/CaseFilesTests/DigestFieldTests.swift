import Foundation
import Testing
@testable import CaseFilesCore
@testable import CaseFilesServer

/// RFC 9530 digest fields (structured-field dictionaries) and the `--cors-origin` values.
struct DigestFieldTests {
    @Test func sha512MatchesTheFIPSVector() {
        var digest = SHA512Digest()
        Array("abc".utf8).withUnsafeBytes { digest.update($0) }
        #expect(digest.finalize().hexString == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    }

    @Test func contentDigestChecksTheStrongestSupportedMember() throws {
        let sha256 = SHA256Digest.hash([1, 2, 3])
        let sha512 = [UInt8](repeating: 7, count: 64)
        let field256 = "sha-256=:\(Data(sha256).base64EncodedString()):"
        let field512 = "sha-512=:\(Data(sha512).base64EncodedString()):"
        let one = try DigestFields.parseContentDigest(field256)
        #expect(one.0 == .sha256 && one.1 == sha256)
        let both = try DigestFields.parseContentDigest("\(field256), \(field512)")
        #expect(both.0 == .sha512 && both.1 == sha512)
        let withOthers = try DigestFields.parseContentDigest("md5=:AAAA:, \(field256);p=1")
        #expect(withOthers.0 == .sha256 && withOthers.1 == sha256)
    }

    @Test func contentDigestRefusesUnsupportedOnlyAndMalformed() {
        func code(_ text: String) -> String? {
            do { _ = try DigestFields.parseContentDigest(text); return nil } catch { return (error as? APIError)?.code }
        }
        #expect(code("md5=:AAAAAAAAAAAAAAAAAAAAAA==:") == "unsupported_digest_algorithm")
        #expect(code("unixsum=:AAAA:") == "unsupported_digest_algorithm")
        #expect(code("") == "unsupported_digest_algorithm")
        #expect(code("sha-256=:AAAA:") == "invalid_header")
        #expect(code("sha-256=abc") == "invalid_header")
        #expect(code("sha-256=:%:") == "invalid_header")
    }

    @Test func reprDigestIsAStructuredFieldDictionary() throws {
        let digest = SHA256Digest.hash([4])
        let b64 = Data(digest).base64EncodedString()
        #expect(try WireFormat.parseReprDigest("sha-256=:\(b64):;note=1").get() == digest.hexString)
        #expect(WireFormat.parseReprDigest("sha-256=:\(b64):,") == .failure(.notADictionary))
        #expect(WireFormat.parseReprDigest("sha-256=\"\(b64)\"") == .failure(.malformedSHA256))
        #expect(WireFormat.sha256DigestField(hex: digest.hexString) == "sha-256=:\(b64):")
    }

    @Test func wantDigestPreferences() {
        #expect(WireFormat.parseWantDigest("sha-256=1, sha-512=3") == ["sha-256": 1, "sha-512": 3])
        #expect(WireFormat.parseWantDigest("sha-256=11") == nil)
        #expect(WireFormat.parseWantDigest("sha-256") == nil)
    }

    @Test func corsOriginsAreSerializedOrigins() {
        #expect(CORSPolicy.origin(parsing: "https://Portal.Example") == "https://portal.example")
        #expect(CORSPolicy.origin(parsing: "https://portal.example:443") == "https://portal.example")
        #expect(CORSPolicy.origin(parsing: "http://127.0.0.1:8000") == "http://127.0.0.1:8000")
        #expect(CORSPolicy.origin(parsing: "http://[::1]:3000") == "http://[::1]:3000")
        for bad in ["https://portal.example/", "https://portal.example/x", "*", "null", "portal.example",
                    "ftp://portal.example", "https://user@portal.example", "https://portal.example:0", "https://:80"] {
            #expect(CORSPolicy.origin(parsing: bad) == nil, "\(bad)")
        }
    }
}
