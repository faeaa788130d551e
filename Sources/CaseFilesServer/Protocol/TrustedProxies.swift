import Foundation
import HTTPTypes
import Hummingbird

/// An IPv4 or IPv6 address range in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is the
/// single address). IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) count as their IPv4 address.
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    let network: [UInt8]  // 4 or 16 bytes, host bits zero
    let prefixLength: Int
    public let description: String

    /// nil unless `text` is an address, optionally with `/prefix` within the address's bit length.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.addressBytes(String(parts[0])) else { return nil }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...bits).contains(given), parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = given
        }
        self.network = CIDR.masked(address, prefix)
        self.prefixLength = prefix
        self.description = text
    }

    public func contains(_ address: String) -> Bool {
        guard let bytes = CIDR.addressBytes(address), bytes.count == network.count else { return false }
        return CIDR.masked(bytes, prefixLength) == network
    }

    /// The address's bytes through inet_pton: 4 for IPv4 (and IPv4-mapped IPv6), 16 for IPv6.
    static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff { return Array(bytes[12...]) }
        return bytes
    }

    private static func masked(_ bytes: [UInt8], _ prefix: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let keep = max(0, min(8, prefix - index * 8))
            return keep == 8 ? byte : byte & ~(UInt8(0xff) >> keep)
        }
    }
}

/// Whose forwarding headers are believed (`serve --trusted-proxy CIDR`, repeatable; none by default):
/// `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`,
/// only when the connection's peer is in one of these ranges. Anyone else could send them to forge the
/// address a request log shows or the URLs the server hands out.
public struct TrustedProxies: Sendable {
    public let ranges: [CIDR]

    public init(_ ranges: [CIDR]) { self.ranges = ranges }

    func trusts(_ address: String) -> Bool { ranges.contains { $0.contains(address) } }

    /// What a trusted proxy says of the request; `peer` is the connection's remote address.
    func resolve(peer: String?, headers: HTTPFields) -> ForwardedRequest {
        guard let peer, trusts(peer) else { return ForwardedRequest(clientAddress: peer, scheme: nil, host: nil) }
        let elements = headers[values: ForwardedRequest.forwarded].flatMap(ForwardedRequest.parseForwarded)
        let chain: [String]
        var scheme: String?
        var host: String?
        if !elements.isEmpty {
            chain = elements.compactMap { $0["for"] }
            // The first element is the one the proxy nearest the client added (RFC 7239 §5.3, §5.4).
            scheme = elements.first?["proto"]
            host = elements.first?["host"]
        } else {
            chain = headers[values: ForwardedRequest.xForwardedFor].flatMap { $0.split(separator: ",") }
                .map { $0.trimmingCharacters(in: .whitespaces) }
            scheme = headers[values: ForwardedRequest.xForwardedProto].first?.split(separator: ",").first
                .map { $0.trimmingCharacters(in: .whitespaces) }
            host = headers[values: ForwardedRequest.xForwardedHost].first?.split(separator: ",").first
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        // The client is the rightmost address not one of our proxies: entries left of it were written by
        // the client itself or by proxies we do not know, and could say anything.
        var client = peer
        for entry in chain.reversed() {
            let address = ForwardedRequest.nodeAddress(entry)
            client = address
            if !trusts(address) { break }
        }
        if let given = scheme?.lowercased(), given == "http" || given == "https" { scheme = given } else { scheme = nil }
        if let given = host, !ForwardedRequest.isValidHost(given) { host = nil }
        return ForwardedRequest(clientAddress: client, scheme: scheme, host: host)
    }
}

/// A request's client as far as the trusted proxies tell (`TrustedProxies.resolve`).
struct ForwardedRequest: Sendable, Equatable {
    /// The client's address: the peer's, or the one a trusted proxy reports.
    var clientAddress: String?
    /// `http` or `https` as the client used it, when a trusted proxy says so.
    var scheme: String?
    /// The `Host` the client used, when a trusted proxy says so.
    var host: String?

    static let forwarded = HTTPField.Name("Forwarded")!
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let xForwardedProto = HTTPField.Name("X-Forwarded-Proto")!
    static let xForwardedHost = HTTPField.Name("X-Forwarded-Host")!

    /// `Forwarded: for=192.0.2.60;proto=http;host=example.com, for="[2001:db8::1]:4711"` → one dictionary
    /// per element, parameter names lowercased, quotes removed (RFC 7239 §4).
    static func parseForwarded(_ value: String) -> [[String: String]] {
        value.split(separator: ",").map { element in
            var pairs: [String: String] = [:]
            for pair in element.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                var text = parts[1].trimmingCharacters(in: .whitespaces)
                if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { text = String(text.dropFirst().dropLast()) }
                pairs[parts[0].trimmingCharacters(in: .whitespaces).lowercased()] = text
            }
            return pairs
        }
    }

    /// A node as `Forwarded`'s `for=` or `X-Forwarded-For` write it, without port or brackets:
    /// `192.0.2.60:4711` → `192.0.2.60`, `[2001:db8::1]:4711` → `2001:db8::1` (RFC 7239 §6).
    static func nodeAddress(_ node: String) -> String {
        if node.hasPrefix("["), let close = node.firstIndex(of: "]") {
            return String(node[node.index(after: node.startIndex)..<close])
        }
        if node.filter({ $0 == ":" }).count == 1, let colon = node.firstIndex(of: ":") { return String(node[..<colon]) }
        return node
    }

    /// A host (and port) fit to put in a URL: letters, digits, `.-:[]` only, so a forged value cannot
    /// smuggle a path, credentials or a header break into `Location`.
    static func isValidHost(_ host: String) -> Bool {
        !host.isEmpty && host.count <= 255
            && host.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".-:[]".unicodeScalars.contains($0)) }
    }
}

/// Sets `clientAddress` and `publicOrigin` on the context from the peer and, when the peer is a trusted
/// proxy, its forwarding headers (`TrustedProxies`).
struct ForwardedMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let trusted: TrustedProxies
    /// This listener's own scheme: `https` with `--tls-cert`.
    let scheme: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let forwarded = trusted.resolve(peer: context.channel.remoteAddress?.ipAddress, headers: request.headers)
        context.clientAddress = forwarded.clientAddress
        if let host = forwarded.host { context.publicOrigin = "\(forwarded.scheme ?? scheme)://\(host)" }
        return try await next(request, context)
    }
}
