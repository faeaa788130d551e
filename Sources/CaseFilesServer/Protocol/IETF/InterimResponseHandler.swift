import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Sends an interim (1xx) response other than `100 Continue` when a route handler asks, with the `SendInterim`
/// outbound event: the IETF resumable-upload draft's `104 (Upload Resumption Supported)`, sent as soon as the
/// upload resource exists and before the body is read.
///
/// It sits nearer the network than `ExpectContinueHandler`, so the 104 does not count there as the answer to
/// `Expect: 100-continue`: the draft ("Status Code 104") says the server must still send the 100. A client
/// of HTTP/1.0 never gets it (`HTTP1ConformanceHandler` drops 1xx for it, RFC 9110 §15.2).
final class InterimResponseHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct SendInterim: Sendable {
        var response: HTTPResponse
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let interim = event as? SendInterim, interim.response.status.kind == .informational else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.head(interim.response)), promise: promise)
    }
}

extension AppRequestContext {
    /// Sends `response` (a 1xx) at once, ahead of the final response (`InterimResponseHandler`).
    func sendInterim(_ response: HTTPResponse) async {
        try? await channel.triggerUserOutboundEvent(InterimResponseHandler.SendInterim(response: response)).get()
    }
}
