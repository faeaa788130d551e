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
}
