import COpenSSL
import Foundation
import NIOCore

/// Incremental SHA-256 over OpenSSL's low-level `SHA256_CTX`.
///
/// The context is a plain C struct, so its state can be persisted next to an upload's committed
/// offset and restored after a restart: resuming never re-reads the bytes already on disk.
/// (EVP contexts are opaque and cannot be saved, which is why the deprecated API is used.)
public struct SHA256Digest: Sendable {
    private var context = SHA256_CTX()

    public static let byteCount = Int(SHA256_DIGEST_LENGTH)

    public init() {
        SHA256_Init(&context)
    }

    /// Restores a state produced by `savedState`; nil if the bytes are not a saved context.
    public init?(savedState: Data) {
        guard savedState.count == MemoryLayout<SHA256_CTX>.size else { return nil }
        withUnsafeMutableBytes(of: &context) { target in
            savedState.withUnsafeBytes { target.copyMemory(from: $0) }
        }
    }

    public var savedState: Data {
        withUnsafeBytes(of: context) { Data($0) }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        SHA256_Update(&context, base, bytes.count)
    }

    public mutating func update(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { update($0) }
    }

    public mutating func update(_ data: some DataProtocol) {
        for region in data.regions {
            region.withUnsafeBytes { update($0) }
        }
    }

    /// The digest of everything so far; the receiver stays usable (finalising works on a copy).
    public func finalize() -> [UInt8] {
        var copy = context
        var out = [UInt8](repeating: 0, count: Self.byteCount)
        SHA256_Final(&out, &copy)
        return out
    }

    public static func hash(_ data: some DataProtocol) -> [UInt8] {
        var digest = SHA256Digest()
        digest.update(data)
        return digest.finalize()
    }
}

/// Incremental SHA-1, which the tus checksum extension makes mandatory for servers offering it.
public struct SHA1Digest: Sendable {
    private var context = SHA_CTX()

    public init() {
        SHA1_Init(&context)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        SHA1_Update(&context, base, bytes.count)
    }

    public func finalize() -> [UInt8] {
        var copy = context
        var out = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        SHA1_Final(&out, &copy)
        return out
    }
}

/// Incremental SHA-512, for RFC 9530 `Content-Digest: sha-512=:...:`. The low-level `SHA512_CTX`, like
/// `SHA256Digest`'s: a plain value, so a `ChunkDigest` needs no allocation or cleanup on the upload path.
public struct SHA512Digest: Sendable {
    private var context = SHA512_CTX()

    public static let byteCount = Int(SHA512_DIGEST_LENGTH)

    public init() {
        SHA512_Init(&context)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        SHA512_Update(&context, base, bytes.count)
    }

    public func finalize() -> [UInt8] {
        var copy = context
        var out = [UInt8](repeating: 0, count: Self.byteCount)
        SHA512_Final(&out, &copy)
        return out
    }
}

/// The digests a request may declare of its own content: `Upload-Checksum` (tus checksum extension:
/// `sha1`, `sha256`) or RFC 9530 `Content-Digest` (`sha-256`, `sha-512`). Raw values are the tus names.
public enum ChecksumAlgorithm: String, Sendable, CaseIterable {
    case sha1
    case sha256
    case sha512

    /// What `Upload-Checksum` accepts (and OPTIONS advertises in `Tus-Checksum-Algorithm`).
    public static let tusChecksum: [ChecksumAlgorithm] = [.sha1, .sha256]
    /// What `Content-Digest` accepts, strongest first (RFC 9530 §5 registry keys in `digestFieldKey`).
    public static let contentDigest: [ChecksumAlgorithm] = [.sha512, .sha256]

    /// The key in the HTTP Digest Algorithm Values registry (RFC 9530 §7.2); nil: not usable there.
    public var digestFieldKey: String? {
        switch self {
        case .sha1: nil  // RFC 9530 registers only the deprecated "sha" (SHA-1 is broken): not accepted
        case .sha256: "sha-256"
        case .sha512: "sha-512"
        }
    }

    public var digestLength: Int {
        switch self {
        case .sha1: Int(SHA_DIGEST_LENGTH)
        case .sha256: SHA256Digest.byteCount
        case .sha512: SHA512Digest.byteCount
        }
    }
}

/// A running digest of one request body, for checking `Upload-Checksum` or `Content-Digest`.
public struct ChunkDigest: Sendable {
    private enum State: Sendable {
        case sha1(SHA1Digest)
        case sha256(SHA256Digest)
        case sha512(SHA512Digest)
    }

    private var state: State

    public init(_ algorithm: ChecksumAlgorithm) {
        switch algorithm {
        case .sha1: state = .sha1(SHA1Digest())
        case .sha256: state = .sha256(SHA256Digest())
        case .sha512: state = .sha512(SHA512Digest())
        }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        switch state {
        case .sha1(var digest):
            digest.update(bytes)
            state = .sha1(digest)
        case .sha256(var digest):
            digest.update(bytes)
            state = .sha256(digest)
        case .sha512(var digest):
            digest.update(bytes)
            state = .sha512(digest)
        }
    }

    public func finalize() -> [UInt8] {
        switch state {
        case .sha1(let digest): digest.finalize()
        case .sha256(let digest): digest.finalize()
        case .sha512(let digest): digest.finalize()
        }
    }
}

/// HMAC-SHA256 through OpenSSL, for signed download links.
public enum HMACSHA256 {
    public static func sign(_ message: String, key: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let bytes = Array(message.utf8)
        _ = HMAC(EVP_sha256(), key, Int32(key.count), bytes, bytes.count, &out, &length)
        return Array(out[..<Int(length)])
    }

    /// Constant-time comparison (CRYPTO_memcmp), so a forger learns nothing from timing.
    public static func matches(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && CRYPTO_memcmp(a, b, a.count) == 0
    }
}

/// Cryptographically secure random bytes from OpenSSL: the one generator for ids and tokens.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { RAND_bytes($0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count)) }
        precondition(ok == 1, "OpenSSL RAND_bytes failed")
        return out
    }

    /// A 128-bit identifier as 32 lowercase hex characters: safe as a file name and in a URL.
    public static func identifier() -> String {
        bytes(16).hexString
    }

    /// Whether `text` has the shape of an `identifier()`; nothing else may name an upload (or a file).
    public static func isIdentifier(_ text: String) -> Bool {
        text.utf8.count == 32 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

extension Sequence where Element == UInt8 {
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var chars = [UInt8]()
        for byte in self {
            chars.append(digits[Int(byte >> 4)])
            chars.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: chars, as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    /// Parses exactly `byteCount` bytes of lowercase or uppercase hex; nil otherwise.
    public init?(hex: String, byteCount: Int) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == byteCount * 2 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(byteCount)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        self = out
    }
}
