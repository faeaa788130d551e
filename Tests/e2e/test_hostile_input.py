"""Hostile input, table-driven: hundreds of malformed requests against the real server, each with its exact
status and error code, sent byte for byte as written (http.client and raw sockets: no client library
tidies a header or a path). Afterwards: the server still answers, every upload it holds is untouched, and no
file exists outside its storage root."""
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests

from helpers import SUMMARY, b64, sha256_header
from test_uploads import attachments, create, patch

ESCAPE = f"cf-escape-{uuid.uuid4().hex[:12]}"  # a name no legitimate code path would ever write
NUMBERS_BAD = ["-1", "-0", "+5", "1e3", "0x10", "1.5", "abc", "", " ", "5 5", "05", "007", "5,5",
               "9223372036854775808", "18446744073709551616", "9" * 40, "1" * 5000, "٣", "NaN"]
FILENAMES_BAD = [("../" * 8 + "tmp/" + ESCAPE, "invalid_filename"), ("..", "invalid_filename"),
                 (".", "invalid_filename"), ("a/b.log", "invalid_filename"), ("a\\b.log", "invalid_filename"),
                 ("/etc/passwd", "invalid_filename"), ("a\0b.log", "invalid_filename"),
                 ("log\x1b[31m.txt", "invalid_filename"), ("two\nlines.log", "invalid_filename"),
                 ("tab\t.log", "invalid_filename"), ("del\x7f.log", "invalid_filename"),
                 ("evil\u202egol.exe", "invalid_filename"), ("x" * 10_000, "invalid_metadata"),
                 ("x" * 256, "invalid_filename"), ("é" * 128, "invalid_filename"), ("", "missing_filename")]
METADATA_BAD = [
    ("filename", "missing_filename"), ("filename !!!!", "invalid_metadata"), ("filename YQ", "invalid_metadata"),
    ("filename YQ==,filename Yg==", "invalid_metadata"), (",", "invalid_metadata"), ("=", "missing_filename"),
    (" filename  YQ==", "invalid_metadata"), ("filename YQ== extra", "invalid_metadata"),
    ("filetype YQ==", "missing_filename"), ("filename YQ==,", "invalid_metadata"), (",filename YQ==", "invalid_metadata"),
    ("filename " + b64("a.log") + ",sha256 " + b64("zz"), "invalid_metadata"),
    ("filename " + b64("a.log") + ",sha256 " + b64("a" * 63), "invalid_metadata"),
    ("filename //79/g==", "invalid_metadata"),  # base64 of bytes that are not UTF-8
    ("filename " + b64("a.log") + "," + ",".join(f"k{i} YQ==" for i in range(800)), "invalid_metadata"),
    ("filename " + "A" * 70_000, "invalid_metadata"),
]
CHECKSUMS_BAD = [("sha256", "invalid_header"), ("sha256 ", "invalid_header"), (" sha256 AA==", "invalid_header"),
                 ("md5 " + "A" * 22 + "==", "unsupported_checksum_algorithm"),
                 ("crc32 AAAAAA==", "unsupported_checksum_algorithm"), ("sha256 !!!", "invalid_header"),
                 ("sha256 AAAA", "invalid_header"), ("sha1 " + "A" * 43 + "=", "invalid_header"),
                 ("sha256 " + "A" * 5000, "invalid_header"), ("sha256 a b", "invalid_header")]
RANGES_IGNORED = ["items=0-1", "bytes", "bytes=abc", "bytes=5-1", "bytes=0-1,3-4", "bytes=--1", "bytes=1-2-3",
                  "bytes=-", "bytes=0-0x10", "bytes=0-1;x"]
IDS_BAD = ["..", "...", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fDatabase.sqlite", "0" * 32, "0" * 33, "A" * 32,
           "%00", "abc%00def", "%C3%A9", "x" * 10_000, "..%5C..%5C", "-1", "%252e%252e", ESCAPE]
CASES_BAD = ["..", "..%2F00001413", "00001413%00", "-1", "123456789", "0", "00000000", "1e3", "%201413", "1413%20",
             "0x585", "%EF%BC%91%EF%BC%94%EF%BC%91%EF%BC%93", "99999999", "a" * 5000]
