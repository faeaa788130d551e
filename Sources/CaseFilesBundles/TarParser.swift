import CaseFilesCore
import Foundation

/// A push parser for tar streams (POSIX ustar, GNU long names `L`/`K`, pax headers `x`/`g`: POSIX.1-2017
/// "pax", "ustar Interchange Format"), fed a plain tar blob or a gzip stream's output in pieces of any size.
/// It lists each entry where its header is read, hashes its data as it passes, and stops at the end-of-archive
/// blocks, at the entry cap, or at the first header that is not one (its checksum is wrong).
final class TarParser {
    let attachmentID: String
    let limits: BundleLimits
    private(set) var entries: [BundleEntry] = []
    /// The stream offset of the next byte.
    private(set) var position: Int64 = 0
    /// Set when parsing stopped before the archive's end (the index is then truncated at `stoppedAt`).
    private(set) var stopReason: String?
    private(set) var stoppedAt: Int64?
    /// The end-of-archive blocks were read.
    private(set) var ended = false
    var done: Bool { ended || stopReason != nil }

    private enum DataKind { case entry(Int), longName, longLink, pax, globalPax, skip }
    private enum Phase { case header, data(Int64, DataKind), padding(Int) }
    private var phase = Phase.header
    private var header: [UInt8] = []
    private var extended: [UInt8] = []
    private var extendedOverflow = false
    private var pendingPath: String?
    private var pendingLink: String?
    private var pendingPax: [String: String] = [:]
    private var globalPax: [String: String] = [:]
    private var digest = SHA256Digest()
    private var firstWithPath: [String: Int] = [:]
    private var zeroBlocks = 0

    init(attachmentID: String, limits: BundleLimits) {
        self.attachmentID = attachmentID
        self.limits = limits
        header.reserveCapacity(512)
    }

