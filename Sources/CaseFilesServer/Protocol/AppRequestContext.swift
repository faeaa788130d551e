import Hummingbird
import Logging
import NIOCore
import CaseFilesCore

/// Per-request state: the authenticated user and the channel (needed to send `100 Continue`).
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var user: User?
    /// The drop credential that authenticated the request (issue #20), with `user` nil: it may only upload into its
    /// case (`requireUploader`); every other route refuses it (`requireUser`).
    public var dropCredential: DropToken?
    let channel: any Channel
    /// The client's IP address for logs: the connection's peer, or, when the peer is a trusted proxy
    /// (`--trusted-proxy`), the address it reports (`ForwardedMiddleware`). nil for a Unix socket.
    public var clientAddress: String?
    /// `scheme://host[:port]` as the client used it, when a trusted proxy reports the host; absolute URLs
    /// the server hands out (tus `Location`) start with it. nil: URLs stay relative to the request's.
    public var publicOrigin: String?
    /// What the request's log line and metrics need from the handlers (`ObservingResponder`).
    let observation = RequestObservation()

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// JSON request bodies (case creation and the like) are small; anything bigger is refused.
    public var maxUploadSize: Int { 64 * 1024 }

    /// The authenticated user. Routes behind `AuthMiddleware` have one, or a drop credential, which only upload
    /// routes take: anywhere else it gets what `AccessPolicy` says for it, 404 for a route naming another case
    /// (which it must not learn exists) and 403 `drop_credential_upload_only` otherwise.
    func requireUser() throws -> User {
        if let user { return user }
        if let dropCredential {
            let named = parameters.get("number").map { CaseNumber.normalise($0) ?? $0 }
            if AccessPolicy.decide(dropCredentialFor: dropCredential.caseNumber, caseNumber: named, action: nil) == .hidden {
                throw APIError.caseNotFound(named ?? "")
            }
            throw APIError.dropCredentialUploadOnly(dropCredential.caseNumber)
        }
        throw APIError.missingToken()
    }

    /// Who uploads: the user, or the drop credential (upload routes only).
    func requireUploader() throws -> Uploader {
        if let user { return .user(user) }
        if let dropCredential { return .dropCredential(dropCredential) }
        throw APIError.missingToken()
    }

    /// Answers `Expect: 100-continue` (RFC 9110 §10.1.1). Call it right before reading the body, once every
    /// check the headers alone decide has passed (for an upload: under the writer lock, after the offset and
    /// the room for `Content-Length`): a request refused before it gets its final status at once, and the
    /// client never sends the body (`ExpectContinueHandler` then closes the connection after the answer).
    /// Hummingbird never sends it by itself, and clients such as curl then stall a second per request.
    func sendContinueIfExpected() async {
        try? await channel.triggerUserOutboundEvent(ExpectContinueHandler.SendContinue()).get()
    }

    /// Tells the connection that this handler reads the request body under its own rate watchdog, so the
    /// connection's body deadline (`ConnectionLimits.bodyTimeout`) no longer applies to it.
    func takeOverBodyDeadline() async {
        try? await channel.triggerUserOutboundEvent(ConnectionGuardHandler.BodyTakenOver()).get()
    }

    /// Closes the connection after this request's response (`HTTP1ConformanceHandler.CloseAfterResponse`): a
    /// body read stopped part-way (superseded, cut off as too slow, shutdown) has lost its stream, so
    /// Hummingbird cannot drain the rest, and a client still sending would wait for its own timeout.
    func closeConnectionAfterResponse() async {
        try? await channel.triggerUserOutboundEvent(HTTP1ConformanceHandler.CloseAfterResponse()).get()
    }
}
