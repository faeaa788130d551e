import ArgumentParser
import Foundation
import CaseFilesClient
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesServer
import CaseFilesStorage

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the key that signs download links (<storage>/link-signing.key, mode 0600).",
        subcommands: [RotateLinkKey.self])

    struct RotateLinkKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-link-key",
            abstract: "Sign new download links with a fresh key.",
            discussion: """
                Links signed with the key being replaced keep working until they expire (at most \
                `serve --max-link-lifetime`); links signed with the key before it stop working at once. After a \
                leaked key, rotate twice. A running `serve` picks the new key up by itself.
                """)
        @OptionGroup var storage: StorageOptions

        func run() async throws {
            let services = try await storage.openServices()  // migrates a key still in the database out first
            try services.linkKeys.rotate()
            print("rotated the link-signing key in \(services.linkKeys.path); links signed with the previous key "
                  + "stay valid until they expire")
        }
    }
}
