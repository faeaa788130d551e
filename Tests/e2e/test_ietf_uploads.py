"""End-to-end: the IETF "Resumable Uploads for HTTP" draft (interop 9, the newest, and 3, draft -01 as Apple's
URLSession speaks it) over raw sockets, on the same upload resources as tus."""
import hashlib
import json
import re
import socket
import time

import pytest
import requests

from helpers import auth, metadata, pattern

MiB = 1024 * 1024
MAX_SIZE = 1_000_000_000
PROBLEM = "https://iana.org/assignments/http-problem-types#"


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class Connection:
    """One HTTP/1.1 connection, written and read by hand so interim (1xx) responses can be seen as they arrive."""

    def __init__(self, server):
        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        self.buffer = b""

    def send_head(self, method: str, path: str, headers: dict) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.server.port}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def read(self, head_request=False) -> Answer:
        """The next response (interim or final); a final one's body by its Content-Length."""
        lines = self._read_until(b"\r\n\r\n").decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if status < 200 or head_request or status in (204, 304) else int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body)

    def close(self):
        self.sock.close()


def bearer(server) -> dict:
    return {"Authorization": f"Bearer {server.customer}"}


def request(server, method: str, path: str, headers: dict, body: bytes = b"") -> Answer:
    connection = Connection(server)
    connection.send_head(method, path, {**bearer(server), **headers,
                                        **({"Content-Length": str(len(body))} if method in ("POST", "PATCH") else {})})
    connection.send(body)
    answer = connection.read(head_request=method == "HEAD")
    while answer.status < 200:  # a 104 to a creation that named its interop version
        answer = connection.read(head_request=method == "HEAD")
    connection.close()
    return answer


def complete_field(version: int, complete: bool) -> dict:
    """Upload-Complete, or draft -01's inverse, Upload-Incomplete."""
    if version == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def partial(version: int) -> dict:
    return {"Content-Type": "application/partial-upload"} if version >= 8 else {}


def attachments(server) -> dict:
    response = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.engineer),
                            timeout=10)
    assert response.status_code == 200
    return response.json()


def limits(answer: Answer) -> tuple[int, int]:
    """`Upload-Limit: max-size=…, max-age=…` as numbers; the age counts down from the 7-day expiry."""
    match = re.fullmatch(r"max-size=(\d+), max-age=(\d+)", answer.headers["upload-limit"])
    assert match, answer.headers["upload-limit"]
    return int(match[1]), int(match[2])


@pytest.fixture
def limited(server):
    """The server with `--max-upload-size`, so Upload-Limit carries max-size."""
    server.stop()
    server.start("--max-upload-size", str(MAX_SIZE))
    return server


@pytest.mark.parametrize("version", [9, 3])
def test_104_with_location_arrives_before_the_body_is_sent(limited, version):
    """Draft "Upload Creation", example A: the 104 comes after the header section alone; then the body, then 201."""
    server = limited
    data = pattern(3 * MiB + 7)
    connection = Connection(server)
    connection.send_head("POST", f"/api/v1/cases/{server.case}/uploads", {
        **bearer(server), "Upload-Draft-Interop-Version": str(version), **complete_field(version, True),
        "Content-Disposition": "inline; filename=\"file name.jpg\"; filename*=UTF-8''f%C3%AFle%20name.jpg",
        "Content-Length": str(len(data)), **({"Upload-Length": str(len(data))} if version >= 8 else {})})
    interim = connection.read()  # not a byte of the body sent yet
    assert interim.status == 104
    location = interim.headers["location"]
    assert re.fullmatch(r"/api/v1/uploads/[0-9a-f]{32}", location), location
    assert interim.headers["upload-draft-interop-version"] == str(version)
    if version >= 8:
        max_size, max_age = limits(interim)
        assert max_size == MAX_SIZE and 604_790 <= max_age <= 604_800
    else:
        assert "upload-limit" not in interim.headers  # draft -01 has no Upload-Limit
    connection.send(data)
    final = connection.read()
    connection.close()
    assert final.status == 201
    assert final.headers["location"] == location
    assert final.headers["upload-offset"] == str(len(data))
    if version >= 8:
        assert final.headers["upload-complete"] == "?1"
    else:
        assert final.headers["upload-incomplete"] == "?0" and "upload-complete" not in final.headers
    listing = attachments(server)["attachments"]
    assert [(a["id"], a["filename"], a["size"], a["sha256"], a["state"]) for a in listing] == \
        [(location.rsplit("/", 1)[1], "fïle name.jpg", len(data), hashlib.sha256(data).hexdigest(), "verified")]


