import CaseFilesCore
/// Why a client command failed; the process exit code tells scripts which kind it was.
public struct ClientFailure: Error, CustomStringConvertible, Sendable {
    public enum Kind: Int32, Sendable, CaseIterable {
        /// The network or the server kept failing after every retry.
        case unreachable = 3
        /// The server refused the request (4xx): bad token, closed case, unknown case…
        case refused = 4
        /// The bytes did not verify: whole-file digest mismatch, repeated chunk checksum mismatch,
        /// or a download whose SHA-256 differs from the server's.
        case integrity = 5
        /// A local file could not be read or written.
        case localFile = 6
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    public static let exitCodeHelp = """
        Exit codes: 0 success; 3 the server stayed unreachable or failing after all retries; 4 the server \
        refused (bad token, closed case, unknown case or attachment); 5 integrity failure (the whole file's \
        SHA-256 differs, a chunk failed its checksum twice, or a download did not verify); 6 a local file \
        could not be read or written; 64 invalid arguments.
        """
}
