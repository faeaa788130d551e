import CaseFilesStorage

/// Sequential reads of a blob through one reusable buffer: the index's single pass and an entry's read.
/// No copy of the blob anywhere; `position` is the blob offset of the next byte not yet consumed.
struct BlobInput: ~Copyable {
    let reader: any BlobReader
    let size: Int64
    private let buffer: UnsafeMutableRawBufferPointer
    private var start: Int64
    private var filled = 0
    private var used = 0

    init(reader: any BlobReader, size: Int64, at offset: Int64 = 0, bufferSize: Int = 1 << 20) {
        self.reader = reader
        self.size = size
        self.buffer = .allocate(byteCount: bufferSize, alignment: 64)
        self.start = offset
    }

    deinit { buffer.deallocate() }

    var position: Int64 { start + Int64(used) }
    var atEnd: Bool { position >= size }

    /// The bytes read but not consumed, reading more when none are left; empty at the end of the blob.
    mutating func available() throws -> UnsafeRawBufferPointer {
        if used == filled {
            start += Int64(filled)
            used = 0
            let want = Int(min(Int64(buffer.count), max(0, size - start)))
            filled = want == 0 ? 0 : try reader.read(at: start, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        }
        return UnsafeRawBufferPointer(rebasing: buffer[used..<filled])
    }

    mutating func consume(_ count: Int) { used += count }

    /// Moves to `offset` (dropping what is buffered).
    mutating func seek(_ offset: Int64) {
        start = offset
        filled = 0
        used = 0
    }

    /// Up to `count` bytes at `offset`, without moving (headers, the byte before a checkpoint).
    func bytes(at offset: Int64, count: Int) throws -> [UInt8] {
        let count = Int(min(Int64(count), max(0, size - offset)))
        guard count > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: count)
        let reader = self.reader
        var done = 0
        while done < count {
            let n = try out.withUnsafeMutableBytes { target in
                try reader.read(at: offset + Int64(done), into: UnsafeMutableRawBufferPointer(rebasing: target[done...]))
            }
            if n == 0 { break }
            done += n
        }
        return Array(out[0..<done])
    }
}
