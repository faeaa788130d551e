import Foundation
import CaseFilesCore

/// Remembers unfinished uploads across runs (Ctrl-C, crash, reboot) in one small JSON file per file
/// under `$XDG_STATE_HOME/casefiles` (or `~/.local/state/casefiles`).
public struct UploadStateStore: Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public var server: String
        public var caseNumber: String
        public var path: String
        public var size: Int64
        /// Modification time in nanoseconds since 1970; a changed file must not resume an old upload.
        public var modifiedNanoseconds: Int64
        /// The whole file's SHA-256 (hex) when declared at creation; nil: computed while sending and declared
        /// with the last chunk (`Repr-Digest`), so the file is read once.
        public var sha256: String?
        public var uploadURL: String
        /// With `upload --parallel N`: the N partial uploads' URLs, in file order (tus concatenation); each resumes
        /// on its own. `uploadURL` is then the final upload's, once created (empty before).
        public var partURLs: [String]? = nil
    }

    public let directory: URL

    public init(directory: URL? = nil) {
        if let directory {
            self.directory = directory
        } else if let xdg = ProcessInfo.processInfo.environment["XDG_STATE_HOME"], !xdg.isEmpty {
            self.directory = URL(fileURLWithPath: xdg).appendingPathComponent("casefiles")
        } else {
            self.directory = FileManager.default.homeDirectoryForCurrentUser
                .appendingPathComponent(".local/state/casefiles")
        }
    }

    /// One state file per (server, case, absolute path).
    package func file(server: String, caseNumber: String, path: String) -> URL {
        let key = SHA256Digest.hash(Array("\(server)\n\(caseNumber)\n\(path)".utf8)).hexString.prefix(32)
        return directory.appendingPathComponent("upload-\(key).json")
    }

    public func load(server: String, caseNumber: String, path: String) -> Entry? {
        guard let data = try? Data(contentsOf: file(server: server, caseNumber: caseNumber, path: path)) else { return nil }
        return try? JSONDecoder().decode(Entry.self, from: data)
    }

    public func save(_ entry: Entry) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let data = try JSONEncoder().encode(entry)
        try data.write(to: file(server: entry.server, caseNumber: entry.caseNumber, path: entry.path), options: .atomic)
    }

    public func remove(server: String, caseNumber: String, path: String) {
        try? FileManager.default.removeItem(at: file(server: server, caseNumber: caseNumber, path: path))
    }
}
