@testable import CaseFilesServer
import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// `GuardedHTTP1Channel` builds Hummingbird's HTTP/1.1 pipeline itself (to set the read-ahead): it must stay
/// Hummingbird's, handler for handler, plus the three guards; an upgrade of Hummingbird that changes
/// `HTTP1Channel.setup` fails here instead of drifting.
@Suite struct GuardedHTTP1ChannelTests {
    let logger = Logger(label: "test")

    /// Handler type names in pipeline order, from SwiftNIO's `ChannelPipeline.debugDescription`.
    static func handlerTypes(_ channel: EmbeddedChannel) -> [String] {
        channel.pipeline.debugDescription.split(separator: "\n").dropFirst(2).compactMap { line in
            for part in line.components(separatedBy: "↓↑") {
                var name = part.trimmingCharacters(in: .whitespaces)
                if let bracket = name.range(of: " [") { name = String(name[..<bracket.lowerBound]) }
                if !name.isEmpty && !name.hasPrefix("[") { return name.trimmingCharacters(in: .whitespaces) }
            }
            return nil
        }
    }

    @Test func itsPipelineIsHummingbirdsWithTheGuardsAdded() throws {
        let configuration = HTTP1Channel.Configuration(httpDecoderConfiguration: .init(
            maxHeaderFieldSize: ConnectionLimits.maxHeaderSectionBytes, maxHeaderListSize: ConnectionLimits.maxHeaderSectionBytes,
            maxHeaderFieldCount: ConnectionLimits.maxHeaderFields))
        let http1 = HTTP1Channel(responder: { _, _, _ in }, configuration: configuration)
        let plain = EmbeddedChannel()
        _ = try http1.setup(channel: plain, logger: logger).wait()
        let guarded = EmbeddedChannel()
        let registry = ConnectionRegistry(maxConnections: 10, logger: logger)
        _ = try GuardedHTTP1Channel(http1: http1, limits: ConnectionLimits(), registry: registry, tls: nil)
            .setup(channel: guarded, logger: logger).wait()

        let hummingbirds = Self.handlerTypes(plain)
        let ours = Self.handlerTypes(guarded)
        let guards: Set = ["RequestBytesObserver", "HTTP1ConformanceHandler", "ConnectionGuardHandler"]
        #expect(hummingbirds.count >= 4)  // decoder, encoder, codec, state handler, async channel's
        #expect(ours.filter { !guards.contains($0) } == hummingbirds)
        #expect(ours.filter { guards.contains($0) }.count == 3)
        _ = try? plain.finish()
        _ = try? guarded.finish()
    }
}
