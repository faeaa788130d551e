import Dispatch

/// The system's monotonic clock (`CLOCK_MONOTONIC`, through `DispatchTime`), in nanoseconds: for measuring
/// spans (`--trace-uploads`), never for dates. A read costs about 20 ns, so the upload path can afford a few
/// per MiB whether or not anyone is tracing.
public enum MonotonicClock {
    @inline(__always)
    public static func nanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Nanoseconds since `start` (a value of `nanoseconds()`).
    @inline(__always)
    public static func since(_ start: UInt64) -> UInt64 { nanoseconds() &- start }
}
