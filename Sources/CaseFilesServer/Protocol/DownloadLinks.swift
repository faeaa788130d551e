import Foundation
import CaseFilesCore
import CaseFilesStorage

/// Short-lived signed download URLs: a browser cannot put a bearer header on a plain link, and
/// fetching into a Blob would hold the whole file in memory. The URL names the attachment, a random
/// nonce (recorded with who asked for it) and an expiry, signed with HMAC-SHA256 under the current key of
/// `link-signing.key`. The signature only proves the URL came from someone holding a key; the link's row
/// decides the rest (who, until when, how many bytes), so a leaked key alone cannot make a link outlive its row.
struct DownloadLinks: Sendable {
    let keyFile: LinkKeyFile
    /// The longest a link lives, in seconds (`serve --max-link-lifetime`): links are issued for this long, and
    /// a link issued under a longer setting stops this long after it was issued.
    let maxLifetime: TimeInterval

    /// Bytes one link may serve over its life: twice the file's size, enough to resume one download (even
    /// to start it over once), not to hand the file out again and again.
    static func byteBudget(fileSize: Int64) -> Int64 { 2 * fileSize }

    private static func message(id: String, nonce: String, expires: Int64) -> String { "\(id)|\(nonce)|\(expires)" }

    /// The URL path for a link, signed with the current key.
    /// - Throws: `LinkKeyFileError` or `StorageError` if the key file cannot be read.
    func path(id: String, nonce: String, expires: Int64) throws -> String {
        let sig = HMACSHA256.sign(Self.message(id: id, nonce: nonce, expires: expires), key: try keyFile.keys().current)
        return "/api/v1/attachments/\(id)/content?link=\(nonce)&expires=\(expires)&sig=\(sig.hexString)"
    }

    /// Whether the query's signature is valid under the current or the previous key (a rotation leaves links
    /// already handed out working) and the URL's expiry (seconds since 1970) has not passed. The nonce's row
    /// is checked next (`isLive`).
    /// - Throws: `LinkKeyFileError` or `StorageError` if the key file cannot be read.
    func verify(id: String, nonce: String, expires: String, sig: String, now: Date) throws -> Bool {
        guard SecureRandom.isIdentifier(nonce), let expiry = Int64(expires), Double(expiry) >= now.timeIntervalSince1970,
              let given = [UInt8](hex: sig, byteCount: 32)
        else { return false }
        let message = Self.message(id: id, nonce: nonce, expires: expiry)
        return try keyFile.keys().all.contains { HMACSHA256.matches(given, HMACSHA256.sign(message, key: $0)) }
    }

    /// Whether a stored link still works at `now`: before its stored expiry, and within `maxLifetime` of
    /// when it was issued (links issued before issue times were stored have only their expiry).
    func isLive(_ link: DownloadLink, now: Date) -> Bool {
        let capped = link.issuedAt.map { min(link.expiresAt, $0.addingTimeInterval(maxLifetime)) } ?? link.expiresAt
        return now <= capped
    }
}