    /// Parses `bytes`; returns false once parsing is done (the caller stops feeding).
    @discardableResult
    func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count && !done {
            switch phase {
            case .header:
                let take = min(512 - header.count, bytes.count - offset)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + take]))
                offset += take
                position += Int64(take)
                if header.count == 512 {
                    handleHeader()
                    header.removeAll(keepingCapacity: true)
                }
            case .data(let remaining, let kind):
                let take = Int(min(remaining, Int64(bytes.count - offset)))
                let piece = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + take])
                switch kind {
                case .entry: digest.update(piece)
                case .longName, .longLink, .pax, .globalPax:
                    if extended.count + take <= limits.maxExtendedHeaderBytes {
                        extended.append(contentsOf: piece)
                    } else {
                        extendedOverflow = true
                    }
                case .skip: break
                }
                offset += take
                position += Int64(take)
                let left = remaining - Int64(take)
                if left > 0 {
                    phase = .data(left, kind)
                } else {
                    finishData(kind)
                }
            case .padding(let remaining):
                let take = min(remaining, bytes.count - offset)
                offset += take
                position += Int64(take)
                phase = remaining - take > 0 ? .padding(remaining - take) : .header
            }
        }
        return !done
    }

    /// The input ended (`reason` nil) or was stopped by the layer below (a gzip bomb, corrupt deflate data).
    func finish(cutShort reason: String?) {
        guard !done else { return }
        let why = reason ?? "the archive ends early (truncated): no end-of-archive blocks after offset \(position)"
        if case .data(_, .entry(let index)) = phase {
            entries[index].problem = reason ?? "the archive ends inside this entry (truncated)"
            entries[index].sha256 = nil
        }
        // A cut right after the last entry's data is a complete archive but for its end blocks: every entry
        // listed is whole, yet the index says where it stopped.
        stop(why, at: position)
    }

    private func stop(_ reason: String, at offset: Int64) {
        stopReason = reason
        stoppedAt = offset
    }

    // MARK: Headers

    private func handleHeader() {
        let start = position - 512
        if header.allSatisfy({ $0 == 0 }) {
            zeroBlocks += 1
            if zeroBlocks == 2 { ended = true }
            return
        }
        if zeroBlocks == 1 {
            // One zero block then more headers: GNU tar reads on ("A lone zero block"), and so do we.
            zeroBlocks = 0
        }
        guard Self.checksumMatches(header) else {
            stop("not a tar header at offset \(start) (bad checksum): the archive is corrupt from here", at: start)
            return
        }
        guard var size = Self.number(header, 124, 12), size >= 0 else {
            stop("unreadable size in the tar header at offset \(start)", at: start)
            return
        }
        let typeflag = header[156]
        switch typeflag {
        case UInt8(ascii: "L"): beginData(size, .longName)
        case UInt8(ascii: "K"): beginData(size, .longLink)
        case UInt8(ascii: "x"): beginData(size, .pax)
        case UInt8(ascii: "g"): beginData(size, .globalPax)
        default:
            guard entries.count < limits.maxEntries else {
                stop("more than \(limits.maxEntries) entries: the index stops at its cap", at: start)
                return
            }
            let name = Self.string(header, 0, 100)
            let isUstar = header[257..<263].elementsEqual("ustar\0".utf8)
            let prefix = isUstar ? Self.string(header, 345, 155) : ""
            var path = pendingPax["path"] ?? pendingPath ?? (prefix.isEmpty ? name : prefix + "/" + name)
            let link = pendingPax["linkpath"] ?? pendingLink ?? Self.string(header, 157, 100)
            if let paxSize = pendingPax["size"].flatMap({ Int64($0) }), paxSize >= 0 { size = paxSize }
            let seconds = (pendingPax["mtime"] ?? globalPax["mtime"]).flatMap { Double($0) }
                ?? Self.number(header, 136, 12).map { Double($0) }
            var flags = BundleEntry.pathFlags(path)
            if path.utf8.count > limits.maxPathBytes {
                path = String(decoding: path.utf8.prefix(limits.maxPathBytes), as: UTF8.self)
                flags.append("path_cut")
            }
            let type: BundleEntryType
            var hasData = true
            var problem: String?
            switch typeflag {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): type = .file
            case UInt8(ascii: "1"): type = .hardlink; hasData = false
            case UInt8(ascii: "2"): type = .symlink; hasData = false
            case UInt8(ascii: "5"): type = .directory; hasData = false
            case UInt8(ascii: "3"), UInt8(ascii: "4"), UInt8(ascii: "6"): type = .other; hasData = false
            default:
                type = .other
                problem = "tar entry type '\(Character(Unicode.Scalar(typeflag)))' is not readable"
            }
            let number = entries.count + 1
            if let first = firstWithPath[path] {
                if !entries[first].flags.contains("duplicate_path") { entries[first].flags.append("duplicate_path") }
                flags.append("duplicate_path")
            } else {
                firstWithPath[path] = entries.count
            }
            entries.append(BundleEntry(
                attachmentID: attachmentID, number: number, path: path, size: hasData ? size : 0,
                modifiedAt: seconds.map { Date(timeIntervalSince1970: $0) }, type: type,
                linkTarget: type == .symlink || type == .hardlink ? link : nil, dataOffset: position, problem: problem,
                sha256: type == .file && size == 0 ? SHA256Digest().finalize().hexString : nil, flags: flags))
            pendingPath = nil
            pendingLink = nil
            pendingPax = [:]
            if hasData && size > 0 {
                digest = SHA256Digest()
                beginData(size, type == .file ? .entry(entries.count - 1) : .skip)
            }
        }
    }

    private func beginData(_ size: Int64, _ kind: DataKind) {
        extended.removeAll(keepingCapacity: true)
        extendedOverflow = false
        if size == 0 { finishData(kind) } else { phase = .data(size, kind) }
    }

    private func finishData(_ kind: DataKind) {
        switch kind {
        case .entry(let index):
            entries[index].sha256 = digest.finalize().hexString
        case .longName, .longLink, .pax, .globalPax:
            if extendedOverflow {
                stop("a tar extended header at offset \(position) is larger than \(limits.maxExtendedHeaderBytes) bytes",
                     at: position)
                return
            }
            switch kind {
            case .longName: pendingPath = Self.cString(extended)
            case .longLink: pendingLink = Self.cString(extended)
            case .pax: pendingPax.merge(Self.paxRecords(extended)) { $1 }
            default: globalPax.merge(Self.paxRecords(extended)) { $1 }
            }
        case .skip:
            break
        }
        let padding = Int((512 - position % 512) % 512)
        phase = padding > 0 ? .padding(padding) : .header
    }

    // MARK: Fields

    /// Whether a 512-byte block is a tar header: its checksum field (octal) equals the sum of its bytes with
    /// the field itself taken as spaces (unsigned, or signed as some old tars wrote it).
    static func checksumMatches(_ block: [UInt8]) -> Bool {
        guard block.count == 512, let stored = number(block, 148, 8) else { return false }
        var unsigned = 0
        var signed = 0
        for (index, byte) in block.enumerated() {
            let value = (148..<156).contains(index) ? 32 : byte
            unsigned += Int(value)
            signed += Int(Int8(bitPattern: value))
        }
        return Int64(unsigned) == stored || Int64(signed) == stored
    }

    /// A numeric field: octal digits (space or NUL terminated), or GNU base-256 when the high bit is set.
    static func number(_ block: [UInt8], _ at: Int, _ length: Int) -> Int64? {
        let field = block[at..<at + length]
        if let first = field.first, first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x3f)
            for byte in field.dropFirst() {
                guard value < Int64.max >> 8 else { return nil }
                value = value << 8 | Int64(byte)
            }
            return first & 0x40 != 0 ? nil : value
        }
        var value: Int64 = 0
        var seen = false
        for byte in field {
            if byte == 0 || (byte == 32 && seen) { break }
            if byte == 32 { continue }
            guard (48...55).contains(byte), value < Int64.max >> 3 else { return nil }
            value = value << 3 | Int64(byte - 48)
            seen = true
        }
        return value
    }

    static func string(_ block: [UInt8], _ at: Int, _ length: Int) -> String {
        cString(Array(block[at..<at + length]))
    }

    static func cString(_ bytes: [UInt8]) -> String {
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// pax records: "LENGTH KEY=VALUE\n", LENGTH counting the whole record in bytes.
    static func paxRecords(_ bytes: [UInt8]) -> [String: String] {
        var records: [String: String] = [:]
        var at = 0
        while at < bytes.count {
            guard let space = bytes[at...].firstIndex(of: 32),
                  let length = Int(String(decoding: bytes[at..<space], as: UTF8.self)), length > 0,
                  at + length <= bytes.count, bytes[at + length - 1] == 10
            else { break }
            let record = bytes[(space + 1)..<(at + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                records[String(decoding: record[record.startIndex..<equals], as: UTF8.self)] =
                    String(decoding: record[(equals + 1)...], as: UTF8.self)
            }
            at += length
        }
        return records
    }
}
