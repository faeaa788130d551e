@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import NIOCore
import NIOEmbedded
import Testing

/// The connection deadlines as a pure state machine: every phase's deadline, without a network.
@Suite struct ConnectionDeadlinesTests {
    let limits = ConnectionLimits(headerTimeout: .seconds(60), bodyTimeout: .seconds(50), idleTimeout: .seconds(75),
                                  sendTimeout: .seconds(40), maxConnections: 10)
    let t0 = ContinuousClock.now

    func at(_ seconds: Int) -> ContinuousClock.Instant { t0.advanced(by: .seconds(seconds)) }

    @Test func aNewConnectionMustSendItsHeaderSectionWithinTheHeaderTimeout() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        #expect(machine.timerFired(at: at(0)) == .schedule(at(60)))
        // Bytes of a first request do not extend it: a trickled header section is cut at 60 s.
        #expect(machine.bytesArrived(at: at(30)) == .schedule(at(60)))
        #expect(machine.timerFired(at: at(59)) == .schedule(at(60)))
        #expect(machine.timerFired(at: at(60)) == .close(.header))
    }

    @Test func aBodyMustArriveWithinTheBodyTimeoutUnlessAnUploadHandlerTakesItOver() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        #expect(machine.requestHeadReceived(at: at(1)) == .schedule(at(51)))
        #expect(!machine.isIdle)
        #expect(machine.timerFired(at: at(51)) == .close(.body))

        var upload = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = upload.requestHeadReceived(at: at(1))
        #expect(upload.bodyTakenOverByHandler() == .disarm)
        #expect(upload.timerFired(at: at(3600)) == .disarm)
    }

    @Test func noDeadlineWhileTheHandlerWorksThenTheKeepAliveIdleTimeout() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = machine.requestHeadReceived(at: at(1))
        #expect(machine.requestEndReceived() == .disarm)  // a slow purge or a long commit is not the client's fault
        #expect(machine.responseEnded(at: at(500)) == .schedule(at(575)))
        #expect(machine.isIdle)
        #expect(machine.timerFired(at: at(575)) == .close(.idle))
    }

    @Test func theFirstByteOfTheNextRequestStartsTheHeaderDeadline() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = machine.requestHeadReceived(at: at(0))
        _ = machine.requestEndReceived()
        _ = machine.responseEnded(at: at(1))
        #expect(machine.bytesArrived(at: at(10)) == .schedule(at(70)))
        #expect(machine.bytesArrived(at: at(65)) == .schedule(at(70)))  // later bytes do not extend it
        #expect(machine.timerFired(at: at(70)) == .close(.header))
    }

    @Test func aClientThatStopsReadingIsClosedAfterTheSendTimeout() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = machine.requestHeadReceived(at: at(0))
        _ = machine.requestEndReceived()
        #expect(machine.writabilityChanged(isWritable: false, at: at(5)) == .schedule(at(45)))
        #expect(machine.writabilityChanged(isWritable: false, at: at(20)) == .schedule(at(45)))
        #expect(machine.writabilityChanged(isWritable: true, at: at(30)) == .disarm)  // it read again: in time
        #expect(machine.writabilityChanged(isWritable: false, at: at(31)) == .schedule(at(71)))
        #expect(machine.timerFired(at: at(71)) == .close(.send))
    }

    @Test func pipelinedRequestsKeepTheConnectionBusyUntilTheLastResponse() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = machine.requestHeadReceived(at: at(0))
        _ = machine.requestEndReceived()
        _ = machine.requestHeadReceived(at: at(0))
        _ = machine.requestEndReceived()
        #expect(machine.responseEnded(at: at(2)) == .disarm)
        #expect(!machine.isIdle)
        #expect(machine.responseEnded(at: at(3)) == .schedule(at(78)))
    }

    @Test func theDefaultCapLeavesDescriptorsForFilesAndTheDatabase() {
        #expect(ConnectionLimits.defaultMaxConnections(descriptorLimit: 1024) == 480)
        #expect(ConnectionLimits.defaultMaxConnections(descriptorLimit: 256) == 96)
        #expect(ConnectionLimits.defaultMaxConnections(descriptorLimit: 16) == 8)
        #expect(ConnectionLimits.defaultMaxConnections(descriptorLimit: 1 << 20) == 10_000)
    }
}

/// The connection cap across connections, with SwiftNIO's embedded channels (no sockets).
@Suite struct ConnectionRegistryTests {
    @Test func atTheCapTheLongestIdleConnectionMakesRoomAndBusyOnesAreNeverClosed() throws {
        let registry = ConnectionRegistry(maxConnections: 2, logger: .init(label: "test"))
        let first = EmbeddedChannel(), second = EmbeddedChannel(), third = EmbeddedChannel(), fourth = EmbeddedChannel()
        let t0 = ContinuousClock.now
        for channel in [first, second, third, fourth] { try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait() }
        #expect(registry.admit(first, now: t0))
        #expect(registry.admit(second, now: t0.advanced(by: .seconds(1))))
        registry.markBusy(first)
        #expect(registry.admit(third, now: t0.advanced(by: .seconds(2))))  // second, idle, makes room
        #expect(!second.isActive)
        #expect(first.isActive)
        #expect(registry.count == 2)
        registry.markBusy(third)
        #expect(!registry.admit(fourth, now: t0.advanced(by: .seconds(3))))  // all busy: the newcomer is refused
        #expect(first.isActive && third.isActive)
        registry.markIdle(first, now: t0.advanced(by: .seconds(4)))
        #expect(registry.admit(fourth, now: t0.advanced(by: .seconds(5))))
        #expect(!first.isActive)
    }
}

extension ConnectionDeadlinesTests {
    /// A handler that took the body over and then refused without reading it (a stale offset, say) leaves the
    /// rest of the body under the body deadline again, from its answer: found holding connections open forever.
    @Test func aBodyLeftUnreadByARefusalIsUnderTheBodyDeadlineAgain() {
        var machine = ConnectionDeadlines(limits: limits, acceptedAt: t0)
        _ = machine.requestHeadReceived(at: at(0))
        #expect(machine.bodyTakenOverByHandler() == .disarm)
        #expect(machine.responseEnded(at: at(10)) == .schedule(at(60)))
        #expect(machine.timerFired(at: at(60)) == .close(.body))
    }
}
