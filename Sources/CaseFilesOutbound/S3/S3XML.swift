import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The S3 answers' XML as a small element tree, read with Foundation's `XMLParser` (FoundationXML on Linux, over the
/// system libxml2: `libxml2` at run time, installed by Scripts/bootstrap). Only the few shapes S3 answers with are
/// read from it (`S3Client`), and it is bounded: the caller caps the body's bytes, and here the element count and
/// depth are capped; external entities are never resolved (`shouldResolveExternalEntities` stays false).
struct S3XMLElement: Sendable {
    var name: String
    var text: String
    var children: [S3XMLElement]

    /// The first child named `name`.
    func child(_ name: String) -> S3XMLElement? { children.first { $0.name == name } }
    /// Every child named `name`, in order.
    func children(_ name: String) -> [S3XMLElement] { children.filter { $0.name == name } }
    /// The text of the first child named `name`.
    func text(_ name: String) -> String? { child(name)?.text }

    /// The most elements one answer may have: a full page of 1,000 listed objects has ~7,000.
    static let maxElements = 50_000
    static let maxDepth = 16

    /// The document's root element; nil if the bytes are not well-formed XML or pass the caps.
    static func parse(_ data: Data) -> S3XMLElement? {
        let parser = XMLParser(data: data)
        let builder = TreeBuilder()
        parser.delegate = builder
        parser.shouldProcessNamespaces = false
        parser.shouldResolveExternalEntities = false
        guard parser.parse(), !builder.failed, let root = builder.root else { return nil }
        return root
    }

    private final class TreeBuilder: NSObject, XMLParserDelegate {
        var stack: [S3XMLElement] = []
        var root: S3XMLElement?
        var count = 0
        var failed = false

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            count += 1
            guard count <= S3XMLElement.maxElements, stack.count < S3XMLElement.maxDepth, root == nil else {
                failed = true
                parser.abortParsing()
                return
            }
            stack.append(S3XMLElement(name: elementName, text: "", children: []))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?) {
            guard let element = stack.popLast() else { return }
            if stack.isEmpty {
                root = element
            } else {
                stack[stack.count - 1].children.append(element)
            }
        }
    }
}
