import NIOCore
import NIOHTTPTypes

/// Reads up to 512 KiB per socket read instead of NIO's default 64 KiB, so a large upload costs fewer
/// reads, fewer body parts through the async sequence and fewer pwrite calls. Removes itself once set.
final class LargeReadsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart

    func handlerAdded(context: ChannelHandlerContext) {
        context.channel.setOption(
            ChannelOptions.recvAllocator,
            value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 512 << 10)
        ).whenComplete { _ in }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