JSON_BAD = [b"{", b"[]", b"null", b'"text"', b"{}", b'{"account": 5, "subject": "x"}', b"\xff\xfe{}",
            b'{"account": "A", "subject": "x", "priority": "Urgent"}', b'{"account": "A", "subject": "x", "number": "-5"}',
            b'{"account": "A", "subject": "x", "number": "123456789"}', b'{"account": "A", "subject": "x", "requestType": 1}',
            b'{"account": "", "subject": "x"}', b'{"account": "A", "subject": "   "}', b"[" * 30_000 + b"]" * 30_000,
            b'{"account": "A", "subject": "' + b"x" * 3_000_000 + b'"}', b'{"account": "A" "subject": "x"}']


class Row:
    def __init__(self, label, method, path, headers, body, status, code, auth="customer", expect_headers=()):
        self.label, self.method, self.path, self.headers = label, method, path, headers
        self.body, self.status, self.code, self.auth = body, status, code, auth
        self.expect_headers = dict(expect_headers)  # response headers that must be present with these values


def link_rows(server, attachment_path, live_link, used_up_link) -> list[Row]:
    """Signed links (no bearer header): each refused with 403 invalid_link or 410 link_used_up."""
    attachment = attachment_path.split("/")[4]
    query = dict(pair.split("=", 1) for pair in live_link.split("?", 1)[1].split("&"))
    key_path = server.storage / "link-signing.key"
    key = bytes.fromhex(key_path.read_text().split()[1]) if key_path.exists() else secrets.token_bytes(32)
    far = int(time.time()) + 10 * 365 * 86400
    unknown = secrets.token_hex(16)
    minted = hmac.new(key, f"{attachment}|{unknown}|{far}".encode(), hashlib.sha256).hexdigest()
    other = "0" * 31 + "1"
    table = [
        ("link with a forged signature", f"{attachment_path}?link={query['link']}&expires={query['expires']}&sig={'0' * 64}",
         [], 403, "invalid_link"),
        ("link with a non-numeric expiry", f"{attachment_path}?link={query['link']}&expires=soon&sig={query['sig']}",
         [], 403, "invalid_link"),
        ("link with a later expiry than signed", f"{attachment_path}?link={query['link']}&expires={far}&sig={query['sig']}",
         [], 403, "invalid_link"),
        ("link for another attachment", f"/api/v1/attachments/{other}/content?link={query['link']}&expires={query['expires']}"
         f"&sig={query['sig']}", [], 403, "invalid_link"),
        ("link never issued, signed with the key file's key", f"{attachment_path}?link={unknown}&expires={far}&sig={minted}",
         [], 403, "invalid_link"),
        ("link used up, Range bytes=0-", used_up_link, [("Range", "bytes=0-")], 410, "link_used_up"),
        ("link used up, Range bytes=abc", used_up_link, [("Range", "bytes=abc")], 410, "link_used_up"),
        ("link used up, no Range", used_up_link, [], 410, "link_used_up"),
    ]
    return [Row(label, "GET", path, headers, None, status, code, auth=None) for label, path, headers, status, code in table]


