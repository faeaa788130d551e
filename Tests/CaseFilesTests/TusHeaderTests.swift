@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import Testing

@Suite struct TusHeaderTests {
    @Test(arguments: [
        ("0", Int64(0)), ("1", 1), ("4294967297", 4_294_967_297), ("9223372036854775807", Int64.max),
    ])
    func validCountsParse(text: String, value: Int64) {
        #expect(WireFormat.parseCount(text) == value)
    }

    @Test(arguments: ["", "-1", "+1", "01", "00", " 1", "1 ", "1.0", "0x10", "abc", "9223372036854775808",
                      "99999999999999999999", "１"])
    func invalidCountsAreRejected(text: String) {
        #expect(WireFormat.parseCount(text) == nil)
    }

    @Test func checksumHeadersParse() throws {
        let digest = Data(SHA256Digest.hash(Array("x".utf8)))
        let (algorithm, bytes) = try TusHeaders.parseChecksum("sha256 \(digest.base64EncodedString())")
        #expect(algorithm == .sha256)
        #expect(bytes == Array(digest))
    }

    @Test(arguments: [
        ("md5 AAAA", "unsupported_checksum_algorithm"),
        ("SHA256 \(Data(count: 32).base64EncodedString())", "unsupported_checksum_algorithm"),
        ("sha256", "invalid_header"),
        ("sha256  \(Data(count: 32).base64EncodedString())", "invalid_header"),
        ("sha256 %%%%", "invalid_header"),
        ("sha256 \(Data(count: 20).base64EncodedString())", "invalid_header"),
        ("sha1 \(Data(count: 32).base64EncodedString())", "invalid_header"),
    ])
    func malformedChecksumsAreRejected(text: String, code: String) {
        #expect(throws: APIError.self) { try TusHeaders.parseChecksum(text) }
        do { _ = try TusHeaders.parseChecksum(text) } catch let error as APIError {
            #expect(error.code == code)
            #expect(error.status.code == 400)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func metadataParsesPairsAndEmptyValues() throws {
        let metadata = try UploadMetadata(parsing: "filename \(base64("a b.log")),flag,empty ,filetype \(base64("text/plain"))")
        #expect(try metadata.filename() == "a b.log")
        #expect(try metadata.string("filetype") == "text/plain")
        #expect(metadata.values["flag"] == Data())
        #expect(metadata.values["empty"] == Data())
        #expect(try UploadMetadata(parsing: "").values.isEmpty)
    }

    @Test(arguments: [
        "filename \(base64("a")),filename \(base64("b"))",
        "filename !!!notbase64",
        ",filename \(base64("x"))",
        "filename a b c",
        "filename \(base64("x")),,",
        "filename " + String(repeating: "A", count: 4100),
    ])
    func malformedMetadataIsRejected(raw: String) {
        #expect(throws: APIError.self) { try UploadMetadata(parsing: raw) }
    }

    @Test(arguments: ["../etc/passwd", "a/b", "a\\b", "nul\u{0}byte", "tab\there", "bell\u{7}", "\u{202E}gpj.exe",
                      "x\u{2066}y", ".", "..", String(repeating: "é", count: 128), "c1\u{85}"])
    func unsafeFilenamesAreRejected(name: String) {
        #expect(UploadMetadata.filenameProblem(name) != nil)
    }

    @Test(arguments: ["server.log", "logs 2024-01-01.tar.gz", "résumé.pdf", "日本語.txt", String(repeating: "a", count: 255)])
    func ordinaryFilenamesAreAccepted(name: String) {
        #expect(UploadMetadata.filenameProblem(name) == nil)
    }

    @Test func invalidUTF8FilenamesAreRejected() throws {
        let raw = "filename \(Data([0x66, 0xff, 0xfe]).base64EncodedString())"
        let metadata = try UploadMetadata(parsing: raw)
        #expect(throws: APIError.self) { try metadata.filename() }
    }

    @Test func sha256MetadataMustBe64Hex() throws {
        let good = sha256Hex([1, 2, 3])
        #expect(try UploadMetadata(parsing: "sha256 \(base64(good.uppercased()))").sha256() == good)
        #expect(throws: APIError.self) { try UploadMetadata(parsing: "sha256 \(base64("abc"))").sha256() }
        #expect(throws: APIError.self) { try UploadMetadata(parsing: "sha256 \(base64(good + "0"))").sha256() }
    }

    @Test func reprDigestTakesSHA256AndRefusesAHeaderWithoutIt() throws {
        let digest = SHA256Digest.hash([9, 9])
        let b64 = Data(digest).base64EncodedString()
        #expect(try TusHeaders.parseReprDigest("sha-256=:\(b64):") == digest.hexString)
        #expect(try TusHeaders.parseReprDigest("sha-512=:AAAA:, sha-256=:\(b64):") == digest.hexString)
        #expect(throws: APIError.self) { try TusHeaders.parseReprDigest("sha-512=:AAAA:") }
        #expect(throws: APIError.self) { try TusHeaders.parseReprDigest("") }
        #expect(throws: APIError.self) { try TusHeaders.parseReprDigest("sha-256=\(b64)") }
        #expect(throws: APIError.self) { try TusHeaders.parseReprDigest("sha-256=:AAAA:") }
        #expect(throws: APIError.self) { try TusHeaders.parseReprDigest("garbage") }
    }

    @Test func caseNumbersNormalise() {
        #expect(CaseNumber.normalise("1413") == "00001413")
        #expect(CaseNumber.normalise("00001413") == "00001413")
        #expect(CaseNumber.normalise("123456789") == nil)
        #expect(CaseNumber.normalise("-1") == nil)
        #expect(CaseNumber.normalise("") == nil)
        #expect(CaseNumber.normalise("14a3") == nil)
    }
}
