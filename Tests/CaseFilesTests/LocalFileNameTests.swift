@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Foundation
import PropertyBased
import Testing

/// The rule that turns a customer's attachment name into a local file name (`LocalFileName`): pure,
/// no server and no file system.
@Suite struct LocalFileNameTests {
    @Test(arguments: [
        // (what the customer named it, what lands on disk)
        ("server.log", "server.log"),
        ("report (final) é.pdf", "report (final) é.pdf"),
        (".bashrc", "bashrc"),
        ("...hidden", "hidden"),
        (".", "attachment"),
        ("..", "attachment"),
        ("", "attachment"),
        ("../../x", "_.._x"),
        ("..\\..\\Windows\\win.ini", "_.._Windows_win.ini"),
        ("/etc/passwd", "_etc_passwd"),
        ("-rf", "rf"),
        ("--help", "help"),
        ("-", "attachment"),
        ("~root", "root"),
        ("#notes", "notes"),
        ("  spaced  ", "spaced"),
        ("trailing.", "trailing"),
        ("trailing. . ", "trailing"),
        ("a\u{0}b", "a_b"),
        ("line\nbreak\r.log", "line_break_.log"),
        ("tab\there", "tab_here"),
        ("del\u{7F}.log", "del_.log"),
        ("c1\u{85}.log", "c1_.log"),
        ("invoice\u{202E}gpj.exe", "invoice_gpj.exe"),
        ("isolate\u{2067}x\u{2069}.log", "isolate_x_.log"),
        ("zero\u{200B}width\u{FEFF}.log", "zero_width_.log"),
        ("para\u{2029}line\u{2028}.log", "para_line_.log"),
        ("no\u{A0}break\u{3000}space.log", "no break space.log"),
        ("*.log", "_.log"),
        ("what?.log", "what_.log"),
        ("[ab].log", "_ab_.log"),
        ("$(reboot).log", "_(reboot).log"),
        ("`id`.log", "_id_.log"),
        ("bang!.log", "bang_.log"),
        ("a<b>c:d\"e|f.log", "a_b_c_d_e_f.log"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("Aux .log", "_Aux .log"),
        ("COM1", "_COM1"),
        ("lpt9.log", "_lpt9.log"),
        ("COM¹.log", "_COM¹.log"),
        ("COM10.log", "COM10.log"),
        ("CONSOLE.log", "CONSOLE.log"),
        ("e\u{301}.log", "\u{E9}.log"),  // NFC: one spelling for one name
        (".\u{301}hidden", "\u{301}hidden"),  // a dot under a combining mark is still a leading dot
    ])
    func theRuleMakesEveryNameSafe(_ untrusted: String, _ expected: String) {
        // By scalar: Swift's String == treats canonically equivalent spellings (é and e + U+0301) as equal.
        let name = LocalFileName(untrusted: untrusted).name
        #expect(Array(name.unicodeScalars) == Array(expected.unicodeScalars), "\(untrusted.debugDescription) → \(name.debugDescription)")
    }

    @Test func anOverlongNameIsCutToTheLimitKeepingItsExtension() {
        let long = LocalFileName(untrusted: String(repeating: "a", count: 300) + ".log")
        #expect(long.name == String(repeating: "a", count: 196) + ".log")
        // Multi-byte characters are cut whole: 100 × "é" (2 bytes each) is exactly 200 bytes, 101 is not.
        #expect(LocalFileName(untrusted: String(repeating: "é", count: 101)).name == String(repeating: "é", count: 100))
        // An extension longer than 16 bytes is not kept apart.
        let longExtension = LocalFileName(untrusted: "x." + String(repeating: "b", count: 300))
        #expect(longExtension.name == "x." + String(repeating: "b", count: 198))
        // A cut that ends on a dot or a space drops it (Windows would).
        let cutAtDot = LocalFileName(untrusted: String(repeating: "a", count: 199) + ". " + String(repeating: "c", count: 100))
        #expect(cutAtDot.name == String(repeating: "a", count: 199))
    }

    @Test(arguments: [
        ("server.log", 1, "server (1).log"),
        ("server.log", 2, "server (2).log"),
        ("server.log", 0, "server.log"),
        ("README", 3, "README (3)"),
        ("core.tar.gz", 1, "core.tar (1).gz"),
        (".bashrc", 1, "bashrc (1)"),
    ])
    func duplicatesAreNumberedBeforeTheExtension(_ untrusted: String, _ n: Int, _ expected: String) {
        #expect(LocalFileName(untrusted: untrusted).numbered(n) == expected)
    }

    /// Whatever the input, the result is one safe path component, and its numbered forms plus `.part`
    /// fit in NAME_MAX (255 bytes).
    @Test func everyNameIsOneSafeComponent() {
        let alphabet = Array("aZ09._- ~#/\\:*?\"<>|[]$`!()'é€😀\u{0}\u{1F}\u{7F}\u{85}\u{202E}\u{2066}\u{200B}\u{FEFF}\u{A0}\u{301}")
        let text = Gen<Character?>.element(of: alphabet).map { $0! }.string(of: 0...300)
        var rng = Xoshiro(seed: (20_261_129, 0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB))
        for _ in 0..<2000 {
            let untrusted = text.run(using: &rng)
            let name = LocalFileName(untrusted: untrusted).name
            let context = Comment(rawValue: untrusted.debugDescription + " → " + name.debugDescription)
            #expect(!name.isEmpty && name.utf8.count <= LocalFileName.maxBytes, context)
            #expect(name != "." && name != "..", context)
            #expect(!LocalFileName.leadingRemoved.contains(name.unicodeScalars.first!), context)
            #expect(!LocalFileName.trailingRemoved.contains(name.unicodeScalars.last!), context)
            #expect(!name.unicodeScalars.contains { LocalFileName.isReplaced($0) }, context)
            #expect(!LocalFileName.isWindowsDeviceName(name), context)
            #expect(LocalFileName(untrusted: name).name == name, "the rule is idempotent: \(context)")
            #expect((LocalFileName(untrusted: untrusted).numbered(9999) + ".part").utf8.count <= 255, context)
        }
    }
}