@pytest.mark.parametrize("version", [9, 3])
def test_the_drafts_examples_partial_creation_offset_retrieval_append_and_cancellation(limited, version):
    """Draft examples: creation with part of the content (B), offset retrieval (A), appends (A, B), cancellation."""
    server = limited
    data = pattern(200_000, seed=version)
    created = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": str(version), **complete_field(version, False),
                       **({"Upload-Length": str(len(data))} if version >= 8 else {})}, data[:50_000])
    assert created.status == 201
    upload = created.headers["location"]
    assert created.headers["upload-offset"] == "50000"
    assert {k: v for k, v in created.headers.items() if k.startswith("upload-") and k != "upload-limit"} == {
        "upload-offset": "50000", "upload-draft-interop-version": str(version),
        **{k.lower(): v for k, v in complete_field(version, False).items()}}

    head = request(server, "HEAD", upload, {"Upload-Draft-Interop-Version": str(version)})
    assert head.status == 204
    assert head.headers["upload-offset"] == "50000"
    assert head.headers["cache-control"] == "no-store"
    if version >= 8:
        assert head.headers["upload-complete"] == "?0" and head.headers["upload-length"] == str(len(data))
        assert limits(head)[0] == MAX_SIZE
    else:
        assert head.headers["upload-incomplete"] == "?1" and "upload-limit" not in head.headers

    appended = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": str(version), "Upload-Offset": "50000",
                                                 **complete_field(version, False), **partial(version)},
                       data[50_000:120_000])
    assert appended.status == 204 and appended.headers["upload-offset"] == "120000"
    last = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": str(version), "Upload-Offset": "120000",
                                             **complete_field(version, True), **partial(version)}, data[120_000:])
    assert last.status == 204 and last.headers["upload-offset"] == str(len(data))
    assert last.headers["upload-complete" if version >= 8 else "upload-incomplete"] == ("?1" if version >= 8 else "?0")
    done = request(server, "HEAD", upload, {"Upload-Draft-Interop-Version": str(version)})
    assert done.headers["upload-complete" if version >= 8 else "upload-incomplete"] == ("?1" if version >= 8 else "?0")
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()

    # Cancellation of a second upload: 204, then the upload is gone.
    second = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                     {"Upload-Draft-Interop-Version": str(version), **complete_field(version, False)})
    assert second.status == 201 and second.headers["upload-offset"] == "0"
    cancelled = request(server, "DELETE", second.headers["location"], {"Upload-Draft-Interop-Version": str(version)})
    assert cancelled.status == 204
    assert request(server, "HEAD", second.headers["location"], {"Upload-Draft-Interop-Version": str(version)}).status == 410


def ietf_client_upload(server, data: bytes, version: int, cut_at: int) -> str:
    """A client of the tests' own: creates with the whole content, is cut off after `cut_at` bytes, asks for the
    offset (HEAD) and appends the rest (PATCH) with Upload-Complete. Returns the upload's path."""
    connection = Connection(server)
    connection.send_head("POST", f"/api/v1/cases/{server.case}/uploads", {
        **bearer(server), "Upload-Draft-Interop-Version": str(version), **complete_field(version, True),
        "Content-Length": str(len(data)), "Content-Disposition": "attachment; filename=bundle.tar"})
    interim = connection.read()
    assert interim.status == 104
    upload = interim.headers["location"]
    connection.send(data[:cut_at])
    connection.close()  # cut off mid-body

    deadline = time.monotonic() + 15
    while True:  # the server commits what arrived once it sees the cut
        head = request(server, "HEAD", upload, {"Upload-Draft-Interop-Version": str(version)})
        assert head.status == 204
        offset = int(head.headers["upload-offset"])
        if offset == cut_at or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert offset == cut_at
    resumed = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": str(version), "Upload-Offset": str(offset),
                                                **complete_field(version, True), **partial(version)}, data[offset:])
    assert resumed.status == 204, resumed.body
    assert resumed.headers["upload-offset"] == str(len(data))
    return upload


