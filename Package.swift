// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "casefiles",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "casefiles", targets: ["casefiles"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // TLS for `serve --tls-cert/--tls-key` (already in the graph through AsyncHTTPClient).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // The YAML configuration file (`--config`, `CASEFILES_CONFIG`).
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        // Metrics: the API the engine and server count through, and its Prometheus backend (`serve --metrics-listen`).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Metadata on PostgreSQL (`serve --database postgres://…`), in the CaseFilesPostgres target only.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Structured Fields (RFC 9651, was 8941): Repr-Digest, Content-Digest, Want-*-Digest (RFC 9530), and the
        // IETF resumable-upload draft's fields (Upload-Complete, Upload-Limit...).
        .package(url: "https://github.com/apple/swift-http-structured-headers.git", from: "1.7.0"),
        // Tests only: property-based checks of the header, metadata and range parsers.
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // Compression through the system zlib (zlib1g-dev): compressed uploads and the bundle index.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Every digest in the project goes through OpenSSL's libcrypto (libssl-dev).
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // sync_file_range, which Swift's Glibc module does not expose.
        .target(name: "CLinuxIO"),
        // The targets are the architecture (ARCHITECTURE.md draws the graph); `Scripts/test` builds with
        // `--explicit-target-dependency-import-check error`, so an import the graph does not allow fails.
        // Records, the case lifecycle, permissions, digests, domain errors: no HTTP, no SQL, no files.
        .target(
            name: "CaseFilesCore",
            dependencies: [
                "COpenSSL",
                .product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Blobs on local disk behind the BlobStore protocol. Knows nothing of HTTP or SQL.
        .target(
            name: "CaseFilesStorage",
            dependencies: [
                "CaseFilesCore",
                "CLinuxIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Support bundles read in place: zip, tar, tar.gz and gzip indexed in one pass over the blob, and an
        // entry's bytes read from it (gzip through inflate checkpoints). No HTTP, no SQL.
        .target(
            name: "CaseFilesBundles",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesStorage",
                "CZlib",
            ]
        ),
        // The metadata store: the schema (named GRDB migrations) and every query. Knows nothing of HTTP.
        .target(
            name: "CaseFilesDatabase",
            dependencies: [
                "CaseFilesCore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // The metadata store on PostgreSQL: the same MetadataStore, schema, migrations by name and transactions as
        // AppDatabase's. Only the casefiles executable (and the tests) link it; the SQLite-only graph stays clean.
        .target(
            name: "CaseFilesPostgres",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesDatabase",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // The pool's own error type (a lease cancelled with its task), which PostgresClient throws as is.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The upload engine and the jobs (retention purge, upload expiry): storage and database together,
        // no protocol.
        .target(
            name: "CaseFilesEngine",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesStorage",
                "CaseFilesDatabase",
                "CaseFilesBundles",
                "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The HTTP server: Hummingbird, the tus front-end, the JSON API, the page. Never links an HTTP client.
        .target(
            name: "CaseFilesServer",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesStorage",
                "CaseFilesDatabase",
                "CaseFilesEngine",
                "CaseFilesBundles",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "StructuredFieldValues", package: "swift-http-structured-headers"),
            ],
            resources: [.copy("Web/static")]
        ),
        // Outbound HTTP: the command-line client (AsyncHTTPClient). The server does not link it.
        .target(
            name: "CaseFilesClient",
            dependencies: [
                "CaseFilesCore",
                "CZlib",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Outbound HTTP of the service itself: webhook delivery from the event outbox (AsyncHTTPClient). `casefiles
        // serve` runs it beside the server, which does not link it.
        .target(
            name: "CaseFilesOutbound",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesDatabase",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Blobs in an S3-compatible object store (`serve --blob-store s3://BUCKET`): the BlobStore protocol over
        // the outbound target's S3 client. The engine and the server do not link it; `serve` picks it.
        .target(
            name: "CaseFilesObjectStorage",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesStorage",
                "CaseFilesOutbound",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "casefiles",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesStorage",
                "CaseFilesDatabase",
                "CaseFilesEngine",
                "CaseFilesServer",
                "CaseFilesClient",
                "CaseFilesPostgres",
                "CaseFilesOutbound",
                "CaseFilesObjectStorage",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "CaseFilesTests",
            dependencies: [
                "CaseFilesCore",
                "CaseFilesBundles",
                "CaseFilesStorage",
                "CaseFilesDatabase",
                "CaseFilesEngine",
                "CaseFilesServer",
                "CaseFilesClient",
                "CaseFilesPostgres",
                "CaseFilesOutbound",
                "CaseFilesObjectStorage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
