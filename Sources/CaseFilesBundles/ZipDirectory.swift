import CZlib
import CaseFilesCore
import CaseFilesStorage
import Foundation

/// A zip archive's entries from its central directory (APPNOTE.TXT 6.3.10 §4.3.16 end of central directory,
/// §4.3.14-15 zip64 end record and locator, §4.3.12 central file header, §4.5.3 zip64 extra field), each
/// entry's data located through its local header (§4.3.7), then hashed in archive order: stored bytes as
/// they are, deflate through raw inflate with the expansion bound. Data descriptors (§4.3.9) need nothing:
/// the central directory has the sizes.
enum ZipDirectory {
    struct Located {
        var entry: BundleEntry
        var localHeaderOffset: Int64
        var crc32: UInt32
        var encrypted: Bool
    }

    /// The entries, or why the archive cannot be listed. `truncated`: the listing stopped at the entry cap.
    static func read(_ input: inout BlobInput, attachmentID: String, limits: BundleLimits)
        throws -> (entries: [Located], truncatedReason: String?)
    {
        let size = input.size
        let tailStart = max(0, size - 65_557)  // EOCD (22) + the longest comment (65,535)
        let tail = try input.bytes(at: tailStart, count: Int(size - tailStart))
        guard tail.count >= 22,
              let eocd = stride(from: tail.count - 22, through: 0, by: -1).first(where: { at in
                  tail[at] == 0x50 && tail[at + 1] == 0x4b && tail[at + 2] == 5 && tail[at + 3] == 6 })
        else {
            throw BundleReadError.truncated("no end of central directory record: the zip is truncated or damaged")
        }
        var count = Int64(le16(tail, eocd + 10))
        var directorySize = Int64(le32(tail, eocd + 12))
        var directoryOffset = Int64(le32(tail, eocd + 16))
        if count == 0xffff || directorySize == 0xffff_ffff || directoryOffset == 0xffff_ffff {
            let locatorAt = tailStart + Int64(eocd) - 20
            let locator = try input.bytes(at: locatorAt, count: 20)
            guard locator.count == 20, le32(locator, 0) == 0x0706_4b50 else {
                throw BundleReadError.corrupt("zip64 sizes without a zip64 end of central directory locator")
            }
            let record = try input.bytes(at: Int64(le64(locator, 8)), count: 56)
            guard record.count == 56, le32(record, 0) == 0x0606_4b50 else {
                throw BundleReadError.corrupt("the zip64 end of central directory record is missing")
            }
            count = Int64(le64(record, 32))
            directorySize = Int64(le64(record, 40))
            directoryOffset = Int64(le64(record, 48))
        }
        guard directoryOffset >= 0, directorySize >= 0, directoryOffset + directorySize <= size else {
            throw BundleReadError.truncated("the central directory lies past the end of the file (truncated)")
        }
        var located: [Located] = []
        var truncatedReason: String?
        var firstWithPath: [String: Int] = [:]
        input.seek(directoryOffset)
        let reader = SequentialBytes()
        for _ in 0..<count {
            guard located.count < limits.maxEntries else {
                truncatedReason = "more than \(limits.maxEntries) entries: the index stops at its cap"
                break
            }
            guard let fixed = try reader.take(46, from: &input), le32(fixed, 0) == 0x0201_4b50 else {
                truncatedReason = "the central directory is damaged after \(located.count) entries"
                break
            }
            let nameLength = Int(le16(fixed, 28)), extraLength = Int(le16(fixed, 30)), commentLength = Int(le16(fixed, 32))
            guard let name = try reader.take(nameLength, from: &input), let extra = try reader.take(extraLength, from: &input),
                  try reader.take(commentLength, from: &input) != nil else {
                truncatedReason = "the central directory is damaged after \(located.count) entries"
                break
            }
            let flags = le16(fixed, 8), method = Int(le16(fixed, 10))
            var compressed = Int64(le32(fixed, 20)), uncompressed = Int64(le32(fixed, 24))
            var localOffset = Int64(le32(fixed, 42))
            // §4.5.3: the zip64 extra field holds, in this order, only the values whose 32-bit field is all ones.
            var at = 0
            while at + 4 <= extra.count {
                let tag = le16(extra, at), length = Int(le16(extra, at + 2))
                if tag == 1 {
                    var field = at + 4
                    if uncompressed == 0xffff_ffff, field + 8 <= extra.count { uncompressed = Int64(le64(extra, field)); field += 8 }
                    if compressed == 0xffff_ffff, field + 8 <= extra.count { compressed = Int64(le64(extra, field)); field += 8 }
                    if localOffset == 0xffff_ffff, field + 8 <= extra.count { localOffset = Int64(le64(extra, field)) }
                }
                at += 4 + length
            }
            // Names are UTF-8 when flag bit 11 says so, else CP437; both read as UTF-8 here (ASCII either way).
            let path = String(decoding: name, as: UTF8.self)
            let madeBy = le16(fixed, 4) >> 8
            let mode = le32(fixed, 38) >> 16
            let type: BundleEntryType
            if madeBy == 3 && mode & 0o170000 == 0o120000 {
                type = .symlink
            } else if path.hasSuffix("/") || (madeBy == 3 && mode & 0o170000 == 0o040000) {
                type = .directory
            } else {
                type = .file
            }
            let problem = unreadable(flags: Int(flags), method: Int(method))
            let entryFlags = flagsMarkingDuplicates(path, located: &located, firstWithPath: &firstWithPath)
            located.append(Located(
                entry: BundleEntry(attachmentID: attachmentID, number: located.count + 1, path: path, size: uncompressed,
                                   modifiedAt: dosDate(date: le16(fixed, 14), time: le16(fixed, 12)), type: type,
                                   dataOffset: 0, compressedSize: compressed, method: method, problem: problem,
                                   flags: entryFlags),
                localHeaderOffset: localOffset, crc32: le32(fixed, 16), encrypted: flags & 1 != 0))
        }
        return (located, truncatedReason)
    }

