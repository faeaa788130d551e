import HTTPTypes
import Testing
@testable import CaseFilesServer

/// `--trusted-proxy`: whose forwarding headers decide the client address (for request logs) and the public
/// origin (for `Location`).
struct TrustedProxiesTests {
    let proxies = TrustedProxies([CIDR("10.0.0.0/8")!, CIDR("::1")!])

    func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    @Test func cidrMatching() {
        #expect(CIDR("10.0.0.0/8")!.contains("10.200.3.4"))
        #expect(!CIDR("10.0.0.0/8")!.contains("11.0.0.1"))
        #expect(CIDR("10.0.0.0/8")!.contains("::ffff:10.1.2.3"))  // IPv4-mapped IPv6
        #expect(CIDR("2001:db8::/32")!.contains("2001:db8:1::5"))
        #expect(!CIDR("2001:db8::/32")!.contains("2001:db9::5"))
        #expect(CIDR("192.0.2.7")!.contains("192.0.2.7") && !CIDR("192.0.2.7")!.contains("192.0.2.8"))
        #expect(CIDR("10.0.0.0/33") == nil && CIDR("example.com") == nil && CIDR("10.0.0.0/") == nil)
    }

    @Test func anUntrustedPeerIsTheClientWhateverItClaims() {
        let resolved = proxies.resolve(peer: "203.0.113.5", headers: fields([
            ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https")]))
        #expect(resolved == ForwardedRequest(clientAddress: "203.0.113.5", scheme: nil, host: nil))
    }

    @Test func theClientIsTheRightmostAddressNotAProxy() {
        // The client wrote the first entry itself; 10.1.1.1 is an inner proxy of ours.
        let resolved = proxies.resolve(peer: "10.0.0.2", headers: fields([
            ("X-Forwarded-For", "1.2.3.4, 198.51.100.1, 10.1.1.1"), ("X-Forwarded-Host", "files.example.com")]))
        #expect(resolved == ForwardedRequest(clientAddress: "198.51.100.1", scheme: nil, host: "files.example.com"))
    }

    @Test func forwardedWinsOverXForwarded() {
        let resolved = proxies.resolve(peer: "::1", headers: fields([
            ("Forwarded", #"for="[2001:db8::7]:4711";proto=https;host=desk.example.com, for=10.9.9.9"#),
            ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Proto", "http")]))
        #expect(resolved == ForwardedRequest(clientAddress: "2001:db8::7", scheme: "https", host: "desk.example.com"))
    }

    @Test func aHostOrSchemeThatCouldBreakAURLIsDropped() {
        let resolved = proxies.resolve(peer: "10.0.0.2", headers: fields([
            ("X-Forwarded-Host", "a.example/evil?"), ("X-Forwarded-Proto", "javascript")]))
        #expect(resolved == ForwardedRequest(clientAddress: "10.0.0.2", scheme: nil, host: nil))
    }
}