def rows(server, upload_path, deferred_path, attachment_path) -> list[Row]:
    tus = [("Tus-Resumable", "1.0.0")]
    creation = f"/api/v1/cases/{server.case}/uploads"
    good_meta = ("Upload-Metadata", f"filename {b64('ok.log')}")
    chunk = [("Content-Type", "application/offset+octet-stream")]
    table = []
    for value in NUMBERS_BAD:
        table.append(Row(f"Upload-Length {value[:20]!r}", "POST", creation, tus + [("Upload-Length", value), good_meta],
                         None, 400, "invalid_header"))
        table.append(Row(f"Upload-Offset {value[:20]!r}", "PATCH", upload_path, tus + chunk + [("Upload-Offset", value)],
                         b"x", 400, "invalid_header"))
        table.append(Row(f"deferred Upload-Length {value[:20]!r}", "PATCH", deferred_path,
                         tus + chunk + [("Upload-Offset", "0"), ("Upload-Length", value)], b"x", 400, "invalid_header"))
        table.append(Row(f"Upload-Defer-Length {value[:20]!r}", "POST", creation,
                         tus + [("Upload-Defer-Length", value), good_meta], None, 400, "invalid_header"))
    digest = ("Repr-Digest", "sha-256=:" + "A" * 43 + "=:")
    offset, checksum = ("Upload-Offset", "0"), ("Upload-Checksum", sha256_header(b"x"))
    for label, method, path, headers in [
        ("Upload-Length twice", "POST", creation, tus + [("Upload-Length", "1"), ("Upload-Length", "1"), good_meta]),
        ("Upload-Length twice, different", "POST", creation, tus + [("Upload-Length", "1"), ("Upload-Length", "2"), good_meta]),
        ("Upload-Metadata twice", "POST", creation, tus + [("Upload-Length", "1"), good_meta, good_meta]),
        ("Repr-Digest twice", "POST", creation, tus + [("Upload-Length", "1"), good_meta, digest, digest]),
        ("Upload-Offset twice", "PATCH", upload_path, tus + chunk + [offset, offset]),
        ("Upload-Offset twice, different", "PATCH", upload_path, tus + chunk + [offset, ("Upload-Offset", "1")]),
        ("Upload-Checksum twice", "PATCH", upload_path, tus + chunk + [offset, checksum, checksum]),
    ]:
        table.append(Row(label, method, path, headers, b"x" if method == "PATCH" else None, 400, "invalid_header"))
    table.append(Row("Upload-Length beyond the case quota", "POST", creation,
                     tus + [("Upload-Length", "9223372036854775807"), good_meta], None, 413, "case_storage_quota"))
    table.append(Row("Upload-Length one byte past the 1 TiB case quota", "POST", creation,
                     tus + [("Upload-Length", str(2 ** 40 + 1)), good_meta], None, 413, "case_storage_quota"))
    table.append(Row("Upload-Length beyond any disk, within the quota", "POST", creation,
                     tus + [("Upload-Length", str(2 ** 39)), good_meta], None, 507, "insufficient_storage"))
    # Only the creator appends (issue #17): an engineer's PATCH to the customer's uploads.
    table.append(Row("PATCH to another user's upload", "PATCH", upload_path, tus + chunk + [("Upload-Offset", "0")],
                     b"x", 403, "not_upload_creator", auth="engineer"))
    table.append(Row("PATCH to another user's deferred upload", "PATCH", deferred_path,
                     tus + chunk + [("Upload-Offset", "0"), ("Upload-Length", "1")], b"x", 403, "not_upload_creator",
                     auth="admin"))
    # Comments are capped at 4 KiB; listings take a bounded page size and a cursor of their own kind.
    for path in [f"/api/v1/cases/{server.case}/close", f"/api/v1/cases/{server.case}/reopen"]:
        table.append(Row(f"a 4,097-byte comment to {path.rsplit('/', 1)[1]}", "POST", path, [("Content-Type", "application/json")],
                         b'{"subStatus": "Resolved", "comment": "' + b"x" * 4097 + b'"}', 400, "comment_too_long",
                         auth="engineer"))
    table.append(Row("a 4,097-byte comment to a status change", "PATCH", f"/api/v1/cases/{server.case}",
                     [("Content-Type", "application/json")],
                     b'{"status": "Open", "subStatus": "x", "comment": "' + "é".encode() * 2049 + b'"}', 400,
                     "comment_too_long", auth="engineer"))
    for listing in [f"/api/v1/cases/{server.case}/history", "/api/v1/cases"]:
        for query, code in [("limit=0", "invalid_limit"), ("limit=-1", "invalid_limit"), ("limit=1001", "invalid_limit"),
                            ("limit=abc", "invalid_limit"), ("limit=1e3", "invalid_limit"), ("after=..%2F1", "invalid_cursor"),
                            ("after=abc", "invalid_cursor")]:
            table.append(Row(f"{listing.rsplit('/', 1)[1]} {query}", "GET", f"{listing}?{query}", [], None, 400, code))
    table.append(Row("both Upload-Length and Upload-Defer-Length", "POST", creation,
                     tus + [("Upload-Length", "1"), ("Upload-Defer-Length", "1"), good_meta], None, 400, "length_conflict"))
    table.append(Row("neither length header", "POST", creation, tus + [good_meta], None, 400, "length_required"))
    for name, code in FILENAMES_BAD:
        table.append(Row(f"filename {name[:24]!r}", "POST", creation,
                         tus + [("Upload-Length", "1"), ("Upload-Metadata", f"filename {b64(name)}")], None, 400, code))
    for value, code in METADATA_BAD:
        table.append(Row(f"metadata {value[:24]!r}", "POST", creation, tus + [("Upload-Length", "1"), ("Upload-Metadata", value)],
                         None, 400, code))
    for value in ["", "1.0", "0.2.2", "1.0.0-rc", "1.0.0,0.2.2", "x" * 5000]:
        table.append(Row(f"Tus-Resumable {value[:12]!r}", "PATCH", upload_path, [("Tus-Resumable", value), ("Upload-Offset", "0")] + chunk,
                         b"x", 412, "unsupported_tus_version"))
    table.append(Row("no Tus-Resumable", "HEAD", upload_path, [], None, 412, None))
    table.append(Row("Tus-Resumable 1.0.0 and 0.2.2", "PATCH", upload_path,
                     [("Tus-Resumable", "1.0.0"), ("Tus-Resumable", "0.2.2"), ("Upload-Offset", "0")] + chunk, b"x",
                     412, "unsupported_tus_version"))
    table.append(Row("Tus-Resumable 1.0.0 twice is still 1.0.0", "HEAD", upload_path, tus + tus, None, 200, None))
    for value, code in CHECKSUMS_BAD:
        table.append(Row(f"Upload-Checksum {value[:20]!r}", "PATCH", upload_path,
                         tus + chunk + [("Upload-Offset", "0"), ("Upload-Checksum", value)], b"x", 400, code))
    table.append(Row("checksum of other bytes", "PATCH", upload_path,
                     tus + chunk + [("Upload-Offset", "0"), ("Upload-Checksum", sha256_header(b"y"))], b"x", 460, "checksum_mismatch"))
    for value in ["text/plain", "application/octet-stream", "application/offset+octet-stream-x", "multipart/form-data; boundary=x"]:
        table.append(Row(f"PATCH Content-Type {value}", "PATCH", upload_path, tus + [("Content-Type", value), ("Upload-Offset", "0")],
                         b"x", 415, "unsupported_media_type"))
    table.append(Row("wrong offset", "PATCH", upload_path, tus + chunk + [("Upload-Offset", "5")], b"x", 409, "offset_mismatch"))
    table.append(Row("body longer than the upload", "PATCH", upload_path, tus + chunk + [("Upload-Offset", "0")],
                     b"x" * 101, 413, "body_exceeds_length"))
    table.append(Row("body longer than the upload, at creation", "POST", creation,
                     tus + chunk + [("Upload-Length", "3"), good_meta], b"x" * 4, 413, "body_exceeds_length"))
    table.append(Row("a body for an empty upload, at creation", "POST", creation,
                     tus + chunk + [("Upload-Length", "0"), good_meta], b"x", 413, "body_exceeds_length"))
    table.append(Row("checksum of other bytes, at creation", "POST", creation,
                     tus + chunk + [("Upload-Length", "1"), good_meta, ("Upload-Checksum", sha256_header(b"y"))], b"x",
                     460, "checksum_mismatch"))
    for raw in IDS_BAD:
        for method, suffix, status, code in [("HEAD", "/api/v1/uploads/", 404, None),
                                             ("PATCH", "/api/v1/uploads/", 404, "upload_not_found"),
                                             ("DELETE", "/api/v1/uploads/", 404, "upload_not_found"),
                                             ("GET", "/api/v1/attachments/", 404, "attachment_not_found"),
                                             ("GET", "/api/v1/attachments/{}/content", 404, "attachment_not_found"),
                                             ("POST", "/api/v1/attachments/{}/link", 404, "attachment_not_found")]:
            path = suffix.format(raw) if "{}" in suffix else suffix + raw
            headers = tus + (chunk + [("Upload-Offset", "0")] if method == "PATCH" else [])
            table.append(Row(f"{method} id {raw[:24]!r}", method, path, headers, b"x" if method == "PATCH" else None, status, code))
    for raw in CASES_BAD:
        for method, suffix, headers, code in [("GET", "", [], "case_not_found"), ("GET", "/attachments", [], "case_not_found"),
                                              ("POST", "/uploads", tus + [("Upload-Length", "1"), good_meta], "case_not_found"),
                                              ("GET", "/history", [], "case_not_found")]:
            table.append(Row(f"{method} case {raw[:24]!r}{suffix}", method, f"/api/v1/cases/{raw}{suffix}", headers, None,
                             404, code))
    json_type = [("Content-Type", "application/json")]
    for body in JSON_BAD:
        big = len(body) > 1_000_000
        status, code = (413, "body_too_large") if big else (400, None)
        table.append(Row(f"create case with {body[:24]!r}", "POST", "/api/v1/cases", json_type, body, status, code, auth="engineer"))
        table.append(Row(f"close case with {body[:24]!r}", "POST", f"/api/v1/cases/{server.case}/close", json_type, body,
                         status, code, auth="engineer"))
        table.append(Row(f"change status with {body[:24]!r}", "PATCH", f"/api/v1/cases/{server.case}", json_type, body,
                         status, code, auth="engineer"))
    for value in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]:
        table.append(Row(f"create case as {value}", "POST", "/api/v1/cases", [("Content-Type", value)],
                         b'{"account": "A", "subject": "x"}', 415, "unsupported_media_type", auth="engineer"))
    for value in RANGES_IGNORED:  # RFC 9110 §14.2: a Range the server cannot parse is ignored, the whole file is sent
        table.append(Row(f"Range {value[:24]!r}", "GET", attachment_path, [("Range", value)], None, 200, None, auth="engineer"))
    table.append(Row("Range with list whitespace", "GET", attachment_path, [("Range", "bytes= 0-1")], None, 206, None, auth="engineer"))
    for value in ["bytes=4-", "bytes=100-200", "bytes=-0", "bytes=99999999999999999999999-"]:
        table.append(Row(f"Range {value!r}", "GET", attachment_path, [("Range", value)], None, 416, "range_not_satisfiable", auth="engineer"))
    for query in ["limit=-1", "limit=0", "limit=abc", "limit=100000", "limit=1e3", "case=..%2F1413", "case=abc", "case="]:
        table.append(Row(f"access log {query}", "GET", f"/api/v1/access-log?{query}", [], None, 400, None, auth="admin"))
    # 405s are made outside the router; on tus routes they still say Tus-Resumable (tus 1.0: every response but OPTIONS).
    for method in ["TRACE", "PUT", "GET"]:
        table.append(Row(f"{method} on a tus upload", method, upload_path, tus, None, 405, "method_not_allowed",
                         expect_headers=[("Tus-Resumable", "1.0.0"), ("Allow", "HEAD, PATCH, DELETE, OPTIONS")]))
    table.append(Row("PUT on the tus creation route", "PUT", creation, tus, None, 405, "method_not_allowed",
                     expect_headers=[("Tus-Resumable", "1.0.0"), ("Allow", "POST, OPTIONS")]))
    table.append(Row("TRACE on a case", "TRACE", f"/api/v1/cases/{server.case}", [], None, 405, "method_not_allowed",
                     expect_headers=[("Allow", "GET, HEAD, PATCH")]))
    for token in ["", "Bearer", "Bearer ", "Basic YTpi", "bearer " + "x" * 10_000, "Bearer é", "Token abc"]:
        table.append(Row(f"Authorization {token[:16]!r}", "GET", "/api/v1/cases", [("Authorization", token)], None, 401, None, auth=None))
    return table


