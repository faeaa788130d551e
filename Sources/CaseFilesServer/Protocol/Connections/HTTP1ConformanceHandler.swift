import NIOCore
import NIOHTTP1

/// What HTTP/1.x asks of a server that the HTTPTypes codec cannot do, because HTTPTypes drops the request's
/// version. It sits between SwiftNIO's HTTP/1 decoder and that codec, where versions are still visible:
/// - A request that does not keep the connection alive (HTTP/1.0 without `Connection: keep-alive`, or any
///   request with `Connection: close`) gets `Connection: close` and the connection is closed after its
///   response (RFC 9112 §9.3, §9.6). An HTTP/1.0 keep-alive request keeps the connection only when the
///   response has a `Content-Length`, since HTTP/1.0 has no chunked coding to delimit it otherwise.
/// - An HTTP/1.0 client gets an HTTP/1.0 response, so SwiftNIO's encoder never chunks it (RFC 9112 §6.1),
///   and never a 1xx interim response (RFC 9110 §15.2: a server must not send one to an HTTP/1.0 client).
/// - It is the one place that closes a connection after a response: for the reasons above, and when asked
///   by the `CloseAfterResponse` outbound event (a route handler whose body read was stopped part-way, so
///   the rest of the body cannot be drained; `ExpectContinueHandler` for a final answer sent in place of
///   `100 Continue`). The answer then says `Connection: close` if its head is not written yet.
/// - A request the parser refuses gets a JSON error like every other error: 431 for a header section over
///   the limits (RFC 6585 §5), 400 otherwise. Hummingbird answers a parser error with an empty 400, which
///   this handler replaces.
final class HTTP1ConformanceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Outbound user event: close the connection once the response in progress (or the next) has ended.
    struct CloseAfterResponse: Sendable {}

    private struct RequestVersion {
        var version: HTTPVersion
        var keepAlive: Bool
        var isHead: Bool

        var speaksHTTP11: Bool { version.major > 1 || (version.major == 1 && version.minor >= 1) }
    }

    /// The requests whose responses have not ended, oldest first (more than one when pipelined).
    private var pending = CircularBuffer<RequestVersion>()
    private var parserError: HTTPParserError?
    private var closeAfterResponse = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            // HTTP/1.0 has no chunked coding: a 1.0 request that claims it cannot be framed reliably, so the
            // connection ends after the answer (RFC 9112 §6.1).
            let chunked10 = head.version.minor == 0 && head.headers[canonicalForm: "transfer-encoding"].contains("chunked")
            pending.append(RequestVersion(version: head.version, keepAlive: head.isKeepAlive && !chunked10,
                                          isHead: head.method == .HEAD))
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is CloseAfterResponse else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        closeAfterResponse = true
        promise?.succeed(())
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError { parserError = error }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            // Only Hummingbird's own answer (empty); a route that met the error in a body answers JSON itself.
            if let parserError, head.status == .badRequest, head.headers[canonicalForm: "content-length"] == ["0"] {
                writeParserError(parserError, context: context, promise: promise)
                return
            }
            let request = pending.first ?? RequestVersion(version: .http1_1, keepAlive: true, isHead: false)
            if head.status.code < 200 {
                guard request.speaksHTTP11 else {
                    promise?.succeed(())  // an interim response is a head alone: nothing else to drop
                    return
                }
                context.write(data, promise: promise)
                return
            }
            head.version = request.speaksHTTP11 ? .http1_1 : .http1_0
            // An HTTP/1.0 connection can outlive a response only if the client can tell where it ends without
            // a close: a Content-Length, or a response that has no body (RFC 9112 §6.3).
            let delimited = head.headers[canonicalForm: "content-length"].first != nil
                || head.status == .noContent || head.status == .notModified || request.isHead
            let keepAlive = request.keepAlive && (request.speaksHTTP11 || delimited)
            if !keepAlive || closeAfterResponse {
                closeAfterResponse = true
                head.headers.replaceOrAdd(name: "Connection", value: "close")
            } else if !request.speaksHTTP11 {
                head.headers.replaceOrAdd(name: "Connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            _ = pending.popFirst()
            guard closeAfterResponse else {
                context.write(data, promise: promise)
                return
            }
            let written = promise ?? context.eventLoop.makePromise()
            let channel = context.channel
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
            context.write(data, promise: written)
        }
    }

    /// Replaces Hummingbird's empty 400 with the JSON error. Hummingbird then writes the `.end` and closes
    /// only its sending side, so a client still sending (a 200 KiB header section) reads the answer instead
    /// of a reset; the connection's deadlines close the rest.
    private func writeParserError(_ error: HTTPParserError, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let apiError = error == .headerOverflow
            ? APIError.headerSectionTooLarge()
            : APIError.malformedRequest("\(error)")
        let version: HTTPVersion = pending.first?.speaksHTTP11 == false ? .http1_0 : .http1_1
        let (head, body) = apiError.http1Response(version: version)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: promise)
    }
}
