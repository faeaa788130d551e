@testable import CaseFilesStorage
import Testing

@Suite struct ProcessMemoryTests {
    /// An operator's `GLIBC_TUNABLES` allocator tuning is left alone (the bench's A/B of trim thresholds relies
    /// on it, and so does a memory-tight host).
    @Test func anOperatorsMallocTunablesWin() {
        #expect(ProcessMemory.keepFreedMemory(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=67108864"]) == false)
        #expect(ProcessMemory.keepFreedMemory(environment: ["GLIBC_TUNABLES": "glibc.rtld.nns=2:glibc.malloc.arena_max=2"]) == false)
    }

    /// Tunables for other parts of glibc do not count as allocator tuning; on glibc the policy applies.
    @Test func otherTunablesDoNotStopThePolicy() {
        #expect(ProcessMemory.keepFreedMemory(environment: ["GLIBC_TUNABLES": "glibc.rtld.nns=2"]) == true)
        #expect(ProcessMemory.keepFreedMemory(environment: [:]) == true)
    }
}
