@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import PropertyBased
import Testing

/// Property-based checks of the parsers that see raw client input: counts, checksums, Repr-Digest,
/// Upload-Metadata, filenames and byte ranges. Deterministic: a fixed seed and a bounded count, so CI
/// runs the same thousands of inputs every time (`PropertyBased`'s own `fixedSeed` trait runs one case
/// and always reports an issue, so it is not for committed tests). A failure names its input.
@Suite struct ParserPropertyTests {
    static let count = 2000

    /// Runs `body` on `count` values drawn from `generator` with a fixed seed.
    func forAll<Value, Shrinks>(
        _ generator: Generator<Value, Shrinks>, count: Int = Self.count, seed: UInt64 = 20_261_128,
        _ body: (Value) throws -> Void
    ) rethrows {
        var rng = Xoshiro(seed: (seed, 0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB))
        for _ in 0..<count {
            try body(generator.run(using: &rng))
        }
    }

    static func character(from alphabet: String) -> Generator<Character, Shrink.None<Character?>> {
        Gen<Character?>.element(of: Array(alphabet) as [Character]).map { $0! }
    }

    /// Strings built from the characters that break numeric and structured headers.
    static let hostileText = character(from: "0123456789-+ ,=:;./\\\t\"'eExX_a٣é\u{0}\u{202E}").string(of: 0...24)
    static let bytes = Gen<UInt8>.value(in: 0...255).array(of: 0...64)

    @Test func everyCountRoundTripsAndOnlyCanonicalDecimalsParse() {
        forAll(Gen<Int64>.value(in: 0...Int64.max)) { n in
            #expect(WireFormat.parseCount(String(n)) == n)
            #expect(WireFormat.parseCount("0" + String(n)) == nil, "leading zero: 0\(n)")
            #expect(WireFormat.parseCount("-" + String(n)) == nil)
            #expect(WireFormat.parseCount(String(n) + " ") == nil)
        }
        forAll(Self.hostileText) { text in
            let parsed = WireFormat.parseCount(text)
            let canonical = text.wholeMatch(of: /0|[1-9][0-9]{0,18}/) != nil && Int64(text) != nil
            #expect((parsed != nil) == canonical, "\(text.debugDescription)")
            if let parsed { #expect(String(parsed) == text) }
        }
    }

    @Test func checksumsRoundTripAndGarbageIsRefusedNotTrapped() throws {
        forAll(zip(Gen<Bool>.bool(), Self.bytes)) { useSHA256, seed in
            let digest = useSHA256 ? Array(SHA256Digest.hash(seed)) : sha1(seed)
            let header = (useSHA256 ? "sha256 " : "sha1 ") + Data(digest).base64EncodedString()
            let parsed = try? TusHeaders.parseChecksum(header)
            #expect(parsed?.0 == (useSHA256 ? .sha256 : .sha1) && parsed?.1 == digest, "\(header)")
        }
        forAll(Self.hostileText) { text in
            do {
                let (algorithm, digest) = try TusHeaders.parseChecksum(text)
                #expect(digest.count == algorithm.digestLength)
            } catch {
                #expect(error is APIError, "\(text.debugDescription): \(error)")
            }
        }
    }

    func sha1(_ bytes: [UInt8]) -> [UInt8] {
        var digest = SHA1Digest()
        bytes.withUnsafeBytes { digest.update($0) }
        return digest.finalize()
    }

    @Test func reprDigestRoundTripsWhateverSurroundsIt() {
        forAll(zip(Self.bytes, Gen<Int>.int(in: 0...3))) { seed, others in
            let digest = SHA256Digest.hash(seed)
            var members = (0..<others).map { "sha-512=:\(Data(repeating: UInt8($0), count: 64).base64EncodedString()):" }
            members.insert("sha-256=:\(Data(digest).base64EncodedString()):", at: seed.count % (others + 1))
            #expect((try? TusHeaders.parseReprDigest(members.joined(separator: ", "))) == digest.hexString)
        }
        forAll(Self.hostileText) { text in
            do {
                #expect(try TusHeaders.parseReprDigest(text).count == 64)
            } catch {
                #expect(error is APIError, "\(text.debugDescription): \(error)")
            }
        }
    }

    @Test func metadataRoundTripsAnyKeysAndBytes() throws {
        let key = Self.character(from: "abcdefghijklmnopqrstuvwxyz0123456789_-.").string(of: 1...12)
        let entries = zip(key, Self.bytes).array(of: 0...8)
        forAll(entries) { entries in
            var expected: [String: Data] = [:]
            var pairs: [String] = []
            for (key, value) in entries where expected[key] == nil {
                expected[key] = Data(value)
                pairs.append(value.isEmpty ? key : "\(key) \(Data(value).base64EncodedString())")
            }
            let raw = pairs.joined(separator: ",")
            let parsed = try? UploadMetadata(parsing: raw)
            #expect(parsed?.values == expected, "\(raw)")
            #expect(parsed?.raw == raw)
        }
        forAll(Self.hostileText.map { "filename " + $0 }) { raw in
            do {
                let metadata = try UploadMetadata(parsing: raw)
                #expect(metadata.values.count <= raw.count)
            } catch {
                #expect(error is APIError, "\(raw.debugDescription): \(error)")
            }
        }
    }

    @Test func anAcceptedFilenameIsNeverAPathNorHidesControlCharacters() {
        let scalars = Gen<Int>.int(in: 0...0x2100).map { UnicodeScalar(UInt32($0)).map(Character.init) ?? "?" }
        let names = Gen.oneOf(scalars.string(of: 0...40), Self.character(from: "./\\ a\u{0}").string(of: 0...6),
                              Gen<Character>.always("x").string(of: 250...260))
        forAll(names) { name in
            guard UploadMetadata.filenameProblem(name) == nil else { return }
            #expect(!name.contains("/") && !name.contains("\\") && name != "." && name != "..", "\(name.debugDescription)")
            #expect(name.utf8.count <= TusProtocol.maxFilenameBytes)
            #expect(!name.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        }
    }

    @Test func aResolvedRangeNeverLeavesTheFile() {
        let bound = Gen<Int64>.value(in: 0...5000)
        let header = Gen.oneOf(
            zip(bound, bound).map { "bytes=\($0)-\($1)" },
            bound.map { "bytes=\($0)-" },
            bound.map { "bytes=-\($0)" },
            Self.hostileText.map { "bytes=" + $0 },
            Self.hostileText)
        forAll(zip(header, Gen<Int64>.value(in: 0...4096))) { header, size in
            switch ByteRange.resolve(header, size: size) {
            case .partial(let range):
                #expect(range.first >= 0 && range.first <= range.last && range.last < size, "\(header) of \(size)")
            case .unsatisfiable, .whole:
                break
            }
        }
        forAll(zip(bound, bound, Gen<Int64>.value(in: 1...4096))) { a, b, size in
            let (first, last) = (min(a, b), max(a, b))
            let expected: ByteRange.Resolution = first >= size
                ? .unsatisfiable : .partial(ByteRange(first: first, last: min(last, size - 1)))
            #expect(ByteRange.resolve("bytes=\(first)-\(last)", size: size) == expected)
        }
    }
}