@pytest.mark.parametrize("version", [9, 3])
def test_a_client_cut_off_mid_body_resumes_and_completes(server, version):
    data = pattern(6 * MiB + 321, seed=10 + version)
    upload = ietf_client_upload(server, data, version, cut_at=2 * MiB + 5)
    [attachment] = attachments(server)["attachments"]
    assert (attachment["id"], attachment["filename"], attachment["size"], attachment["sha256"]) == \
        (upload.rsplit("/", 1)[1], "bundle.tar", len(data), hashlib.sha256(data).hexdigest())
    content = requests.get(f"{server.url}/api/v1/attachments/{attachment['id']}/content", headers=auth(server.customer),
                           timeout=30)
    assert hashlib.sha256(content.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_upload_started_with_tus_is_finished_with_ietf_and_the_other_way_round(server):
    data = pattern(300_000, seed=5)
    # tus creates and sends half; an IETF HEAD sees it; an IETF PATCH finishes it; tus sees it complete.
    created = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10, headers={
        **auth(server.customer), "Upload-Length": str(len(data)), "Upload-Metadata": metadata("tus-first.log")})
    assert created.status_code == 201
    upload = created.headers["Location"]
    half = requests.patch(f"{server.url}{upload}", data=data[:100_000], timeout=10, headers={
        **auth(server.customer), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert half.status_code == 204
    head = request(server, "HEAD", upload, {"Upload-Draft-Interop-Version": "9"})
    assert (head.status, head.headers["upload-offset"], head.headers["upload-complete"],
            head.headers["upload-length"]) == (204, "100000", "?0", str(len(data)))
    rest = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "100000",
                                             "Upload-Complete": "?1", **partial(9)}, data[100_000:])
    assert (rest.status, rest.headers["upload-complete"]) == (204, "?1")
    tus_head = requests.head(f"{server.url}{upload}", headers=auth(server.customer), timeout=10)
    assert tus_head.headers["Upload-Offset"] == str(len(data))

    # IETF creates (length unknown) with a first part; tus sees it, sets the length and finishes it.
    other = pattern(250_000, seed=6)
    started = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": "9", "Upload-Complete": "?0",
                       "Content-Disposition": "attachment; filename=ietf-first.log"}, other[:90_000])
    assert started.status == 201
    second = started.headers["location"]
    tus_head = requests.head(f"{server.url}{second}", headers=auth(server.customer), timeout=10)
    assert (tus_head.headers["Upload-Offset"], tus_head.headers["Upload-Defer-Length"],
            tus_head.headers["Upload-Metadata"]) == ("90000", "1", metadata("ietf-first.log"))
    finished = requests.patch(f"{server.url}{second}", data=other[90_000:], timeout=10, headers={
        **auth(server.customer), "Upload-Offset": "90000", "Upload-Length": str(len(other)),
        "Content-Type": "application/offset+octet-stream"})
    assert finished.status_code == 204 and finished.headers["Upload-Offset"] == str(len(other))
    done = request(server, "HEAD", second, {"Upload-Draft-Interop-Version": "9"})
    assert (done.headers["upload-complete"], done.headers["upload-length"]) == ("?1", str(len(other)))

    listing = {a["filename"]: (a["size"], a["sha256"]) for a in attachments(server)["attachments"]}
    assert listing == {"tus-first.log": (len(data), hashlib.sha256(data).hexdigest()),
                       "ietf-first.log": (len(other), hashlib.sha256(other).hexdigest())}


def problem(answer: Answer) -> dict:
    assert answer.headers["content-type"] == "application/problem+json"
    return answer.json()


