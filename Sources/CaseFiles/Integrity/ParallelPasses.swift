import Dispatch

/// Runs two independent passes over the same bytes on two cores at once (the chunk's and the whole
/// file's SHA-256 each cost ~0.7 ns/byte; side by side they take the time of one). The caller
/// guarantees the two closures touch disjoint state and both return before this does, which is why
/// the sendability check is waived here and nowhere else.
func inParallel(_ first: () -> Void, _ second: () -> Void) {
    withoutActuallyEscaping(first) { first in
        withoutActuallyEscaping(second) { second in
            let lanes = UncheckedLanes(first: first, second: second)
            DispatchQueue.concurrentPerform(iterations: 2) { lane in
                if lane == 0 { lanes.first() } else { lanes.second() }
            }
        }
    }
}

private struct UncheckedLanes: @unchecked Sendable {
    let first: () -> Void
    let second: () -> Void
}
