import Foundation

/// Bearer tokens: 32 random bytes, base64url, with a `cf_` prefix so a leaked one is recognisable.
/// Only the token's SHA-256 is stored; a database leak does not leak usable tokens.
public enum AccessToken {
    public static func generate() -> String {
        let encoded = Data(SecureRandom.bytes(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return "cf_" + encoded
    }

    public static func hash(_ token: String) -> String {
        SHA256Digest.hash(Array(token.utf8)).hexString
    }
}
