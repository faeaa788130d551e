@testable import CaseFilesClient
@testable import CaseFilesCore
@testable import CaseFilesDatabase
@testable import CaseFilesEngine
@testable import CaseFilesServer
@testable import CaseFilesStorage
import Testing

/// The permission table from issue #2, row by row, as one table.
@Suite struct AccessPolicyTests {
    typealias D = AccessPolicy.Decision
    // columns: customer of the case's account, customer of another account, engineer, admin
    static let table: [(AccessPolicy.Action, [D])] = [
        (.readCase, [.allow, .hidden, .allow, .allow]),
        (.useOwnUpload, [.allow, .hidden, .allow, .allow]),
        (.modifyOthersUpload, [.forbidden, .hidden, .allow, .allow]),
        (.appendToOthersUpload, [.forbidden, .hidden, .forbidden, .forbidden]),
        (.createCase, [.forbidden, .forbidden, .allow, .allow]),
        (.readAccessLog, [.forbidden, .forbidden, .forbidden, .allow]),
        (.changeCaseStatus, [.forbidden, .hidden, .allow, .allow]),
        (.closeOrReopenCase, [.allow, .hidden, .allow, .allow]),
        (.holdCase, [.forbidden, .hidden, .forbidden, .allow]),
        (.readPurgeLog, [.forbidden, .forbidden, .forbidden, .allow]),
        (.manageDropTokens, [.forbidden, .hidden, .allow, .allow]),
    ]

    @Test func everyCellOfTheTable() {
        #expect(Set(Self.table.map { "\($0.0)" }).count == AccessPolicy.Action.allCases.count)
        for (action, expected) in Self.table {
            let actual = [
                AccessPolicy.decide(role: .customer, ownAccount: true, action: action),
                AccessPolicy.decide(role: .customer, ownAccount: false, action: action),
                AccessPolicy.decide(role: .engineer, ownAccount: false, action: action),
                AccessPolicy.decide(role: .admin, ownAccount: false, action: action),
            ]
            #expect(actual == expected, "row \(action)")
        }
    }

    /// A drop credential (issue #20): its own case and its own uploads only; another case hidden.
    @Test func aDropCredentialUploadsIntoItsCaseOnly() {
        for action in AccessPolicy.Action.allCases {
            #expect(AccessPolicy.decide(dropCredentialFor: "00001413", caseNumber: "00001413", action: action)
                    == (action == .useOwnUpload ? .allow : .forbidden), "own case, \(action)")
            #expect(AccessPolicy.decide(dropCredentialFor: "00001413", caseNumber: "00001414", action: action) == .hidden,
                    "other case, \(action)")
        }
        #expect(AccessPolicy.decide(dropCredentialFor: "00001413", caseNumber: nil, action: nil) == .forbidden)
    }

    @Test func contentRangeAsCurlSendsIt() throws {
        #expect(try ContentRange.parse("bytes 100000-299999/300000") == ContentRange(first: 100000, last: 299999, complete: 300000))
        #expect(try ContentRange.parse("bytes 0-0/1").count == 1)
        for bad in ["bytes 5-4/10", "bytes 0-10/10", "bytes */10", "bytes 0-1/*", "items 0-1/2", "bytes 00-1/2", "bytes -1-2/3", ""] {
            #expect(throws: APIError.self, "\(bad)") { try ContentRange.parse(bad) }
        }
    }
}
