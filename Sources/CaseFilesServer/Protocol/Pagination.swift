import Foundation
import HTTPTypes
import Hummingbird

/// Listings that grow with use (cases, a case's history, a case's attachments) come in pages:
/// `?limit=N&after=CURSOR`. The answer's JSON says `next` (the cursor for the following page, absent on the last)
/// and a `Link: <…>; rel="next"` header says the same (RFC 8288). Cursors are keys (an event id, a case number, an
/// upload's creation time and id), so a page never repeats or skips a row when rows are added meanwhile.
struct PageQuery: Sendable {
    /// Rows per page when `limit` is not given.
    static let defaultLimit = 100
    /// The most rows a page may ask for.
    static let maxLimit = 1_000

    var limit: Int
    var after: String?

    /// RFC 3986 §2.3's unreserved characters: a cursor made of them goes into the `Link` URL as it is.
    private static let unreserved = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// - Parameter validCursor: whether a given `after` is a cursor of this listing.
    /// - Throws: `APIError` 400 `invalid_limit` or `invalid_cursor`.
    init(_ request: Request, validCursor: (String) -> Bool) throws {
        let query = request.uri.queryParameters
        if let raw = query["limit"] {
            guard let limit = Int(String(raw)), (1...Self.maxLimit).contains(limit) else {
                throw APIError.badRequest("invalid_limit", "`limit` must be a whole number from 1 to \(Self.maxLimit).")
            }
            self.limit = limit
        } else {
            self.limit = Self.defaultLimit
        }
        if let raw = query["after"] {
            let after = String(raw)
            guard validCursor(after) else {
                throw APIError.badRequest("invalid_cursor",
                                          "`after` must be the `next` value of the previous page; start again without it.")
            }
            self.after = after
        }
    }

    /// Splits rows fetched with `limit + 1` into this page and the next page's cursor (nil on the last page).
    func page<Row>(_ rows: [Row], cursor: (Row) -> String) -> (rows: [Row], next: String?) {
        guard rows.count > limit else { return (rows, nil) }
        let page = Array(rows.prefix(limit))
        return (page, page.last.map(cursor))
    }

    /// `Link: <path?limit=N&after=next>; rel="next"` for `path`, or no header on the last page.
    func headers(path: String, next: String?) -> HTTPFields {
        guard let next else { return [:] }
        let cursor = next.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? next
        return [.link: "<\(path)?limit=\(limit)&after=\(cursor)>; rel=\"next\""]
    }
}

extension HTTPField.Name {
    /// RFC 8288 §3.
    static let link = Self("Link")!
}
