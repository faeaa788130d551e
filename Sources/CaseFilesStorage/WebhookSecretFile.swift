import Foundation
import CaseFilesCore

/// The webhook secret shared with the case system (`serve --webhook-secret-file`, default
/// `<storage>/webhook.secret`): one line of text whose UTF-8 bytes are the HMAC-SHA-256 key. Made 0600 with 32
/// random bytes in hex when missing, like `link-signing.key`; give the receiver the same text.
public enum WebhookSecretFile {
    public static let name = "webhook.secret"

    /// The secret's bytes, the file created first if missing.
    /// - Throws: `StorageError` if it cannot be created or read; `WebhookSecretFileError.empty` for an empty file.
    public static func load(path: String) throws -> [UInt8] {
        if access(path, F_OK) != 0 {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, PrivateStorage.fileMode)
            if fd >= 0 {
                let text = Array((SecureRandom.bytes(32).hexString + "\n").utf8)
                let written = write(fd, text, text.count)
                let synced = fsync(fd) == 0
                close(fd)
                guard written == text.count, synced else { throw StorageError.from("write \(path)", errno: errno) }
            } else if errno != EEXIST {
                throw StorageError.from("create \(path)", errno: errno)
            }
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StorageError.from("read \(path)", errno: errno)
        }
        let secret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else { throw WebhookSecretFileError.empty(path) }
        return Array(secret.utf8)
    }
}

public enum WebhookSecretFileError: Error, CustomStringConvertible {
    case empty(String)
    public var description: String {
        switch self {
        case .empty(let path): "\(path) is empty: put the shared secret in it, or remove it to have one generated"
        }
    }
}
