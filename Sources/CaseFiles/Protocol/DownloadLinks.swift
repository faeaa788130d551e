import Foundation

/// Short-lived signed download URLs: a browser cannot put a bearer header on a plain link, and
/// fetching into a Blob would hold the whole file in memory. The URL names the attachment, a random
/// nonce (recorded with who asked for it) and an expiry, signed with HMAC-SHA256 under a server key.
struct DownloadLinks: Sendable {
    let key: [UInt8]
    static let lifetime: TimeInterval = 300

    func signature(id: String, nonce: String, expires: Int64) -> String {
        HMACSHA256.sign("\(id)|\(nonce)|\(expires)", key: key).hexString
    }

    func path(id: String, nonce: String, expires: Int64) -> String {
        "/api/v1/attachments/\(id)/content?link=\(nonce)&expires=\(expires)&sig=\(signature(id: id, nonce: nonce, expires: expires))"
    }

    /// Whether the query's signature is valid and unexpired; the nonce is then checked in the database.
    func verify(id: String, nonce: String, expires: String, sig: String, now: Date) -> Bool {
        guard SecureRandom.isIdentifier(nonce), let expiry = Int64(expires), Double(expiry) >= now.timeIntervalSince1970,
              let given = [UInt8](hex: sig, byteCount: 32)
        else { return false }
        return HMACSHA256.matches(given, HMACSHA256.sign("\(id)|\(nonce)|\(expiry)", key: key))
    }
}