def test_every_problem_type_with_its_members(server):
    created = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": "9", "Upload-Complete": "?0", "Upload-Length": "10"}, b"01234")
    upload = created.headers["location"]
    upload_id = upload.rsplit("/", 1)[1]

    mismatch = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "7",
                                                 "Upload-Complete": "?1", **partial(9)}, b"789")
    assert (mismatch.status, mismatch.headers["upload-offset"]) == (409, "5")
    assert problem(mismatch) == {
        "type": PROBLEM + "mismatching-upload-offset", "title": "offset from request does not match offset of resource",
        "status": 409, "error": "offset_mismatch", "expected-offset": 5, "provided-offset": 7,
        "message": "Upload-Offset is 7 but the upload is at 5. Send a HEAD request and resume from the Upload-Offset "
                   "it returns."}

    # Upload-Length 10, but Upload-Complete: ?1 with 3 bytes at offset 5 says 8.
    short = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "5",
                                              "Upload-Length": "10", "Upload-Complete": "?1", **partial(9)}, b"567")
    assert short.status == 400
    assert problem(short) == {
        "type": PROBLEM + "inconsistent-upload-length", "title": "inconsistent length values for upload", "status": 400,
        "error": "inconsistent_upload_length",
        "message": "Upload-Length says 10 bytes, but Upload-Complete: ?1 with Content-Length 3 at offset 5 says 8. "
                   "Send lengths that agree."}

    done = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "5",
                                             "Upload-Complete": "?1", **partial(9)}, b"56789")
    assert (done.status, done.headers["upload-complete"]) == (204, "?1")

    completed = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "10",
                                                  "Upload-Complete": "?1", **partial(9)})
    assert (completed.status, completed.headers["upload-complete"]) == (400, "?1")
    assert problem(completed) == {
        "type": PROBLEM + "completed-upload", "title": "upload is already completed", "status": 400,
        "error": "upload_complete",
        "message": f"Upload {upload_id} is already complete (10 bytes); it accepts no more data."}

    more = request(server, "PATCH", upload, {"Upload-Draft-Interop-Version": "9", "Upload-Offset": "10",
                                             "Upload-Complete": "?1", **partial(9)}, b"x")
    assert more.status == 400
    assert problem(more) == {
        "type": PROBLEM + "inconsistent-upload-length", "title": "inconsistent length values for upload", "status": 400,
        "error": "inconsistent_upload_length",
        "message": f"Upload {upload_id} is already complete at 10 bytes; content appended to it would pass its length. "
                   "Nothing was written."}
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(b"0123456789").hexdigest()


def test_interop_3_answers_plain_json_errors(server):
    created = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": "3", "Upload-Incomplete": "?1"}, b"abc")
    mismatch = request(server, "PATCH", created.headers["location"],
                       {"Upload-Draft-Interop-Version": "3", "Upload-Offset": "0", "Upload-Incomplete": "?0"}, b"abc")
    assert (mismatch.status, mismatch.headers["upload-offset"]) == (409, "3")
    assert mismatch.headers["content-type"] == "application/json; charset=utf-8"
    assert mismatch.json() == {"error": "offset_mismatch", "message": "Upload-Offset is 0 but the upload is at 3. Send "
                               "a HEAD request and resume from the Upload-Offset it returns."}


def test_content_encoding_is_415_and_unknown_interop_versions_400(server):
    encoded = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": "9", "Upload-Complete": "?1", "Content-Encoding": "gzip"}, b"x")
    assert encoded.status == 415
    assert problem(encoded) == {
        "type": "about:blank", "title": "Unsupported Media Type", "status": 415, "error": "unsupported_content_encoding",
        "message": "Content-Encoding gzip is not supported on resumable uploads; send the bytes without a content coding."}
    unknown = request(server, "POST", f"/api/v1/cases/{server.case}/uploads",
                      {"Upload-Draft-Interop-Version": "5", "Upload-Complete": "?1"}, b"x")
    assert (unknown.status, problem(unknown)["error"]) == (400, "unsupported_interop_version")
    assert attachments(server) == {"attachments": [], "uploads": []}


def test_a_request_with_neither_tus_nor_ietf_fields_still_gets_412(server):
    """The dispatch: no Tus-Resumable and none of Upload-Complete, Upload-Incomplete, Upload-Draft-Interop-Version."""
    answer = request(server, "POST", f"/api/v1/cases/{server.case}/uploads", {"Upload-Length": "3"}, b"abc")
    assert (answer.status, answer.headers["tus-resumable"]) == (412, "1.0.0")
    assert answer.json()["error"] == "unsupported_tus_version"


def test_options_advertises_partial_upload_and_limits(limited):
    answer = requests.options(f"{limited.url}/api/v1/cases/{limited.case}/uploads", timeout=10)
    assert answer.status_code == 204
    assert answer.headers["Accept-Patch"] == "application/partial-upload"
    assert answer.headers["Upload-Limit"] == f"max-size={MAX_SIZE}, max-age=604800"
    assert answer.headers["Tus-Version"] == "1.0.0"  # tus discovery is unchanged