    /// Without a central directory (a zip cut short): the entries found by walking the local headers from the
    /// start (APPNOTE §4.3.7), as far as their sizes are known before their data (no data descriptor) and the file
    /// goes. Returns them and why the walk stopped.
    static func scanLocalHeaders(_ input: inout BlobInput, attachmentID: String, limits: BundleLimits)
        throws -> (entries: [Located], stopReason: String)
    {
        var located: [Located] = []
        var firstWithPath: [String: Int] = [:]
        var offset: Int64 = 0
        while true {
            guard located.count < limits.maxEntries else {
                return (located, "more than \(limits.maxEntries) entries: the index stops at its cap")
            }
            let fixed = try input.bytes(at: offset, count: 30)
            guard fixed.count == 30, le32(fixed, 0) == 0x0403_4b50 else {
                return (located, "no central directory (the zip is truncated?): entries listed from their local "
                    + "headers up to offset \(offset)")
            }
            let flags = le16(fixed, 6), method = Int(le16(fixed, 8))
            let nameLength = Int(le16(fixed, 26)), extraLength = Int(le16(fixed, 28))
            let variable = try input.bytes(at: offset + 30, count: nameLength + extraLength)
            guard variable.count == nameLength + extraLength else {
                return (located, "the zip ends inside the local header at offset \(offset) (truncated)")
            }
            var compressed = Int64(le32(fixed, 18)), uncompressed = Int64(le32(fixed, 22))
            let extra = Array(variable[nameLength...])
            var at = 0
            while at + 4 <= extra.count {  // §4.5.3: in a local header the zip64 field holds both sizes
                let tag = le16(extra, at), length = Int(le16(extra, at + 2))
                if tag == 1 && at + 20 <= extra.count {
                    uncompressed = Int64(le64(extra, at + 4))
                    compressed = Int64(le64(extra, at + 12))
                }
                at += 4 + length
            }
            if flags & 8 != 0 {
                return (located, "no central directory (the zip is truncated?), and the entry at offset \(offset) "
                    + "gives its sizes only after its data: the listing stops there")
            }
            let path = String(decoding: variable[0..<nameLength], as: UTF8.self)
            let problem = unreadable(flags: Int(flags), method: Int(method))
            let entryFlags = flagsMarkingDuplicates(path, located: &located, firstWithPath: &firstWithPath)
            located.append(Located(
                entry: BundleEntry(attachmentID: attachmentID, number: located.count + 1, path: path, size: uncompressed,
                                   modifiedAt: dosDate(date: le16(fixed, 12), time: le16(fixed, 10)),
                                   type: path.hasSuffix("/") ? .directory : .file, dataOffset: 0,
                                   compressedSize: compressed, method: method, problem: problem, flags: entryFlags),
                localHeaderOffset: offset, crc32: le32(fixed, 14), encrypted: flags & 1 != 0))
            offset += 30 + Int64(nameLength + extraLength) + compressed
            if offset > input.size {
                return (located, "the zip ends inside entry \(located.count) (truncated)")
            }
        }
    }

