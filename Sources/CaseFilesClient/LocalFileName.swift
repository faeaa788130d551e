import CaseFilesCore
/// A safe local file name made from an attachment's `filename`, which a customer chose and which is
/// therefore hostile input, and the numbered names (`server (1).log`) used when that name is taken.
/// Pure: it never looks at the file system; `AttachmentDownloader` decides which number is free.
///
/// The rule, applied in this order (every step is in `init(untrusted:)`):
/// 1. Unicode NFC, so that one name has one spelling (macOS writes NFD, Linux keeps what it is given).
/// 2. Each of these characters becomes `_`:
///    - path separators `/` and `\` (the name must stay one component inside the target directory);
///    - control characters (C0, DEL, C1: NUL ends a C path, a newline splits the printed line), Unicode
///      format characters (bidi overrides and isolates that make `gpj.exe` read `exe.jpg`, zero-width
///      characters, the BOM) and the line and paragraph separators;
///    - the characters Windows forbids in names, `< > : " | ? *` (also the shell's `?` and `*` globs), the
///      glob brackets `[ ]`, and `$`, backquote and `!`, which a shell still expands inside double quotes.
///    Other spaces (no-break, ideographic…) become a plain space.
/// 3. Leading dots (a hidden file such as `.bashrc`, and `.`/`..`), dashes (read as an option by `rm`,
///    `tar`…), `~` (tilde expansion), `#` (a comment when unquoted) and spaces are removed; so are trailing
///    dots and spaces, which Windows drops (so `a.log.` and `a.log` would be one file there).
/// 4. Nothing left: `attachment`.
/// 5. A Windows device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, also with an
///    extension and trailing spaces: `nul.txt`) gets a leading `_`.
/// 6. A name longer than `maxBytes` of UTF-8 is cut at a scalar boundary, keeping a short extension;
///    then step 3's trailing rule again.
public struct LocalFileName: Sendable, Equatable, CustomStringConvertible {
    /// The safe name: one path component, 1 to `maxBytes` UTF-8 bytes.
    public let name: String

    /// The name used when nothing is left of the original.
    public static let fallback = "attachment"
    /// At most this many UTF-8 bytes: below the 255 of NAME_MAX (ext4, XFS, tmpfs), so that a number
    /// (` (9999)`) and `.part` still fit.
    public static let maxBytes = 200
    /// An extension longer than this is not kept apart when a long name is truncated.
    package static let maxExtensionBytes = 16

    public var description: String { name }

    public init(untrusted: String) {
        var mapped = String.UnicodeScalarView()
        for scalar in untrusted.precomposedStringWithCanonicalMapping.unicodeScalars {
            if Self.isReplaced(scalar) {
                mapped.append("_")
            } else if scalar.properties.generalCategory == .spaceSeparator {
                mapped.append(" ")
            } else {
                mapped.append(scalar)
            }
        }
        var name = Self.trimmed(String(mapped))
        if name.isEmpty { name = Self.fallback }
        if Self.isWindowsDeviceName(name) { name = "_" + name }
        // Cutting keeps the first character (and at least maxBytes - maxExtensionBytes bytes), which step 3
        // made neither a dot nor a space, so the trim cannot empty the name.
        self.name = Self.trimmed(Self.truncated(name))
    }

    /// The `n`th alternative: `server.log` → `server (1).log`; `README` → `README (1)`; 0 is the name itself.
    public func numbered(_ n: Int) -> String {
        guard n > 0 else { return name }
        let (stem, ext) = Self.split(name)
        return "\(stem) (\(n))\(ext)"
    }

    // MARK: - The steps

    package static func isReplaced(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "/", "\\", "<", ">", ":", "\"", "|", "?", "*", "[", "]", "$", "`", "!": return true
        default: break
        }
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate: return true
        default: return false
        }
    }

    package static let leadingRemoved: Set<Unicode.Scalar> = [".", "-", "~", "#", " "]
    package static let trailingRemoved: Set<Unicode.Scalar> = [".", " "]

    /// By scalar, not by `Character`: `.` followed by a combining mark is one Character, yet the name
    /// still starts with the byte `.` and would be hidden.
    package static func trimmed(_ name: String) -> String {
        var scalars = Substring(name).unicodeScalars
        while let first = scalars.first, leadingRemoved.contains(first) { scalars.removeFirst() }
        while let last = scalars.last, trailingRemoved.contains(last) { scalars.removeLast() }
        return String(scalars)
    }

    /// Cut to `maxBytes` UTF-8 bytes at a scalar boundary, keeping a short extension.
    package static func truncated(_ name: String) -> String {
        guard name.utf8.count > maxBytes else { return name }
        var (stem, ext) = split(name)
        if ext.utf8.count > maxExtensionBytes || stem.isEmpty {
            (stem, ext) = (name, "")
        }
        var scalars = Array(stem.unicodeScalars)
        var bytes = stem.utf8.count + ext.utf8.count
        while bytes > maxBytes, let last = scalars.popLast() {
            bytes -= String(last).utf8.count
        }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view) + ext
    }

    /// `server.log` → (`server`, `.log`); a name without a dot past its first character has no extension.
    package static func split(_ name: String) -> (stem: String, ext: String) {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return (name, "") }
        return (String(name[..<dot]), String(name[dot...]))
    }

    /// Windows opens the device, not a file, for these names, with any extension and trailing spaces.
    /// https://learn.microsoft.com/windows/win32/fileio/naming-a-file#naming-conventions
    package static func isWindowsDeviceName(_ name: String) -> Bool {
        var base = Substring(name.prefix { $0 != "." })
        while base.last == " " { base.removeLast() }
        let upper = base.uppercased()
        if ["CON", "PRN", "AUX", "NUL"].contains(upper) { return true }
        guard upper.count == 4, upper.hasPrefix("COM") || upper.hasPrefix("LPT") else { return false }
        return "0123456789¹²³".contains(upper.last!)
    }
}