def send(server, row: Row, token: str | None) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest(row.method, row.path, skip_host=False, skip_accept_encoding=True)
    if token:
        connection.putheader("Authorization", f"Bearer {token}")
    for name, value in row.headers:
        connection.putheader(name, value.encode("utf-8", "surrogateescape"))
    if row.body is not None:
        connection.putheader("Content-Length", str(len(row.body)))
    connection.endheaders()
    try:
        if row.body:
            connection.send(row.body)
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    except (BrokenPipeError, ConnectionResetError):
        response = connection.getresponse()  # the server answered early and closed; read what it said
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


TUS_PATCH = b"PATCH {upload} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n" \
    b"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
# Requests no HTTP library would send: HTTP's parser refuses them with a JSON error like every other error
# (431 for a header section over its limits, RFC 6585 §5), and the server keeps serving everyone else.
RAW = [
    ("negative Content-Length", TUS_PATCH + b"Content-Length: -1\r\n\r\n", 400, "malformed_request"),
    ("two Content-Lengths", TUS_PATCH + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400, "malformed_request"),
    ("Content-Length and chunked", TUS_PATCH + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "malformed_request"),
    ("bad chunk size", TUS_PATCH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed_body"),
    ("control character in a header", b"GET /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n",
     400, "malformed_request"),
    ("header without colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n", 400, "malformed_request"),
    ("NUL in the request line", b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"),
    ("a 200 KiB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
     431, "header_section_too_large"),
    ("1,001 header fields", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1001))
     + b"\r\n", 431, "header_section_too_large"),
    ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "malformed_request"),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n", 400, "malformed_request"),
]


