import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Drives one connection's `ConnectionDeadlines` and its place in the `ConnectionRegistry`: it admits the
/// connection (or closes it at the cap), arms one timer for the deadline in force and closes the connection
/// when it passes. It sits between SwiftNIO's HTTP/1 decoder and the HTTPTypes codec, so it sees request
/// heads and ends, response ends and writability; `RequestBytesObserver`, first in the pipeline, tells it
/// when the first byte of a request arrives, before there is a head to see.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Outbound user event from a route handler: it reads this request's body under its own rate watchdog
    /// (`AppRequestContext.takeOverBodyDeadline()`), so the body deadline no longer applies.
    struct BodyTakenOver: Sendable {}

    private let limits: ConnectionLimits
    private let registry: ConnectionRegistry
    private var deadlines: ConnectionDeadlines
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var armedFor: ContinuousClock.Instant?
    private var wasIdle = true
    /// Whether a response head for the request in progress was written (then a 408 can no longer be sent).
    private var responseStarted = false
    /// Answered 408 and half-closed: no deadline applies any more, the linger closes the connection.
    private var lingering = false

    init(limits: ConnectionLimits, registry: ConnectionRegistry) {
        self.limits = limits
        self.registry = registry
        self.deadlines = ConnectionDeadlines(limits: limits, acceptedAt: .now)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        guard registry.admit(channel) else {
            context.close(promise: nil)
            return
        }
        let registry = self.registry
        channel.closeFuture.whenComplete { _ in registry.remove(channel) }
        perform(deadlines.timerFired(at: .now))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    /// Called by `RequestBytesObserver` for every socket read, before HTTP parsing.
    func bytesArrived() {
        perform(deadlines.bytesArrived(at: .now))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            responseStarted = false
            perform(deadlines.requestHeadReceived(at: .now))
        case .body:
            break
        case .end:
            perform(deadlines.requestEndReceived())
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responseStarted = true
        case .end:
            perform(deadlines.responseEnded(at: .now))
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        perform(deadlines.writabilityChanged(isWritable: context.channel.isWritable, at: .now))
        context.fireChannelWritabilityChanged()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is BodyTakenOver else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        perform(deadlines.bodyTakenOverByHandler())
        promise?.succeed(())
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func perform(_ action: ConnectionDeadlines.Action) {
        guard let context, !lingering else { return }
        if deadlines.isIdle != wasIdle {
            wasIdle = deadlines.isIdle
            if wasIdle { registry.markIdle(context.channel) } else { registry.markBusy(context.channel) }
        }
        switch action {
        case .disarm:
            timer?.cancel()
            timer = nil
            armedFor = nil
        case .schedule(let instant):
            guard instant != armedFor else { return }  // most events leave the deadline where it was
            timer?.cancel()
            armedFor = instant
            timer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: TimeAmount(instant - .now)) {
                [self] in
                self.timer = nil
                self.armedFor = nil
                self.perform(self.deadlines.timerFired(at: .now))
            }
        case .close(let reason):
            timer?.cancel()
            timer = nil
            registry.closedPastDeadline(reason)
            close(context, reason: reason)
        }
    }

    /// How long a connection answered 408 stays half-open, so the client reads the answer before the close
    /// (closing with its unread bytes in our receive buffer would send a reset that can destroy the answer,
    /// RFC 9112 §9.6; nginx's `lingering_timeout` is 5 s).
    static let lingerAfterAnswer: TimeAmount = .seconds(2)

    /// A body that stopped arriving gets 408 (RFC 9110 §15.5.9) if no response has begun; every other
    /// deadline closes silently: nobody is waiting for an answer (RFC 9112 §9.5).
    private func close(_ context: ChannelHandlerContext, reason: ConnectionDeadlines.Reason) {
        if reason == .send {
            // Reset rather than close: a graceful close would leave the unread response in the kernel,
            // pinned in an orphaned socket for minutes (nginx's reset_timedout_connection).
            let channel = context.channel
            guard let socket = channel as? any SocketOptionProvider else {
                context.close(promise: nil)
                return
            }
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        guard reason == .body, !responseStarted else {
            context.close(promise: nil)
            return
        }
        let (head, body) = APIError.bodyTimedOut(limits.bodyTimeout).http1Response(version: .http1_1)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: Self.lingerAfterAnswer) { channel.close(promise: nil) }
        }
        lingering = true  // answered: only the linger's close remains
    }
}

/// First in the pipeline: tells `ConnectionGuardHandler` that bytes arrived, so a keep-alive connection's
/// idle deadline gives way to the header deadline at a request's first byte.
final class RequestBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let guardHandler: ConnectionGuardHandler

    init(_ guardHandler: ConnectionGuardHandler) {
        self.guardHandler = guardHandler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guardHandler.bytesArrived()
        context.fireChannelRead(data)
    }
}