    /// Finds each entry's data through its local header and hashes it, in archive order (one forward pass).
    static func hash(_ located: inout [Located], input: inout BlobInput, limits: BundleLimits,
                     shouldStop: () -> Bool) throws {
        for index in located.indices.sorted(by: { located[$0].localHeaderOffset < located[$1].localHeaderOffset }) {
            if shouldStop() { throw CancellationError() }
            let header = try input.bytes(at: located[index].localHeaderOffset, count: 30)
            guard header.count == 30, le32(header, 0) == 0x0403_4b50 else {
                located[index].entry.problem = located[index].entry.problem ?? "its local header is missing or damaged"
                continue
            }
            let dataOffset = located[index].localHeaderOffset + 30 + Int64(le16(header, 26)) + Int64(le16(header, 28))
            located[index].entry.dataOffset = dataOffset
            let entry = located[index].entry
            guard entry.problem == nil, entry.type != .directory else { continue }
            let compressed = entry.compressedSize ?? 0
            if dataOffset + compressed > input.size {
                located[index].entry.problem = "the archive ends inside this entry (truncated)"
                continue
            }
            if entry.method == 8, limits.exceedsExpansion(output: entry.size, input: compressed) {
                located[index].entry.problem = "declared to expand more than \(limits.maxExpansionRatio):1 "
                    + "(\(compressed) to \(entry.size) bytes; a zip bomb?): not inflated"
                continue
            }
            var digest = SHA256Digest()
            var crc = crc32(0, nil, 0)
            var target: [UInt8] = []
            let keepTarget = entry.type == .symlink
            do {
                var produced: Int64 = 0
                let reader = try BundleEntryReader(blob: input.reader, blobSize: input.size, format: .zip, entry: entry,
                                                   checkpoint: nil, range: 0...max(0, entry.size - 1))
                while entry.size > 0, let piece = try reader.next() {
                    piece.withUnsafeBytes { bytes in
                        digest.update(bytes)
                        crc = crc32(crc, bytes.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(bytes.count))
                    }
                    if keepTarget && target.count < 4096 { target += piece.prefix(4096 - target.count) }
                    produced += Int64(piece.count)
                }
                guard produced == entry.size else {
                    located[index].entry.problem = "inflates to \(produced) bytes, not the \(entry.size) declared: corrupt"
                    continue
                }
                guard UInt32(crc) == located[index].crc32 else {
                    located[index].entry.problem = "CRC-32 mismatch: the entry is corrupt"
                    continue
                }
            } catch let error as BundleReadError {
                located[index].entry.problem = error.description
                continue
            }
            located[index].entry.sha256 = digest.finalize().hexString
            if keepTarget { located[index].entry.linkTarget = String(decoding: target, as: UTF8.self) }
        }
    }

    /// Why an entry cannot be read (encrypted, or a method other than stored and deflate), or nil.
    static func unreadable(flags: Int, method: Int) -> String? {
        if flags & 1 != 0 { return "encrypted entry: not readable" }
        if method != 0 && method != 8 {
            return "compression method \(method) (\(methodName(method))) is not readable; stored and deflate are"
        }
        return nil
    }

    /// The new entry's path flags; a path seen before marks both entries `duplicate_path` (tar and zip allow it).
    static func flagsMarkingDuplicates(_ path: String, located: inout [Located], firstWithPath: inout [String: Int]) -> [String] {
        var flags = BundleEntry.pathFlags(path)
        if let first = firstWithPath[path] {
            if !located[first].entry.flags.contains("duplicate_path") { located[first].entry.flags.append("duplicate_path") }
            flags.append("duplicate_path")
        } else {
            firstWithPath[path] = located.count
        }
        return flags
    }

    static func methodName(_ method: Int) -> String {
        switch method {
        case 9: "Deflate64"
        case 12: "bzip2"
        case 14: "LZMA"
        case 93: "Zstandard"
        case 95: "xz"
        case 99: "AES encryption"
        default: "unknown"
        }
    }

    /// MS-DOS date and time (APPNOTE §4.4.6), taken as UTC: the zip does not say its time zone.
    static func dosDate(date: UInt16, time: UInt16) -> Date? {
        var parts = DateComponents()
        parts.calendar = Calendar(identifier: .gregorian)
        parts.timeZone = TimeZone(identifier: "UTC")
        parts.year = 1980 + Int(date >> 9)
        parts.month = Int((date >> 5) & 15)
        parts.day = Int(date & 31)
        parts.hour = Int(time >> 11)
        parts.minute = Int((time >> 5) & 63)
        parts.second = Int(time & 31) * 2
        guard (1...12).contains(parts.month!), (1...31).contains(parts.day!) else { return nil }
        return parts.date
    }

    static func le16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
    static func le32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(le16(b, at)) | UInt32(le16(b, at + 2)) << 16 }
    static func le64(_ b: [UInt8], _ at: Int) -> UInt64 { UInt64(le32(b, at)) | UInt64(le32(b, at + 4)) << 32 }
}

/// Takes exact byte counts from a `BlobInput`, across its buffer refills.
struct SequentialBytes {
    /// Nil when the blob ends first.
    func take(_ count: Int, from input: inout BlobInput) throws -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let available = try input.available()
            if available.isEmpty { return nil }
            let n = min(count - out.count, available.count)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: available[0..<n]))
            input.consume(n)
        }
        return out
    }
}