def raw_answer(server, payload: bytes) -> tuple[int | None, bytes]:
    """The status and body of the answer to `payload` sent byte for byte."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    if not received:
        return None, b""
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_hundreds_of_malformed_requests(server, tmp_path):
    upload_path = create(server, 100, "target.log").removeprefix(server.url)
    deferred = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    deferred.request("POST", f"/api/v1/cases/{server.case}/uploads", headers={
        "Authorization": f"Bearer {server.customer}", "Tus-Resumable": "1.0.0", "Upload-Defer-Length": "1",
        "Upload-Metadata": f"filename {b64('deferred.log')}"})
    response = deferred.getresponse()
    response.read()
    assert response.status == 201
    deferred_path = response.getheader("Location")
    done_url = create(server, 4, "done.log")
    assert patch(server, done_url, 0, b"done").status_code == 204
    attachment_path = "/api/v1/attachments/" + done_url.rsplit("/", 1)[1] + "/content"
    links = []
    for _ in range(2):
        issued = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        issued.request("POST", attachment_path.removesuffix("/content") + "/link",
                       headers={"Authorization": f"Bearer {server.engineer}"})
        links.append(json.loads(issued.getresponse().read())["url"])
    for _ in range(2):  # the whole file twice: the second link's budget (twice the file) is spent
        spend = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        spend.request("GET", links[1])
        spend.getresponse().read()

    tokens = {"customer": server.customer, "engineer": server.engineer, "admin": server.admin, None: None}
    table = rows(server, upload_path, deferred_path, attachment_path) + link_rows(server, attachment_path, *links)
    failures = []
    for row in table:
        status, body, headers = send(server, row, tokens[row.auth])
        problem = None
        wrong_headers = {name: headers.get(name.lower()) for name, value in row.expect_headers.items()
                         if headers.get(name.lower()) != value}
        json_answer = headers.get("content-type", "").startswith("application/json")
        if headers.get("x-content-type-options") != "nosniff" or "cache-control" not in headers \
                or (json_answer and headers["cache-control"] != "no-store"):
            problem = f"missing nosniff or caching rule: {headers}"  # every answer: nosniff; JSON: no-store
        elif wrong_headers:
            problem = f"headers {wrong_headers}, expected {row.expect_headers}"
        elif status != row.status:
            problem = f"status {status}, expected {row.status}: {body[:160]!r}"
        elif row.method != "HEAD" and row.status >= 400:
            try:
                error = json.loads(body)
                if not error.get("message"):
                    problem = "no message in the JSON error"
                elif row.code and error.get("error") != row.code:
                    problem = f"code {error.get('error')}, expected {row.code}"
            except ValueError:
                problem = f"not a JSON error body: {body[:80]!r}"
        if problem:
            failures.append(f"{row.label} ({row.method} {row.path[:60]}): {problem}")
    raw_failures = []
    for label, template, expected_status, expected_code in RAW:
        status, body = raw_answer(
            server, template.replace(b"{upload}", upload_path.encode()).replace(b"{token}", server.customer.encode()))
        try:
            code = json.loads(body).get("error")
        except ValueError:
            code = f"no JSON body: {body[:60]!r}"
        if (status, code) != (expected_status, expected_code):
            raw_failures.append(f"{label}: {status} {code}, expected {expected_status} {expected_code}")
    assert not failures + raw_failures, "\n".join(failures + raw_failures)

    # Still serving, nothing written by any of it, nothing outside the storage root.
    for path in [upload_path, deferred_path]:
        probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        probe.request("HEAD", path, headers={"Authorization": f"Bearer {server.customer}", "Tus-Resumable": "1.0.0"})
        answer = probe.getresponse()
        assert answer.status == 200 and answer.getheader("Upload-Offset") == "0"
    # No refused creation left an upload behind: only the two made above are unfinished, and only their
    # blobs and done.log's exist.
    listing = attachments(server)
    assert sorted(u["filename"] for u in listing["uploads"]) == ["deferred.log", "target.log"]
    assert len([p for p in (server.storage / "blobs").rglob("*") if p.is_file()]) == 3
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(server.storage) and p.name != "server.log"]
    assert outside == []
    assert not list(tmp_path.rglob(f"*{ESCAPE}*")) and not list(Path("/tmp").glob(f"*{ESCAPE}*"))
    total = len(table) + len(RAW)
    assert total >= 300
    SUMMARY["malformed requests tried"] += total
    SUMMARY["statuses and error codes checked"] += total
