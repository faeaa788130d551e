import HTTPTypes
import NIOCore
import NIOHTTPTypes
import CaseFilesCore
import CaseFilesDatabase
import CaseFilesEngine
import CaseFilesStorage

/// Closes the connection once the current response has been written, when the route handler asks for it
/// (the `CloseAfterResponse` outbound event). An upload stopped part-way (superseded by a newer writer,
/// cut off as too slow, or stopped for shutdown) has lost its request body stream, so Hummingbird cannot
/// drain the rest of the body; without the close, a client still sending would wait for its own timeout.
final class CloseAfterResponseHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct CloseAfterResponse: Sendable {}

    private var closeAfterResponse = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard closeAfterResponse, case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        closeAfterResponse = false
        let written = promise ?? context.eventLoop.makePromise()
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.write(data, promise: written)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is CloseAfterResponse else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        closeAfterResponse = true
        promise?.succeed(())
    }
}
