"""End-to-end: the real server binary driven by real clients (tuspy, curl, raw sockets)."""
import hashlib
import http.client
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import BEHIND_PROXY
from tusclient import client as tus_client
from tusclient.uploader import Uploader

from blobstore import blob_bytes, on_object_store, stored_blob_ids  # blob_bytes: test_races imports it from here
from helpers import auth, metadata, pattern, sha256_header

MiB = 1024 * 1024


class SHA256Uploader(Uploader):
    """tuspy 1.1.0 hard-codes sha1 for Upload-Checksum; this is the documented extension point."""
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def create(server, length: int, name="app.log", sha256=None, token=None) -> str:
    headers = auth(token or server.customer)
    headers.update({"Upload-Length": str(length), "Upload-Metadata": metadata(name, sha256)})
    response = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return server.url + response.headers["Location"]


def head_offset(server, url: str) -> int:
    response = requests.head(url, headers=auth(server.customer), timeout=10)
    assert response.status_code == 200
    return int(response.headers["Upload-Offset"])


def patch(server, url: str, offset: int, chunk: bytes, checksum=True, extra=None):
    headers = auth(server.customer)
    headers.update({"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    if checksum:
        headers["Upload-Checksum"] = sha256_header(chunk)
    headers.update(extra or {})
    return requests.patch(url, data=chunk, headers=headers, timeout=60)


def stream_patch(server, url: str, offset: int, length: int, blocks, pause: float = 0.0) -> int:
    """PATCHes `length` bytes produced block by block with an explicit Content-Length, never
    holding the body (requests turns a generator into chunked encoding)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    connection.putrequest("PATCH", url[len(server.url):])
    headers = auth(server.customer)
    headers.update({"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(length)})
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    for block in blocks:
        connection.send(block)
        if pause:
            time.sleep(pause)
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 204, response.status
    return int(response.getheader("Upload-Offset"))


def attachments(server, token=None) -> dict:
    """The case's whole listing: every page, following `next`, joined."""
    listing = {"attachments": [], "uploads": []}
    query = ""
    while True:
        response = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments{query}",
                                headers=auth(token or server.engineer), timeout=10)
        assert response.status_code == 200
        page = response.json()
        listing["attachments"] += page["attachments"]
        listing["uploads"] += page["uploads"]
        if "next" not in page:
            return listing
        query = f"?after={page['next']}"




def test_tuspy_uploads_in_8_mib_chunks_with_sha256(server, tmp_path):
    data = pattern(40 * MiB + 12345)
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "nightly.log"
    path.write_bytes(data)

    client = tus_client.TusClient(f"{server.url}/api/v1/cases/{server.case}/uploads",
                                  headers={"Authorization": f"Bearer {server.customer}"})
    uploader = SHA256Uploader(file_path=str(path), client=client, chunk_size=8 * MiB, upload_checksum=True,
                              metadata={"filename": "nightly.log", "sha256": digest})
    uploader.upload()

    listing = attachments(server)
    assert [(a["filename"], a["size"], a["sha256"], a["state"]) for a in listing["attachments"]] == \
        [("nightly.log", len(data), digest, "verified")]
    assert head_offset(server, uploader.url) == len(data)
    assert blob_bytes(server, listing["attachments"][0]["id"]) == data


def test_curl_gets_100_continue_and_uploads(server, tmp_path):
    data = pattern(3 * MiB, seed=2)
    path = tmp_path / "core.dump"
    path.write_bytes(data)
    url = create(server, len(data), "core.dump")
    result = subprocess.run(
        ["curl", "-sS", "-v", "-X", "PATCH", url, "-H", f"Authorization: Bearer {server.customer}",
         "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
         "-H", "Content-Type: application/offset+octet-stream",
         "-H", "Expect: 100-continue",
         "-H", f"Upload-Checksum: {sha256_header(data)}", "--data-binary", f"@{path}",
         "-w", "%{http_code}"],
        capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "204", result.stderr
    assert "HTTP/1.1 100 Continue" in result.stderr
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def blob_files(server) -> list:
    return sorted(stored_blob_ids(server))


def curl_with_expect(server, method: str, url: str, path, headers: list[str]) -> subprocess.CompletedProcess:
    """Real curl sending a file over 1 MiB, so it sends `Expect: 100-continue` by itself and waits up to
    10 s for `100 Continue` (--expect100-timeout) before sending the body. Prints code and bytes sent."""
    command = ["curl", "-sS", "-v", "-X", method, url, "--expect100-timeout", "10", "--data-binary", f"@{path}",
               "-H", f"Authorization: Bearer {server.customer}", "-H", "Tus-Resumable: 1.0.0",
               "-H", "Content-Type: application/offset+octet-stream", "-w", "\n%{http_code} %{size_upload}"]
    for header in headers:
        command += ["-H", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(BEHIND_PROXY, reason="nginx answers Expect: 100-continue itself, before CaseFiles sees the headers")
@pytest.mark.parametrize("case", ["stale offset", "body past the upload's length", "creation, body past Upload-Length"])
def test_curl_gets_the_final_status_before_sending_the_body(server, tmp_path, case):
    """RFC 9110 §10.1.1: when the headers decide the answer, it comes instead of `100 Continue`, and curl
    never sends the 3 MiB body (size_upload 0)."""
    data = pattern(3 * MiB, seed=21)
    path = tmp_path / "core.dump"
    path.write_bytes(data)
    if case == "stale offset":
        url = create(server, len(data), "core.dump")
        result = curl_with_expect(server, "PATCH", url, path, ["Upload-Offset: 5"])
        expected, code = "409", "offset_mismatch"
    elif case == "body past the upload's length":
        url = create(server, 2 * MiB, "core.dump")
        result = curl_with_expect(server, "PATCH", url, path, ["Upload-Offset: 0"])
        expected, code = "413", "body_exceeds_length"
    else:
        result = curl_with_expect(server, "POST", f"{server.url}/api/v1/cases/{server.case}/uploads", path,
                                  [f"Upload-Length: {2 * MiB}", f"Upload-Metadata: {metadata('core.dump')}"])
        expected, code = "413", "body_exceeds_length"
    body, status_line = result.stdout.rsplit("\n", 1)
    assert status_line == f"{expected} 0", result.stderr
    assert f'"error":"{code}"' in body
    assert "100 Continue" not in result.stderr
    assert "Connection: close" in result.stderr
    listing = attachments(server)
    assert [u["offset"] for u in listing["uploads"]] == ([] if case.startswith("creation") else [0])


def raw_expect(server, method: str, path: str, headers: list[str], token=None) -> tuple[bytes, bool]:
    """Sends only the headers of a 3 MiB request with `Expect: 100-continue` and no body. Returns the first
    response line and whether the server closed the connection after its answer (within 5 s)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {token or server.customer}", "Tus-Resumable: 1.0.0",
             f"Content-Length: {3 * MiB}", "Expect: 100-continue", *headers]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        closed = False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
    return received.split(b"\r\n", 1)[0], closed


@pytest.mark.skipif(BEHIND_PROXY, reason="nginx answers Expect: 100-continue itself, before CaseFiles sees the headers")
def test_expect_100_continue_gets_the_final_status_the_headers_decide(server):
    """Every route that reads a body answers what its headers decide at once, instead of `100 Continue`,
    and closes the connection (the client may never send the body)."""
    upload = create(server, 2 * MiB, "target.log").removeprefix(server.url)
    others = create(server, 4 * MiB, "colleagues.log", token=server.cli(
        "users", "create", "colin", "--role", "customer", "--account", "ACME")).removeprefix(server.url)
    stranger = server.cli("users", "create", "oscar", "--role", "customer", "--account", "OTHER")
    chunk = "Content-Type: application/offset+octet-stream"
    creation = f"/api/v1/cases/{server.case}/uploads"
    meta = f"Upload-Metadata: {metadata('x.log')}"
    rows = [
        ("stale Upload-Offset", "PATCH", upload, [chunk, "Upload-Offset: 7"], None, b"409"),
        ("Content-Length past what is left", "PATCH", upload, [chunk, "Upload-Offset: 0"], None, b"413"),
        ("Upload-Length that cannot change", "PATCH", upload, [chunk, "Upload-Offset: 0", "Upload-Length: 9"], None, b"409"),
        ("unknown upload", "PATCH", "/api/v1/uploads/" + "0" * 32, [chunk, "Upload-Offset: 0"], None, b"404"),
        ("another customer's upload", "PATCH", others, [chunk, "Upload-Offset: 0"], None, b"403"),
        ("another account's upload", "PATCH", others, [chunk, "Upload-Offset: 0"], stranger, b"404"),
        ("bad checksum syntax", "PATCH", upload, [chunk, "Upload-Offset: 0", "Upload-Checksum: sha256"], None, b"400"),
        ("wrong Content-Type", "PATCH", upload, ["Content-Type: text/plain", "Upload-Offset: 0"], None, b"415"),
        ("creation, Content-Length past Upload-Length", "POST", creation, [chunk, "Upload-Length: 5", meta], None, b"413"),
        ("creation, not enough disk", "POST", creation, [chunk, f"Upload-Length: {2 ** 39}", meta], None, b"507"),
        ("creation, past the case quota", "POST", creation, [chunk, f"Upload-Length: {2 ** 62}", meta], None, b"413"),
        ("creation, another account's case", "POST", creation, [chunk, "Upload-Length: 5", meta], stranger, b"404"),
        ("JSON body over 64 KiB", "POST", "/api/v1/cases", ["Content-Type: application/json"], server.engineer, b"413"),
        ("customer opening a case", "POST", "/api/v1/cases", ["Content-Type: application/json"], None, b"403"),
    ]
    if on_object_store():  # it has no free-space figure, so no 507 (README, "Blobs in an S3-compatible object store")
        rows = [row for row in rows if row[0] != "creation, not enough disk"]
    failures = []
    for label, method, path, headers, token, status in rows:
        first, closed = raw_expect(server, method, path, headers, token)
        if not first.startswith(b"HTTP/1.1 " + status + b" ") or not closed:
            failures.append(f"{label}: first line {first!r}, connection closed: {closed}")
    assert not failures, "\n".join(failures)
    listing = attachments(server)
    assert sorted((u["filename"], u["offset"]) for u in listing["uploads"]) == [("colleagues.log", 0), ("target.log", 0)]
    assert len(blob_files(server)) == 2


def raw_creation(server, headers: list[str], body: bytes, cut=False, chunked=False) -> int | None:
    """A creation-with-upload POST; with `cut`, the connection is closed after `body` (no answer)."""
    lines = [f"POST /api/v1/cases/{server.case}/uploads HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.customer}", "Tus-Resumable: 1.0.0",
             "Content-Type: application/offset+octet-stream", *headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if cut:
            time.sleep(0.3)
            return None
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        answer.read()
        assert answer.getheader("Location") is None
        return answer.status


@pytest.mark.parametrize("case", ["checksum mismatch", "body longer than Upload-Length, chunked",
                                  "whole-file digest mismatch", "cut part-way without checksum",
                                  "Content-Length past Upload-Length"])
def test_a_failed_creation_with_upload_leaves_no_upload_behind(server, case):
    """The client of a failed creation-with-upload never got a Location: nothing it could resume or
    cancel may remain, neither the row nor the blob."""
    data = pattern(2 * MiB, seed=22)
    meta = f"Upload-Metadata: {metadata('lost.log')}"
    if case == "checksum mismatch":
        status = raw_creation(server, [f"Upload-Length: {len(data)}", meta, f"Content-Length: {len(data)}",
                                       f"Upload-Checksum: {sha256_header(b'other bytes')}"], data)
        assert status == 460
    elif case == "body longer than Upload-Length, chunked":
        assert raw_creation(server, [f"Upload-Length: {MiB}", meta], data, chunked=True) == 413
    elif case == "whole-file digest mismatch":
        status = raw_creation(server, [f"Upload-Length: {len(data)}", f"Content-Length: {len(data)}",
                                       f"Upload-Metadata: {metadata('lost.log', hashlib.sha256(b'x').hexdigest())}"], data)
        assert status == 422
    elif case == "cut part-way without checksum":
        assert raw_creation(server, [f"Upload-Length: {len(data)}", meta, f"Content-Length: {len(data)}"],
                            data[:MiB], cut=True) is None
    else:
        assert raw_creation(server, ["Upload-Length: 5", meta, "Content-Length: 6"], b"123456") == 413
    deadline = time.monotonic() + 10
    while (attachments(server)["uploads"] or blob_files(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attachments(server) == {"attachments": [], "uploads": []}
    assert blob_files(server) == []
    # Not even a `failed` row, which the list does not show.
    assert server.query("SELECT id, state FROM upload") == []
    # The server keeps serving creations after each of them.
    url = create(server, 3, "next.log")
    assert patch(server, url, 0, b"abc").status_code == 204


def test_acknowledged_bytes_survive_sigkill_and_resume_reads_nothing_back(server):
    chunk = 16 * MiB
    data = pattern(8 * chunk, seed=3)
    url = create(server, len(data), "db.tar", sha256=hashlib.sha256(data).hexdigest())
    acknowledged = 0
    for _ in range(5):
        response = patch(server, url, acknowledged, data[acknowledged:acknowledged + chunk])
        assert response.status_code == 204
        acknowledged = int(response.headers["Upload-Offset"])

    # Kill the server while the next chunk is in flight: those bytes were never acknowledged.
    sending = threading.Thread(target=lambda: _slow_patch(server, url, acknowledged, data[acknowledged:acknowledged + chunk]))
    sending.start()
    time.sleep(0.5)
    server.kill()
    sending.join(timeout=30)

    server.start()
    assert head_offset(server, url) == acknowledged
    read_before = server.proc_io("rchar")
    rest = data[acknowledged:]
    for start in range(0, len(rest), chunk):
        response = patch(server, url, acknowledged + start, rest[start:start + chunk])
        assert response.status_code == 204, response.text
    read = server.proc_io("rchar") - read_before
    # The resumed server read the remaining bytes from the socket and no more: the whole-file
    # digest state came from SQLite, not from re-reading the 80 MiB already on disk.
    assert read < len(rest) + 4 * MiB, f"server read {read} bytes to receive {len(rest)}"
    listing = attachments(server)
    assert listing["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert blob_bytes(server, listing["attachments"][0]["id"]) == data


def _slow_patch(server, url, offset, chunk):
    """Sends a PATCH body in slices with pauses, so the server is killed mid-request."""
    try:
        stream_patch(server, url, offset, len(chunk),
                     (chunk[i:i + MiB] for i in range(0, len(chunk), MiB)), pause=0.1)
    except (OSError, http.client.HTTPException, AssertionError):
        pass


def _raw_patch_start(server, url, offset, total, first, checksum=None) -> socket.socket:
    path = url[len(server.url):]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    lines = [f"PATCH {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.customer}", "Tus-Resumable: 1.0.0", f"Upload-Offset: {offset}",
             "Content-Type: application/offset+octet-stream", f"Content-Length: {total}"]
    if checksum:
        lines.append(f"Upload-Checksum: {checksum}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
    return sock


def _wait_for_offset(server, url, expected, timeout=10.0) -> int:
    deadline = time.monotonic() + timeout
    offset = head_offset(server, url)
    while offset != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        offset = head_offset(server, url)
    return offset


def test_a_cut_patch_without_checksum_keeps_what_arrived(server):
    data = pattern(10 * MiB, seed=4)
    url = create(server, len(data))
    sock = _raw_patch_start(server, url, 0, len(data), data[:3 * MiB])
    time.sleep(0.3)
    sock.close()
    assert _wait_for_offset(server, url, 3 * MiB) == 3 * MiB
    assert patch(server, url, 3 * MiB, data[3 * MiB:]).status_code == 204
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_cut_patch_with_checksum_keeps_nothing(server):
    data = pattern(10 * MiB, seed=5)
    url = create(server, len(data))
    sock = _raw_patch_start(server, url, 0, len(data), data[:3 * MiB], checksum=sha256_header(data))
    time.sleep(0.3)
    sock.close()
    time.sleep(0.5)
    assert head_offset(server, url) == 0
    assert patch(server, url, 0, data).status_code == 204


def test_a_new_patch_takes_over_from_a_stalled_one(server):
    data = pattern(8 * MiB, seed=6)
    url = create(server, len(data))
    stalled = _raw_patch_start(server, url, 0, len(data), data[:2 * MiB])
    time.sleep(0.3)
    # The client reconnects without knowing what the stalled request delivered.
    response = patch(server, url, 0, data, checksum=False)
    assert response.status_code == 409
    assert response.json()["error"] == "offset_mismatch"
    resume_at = int(response.headers["Upload-Offset"])
    assert resume_at == 2 * MiB
    assert patch(server, url, resume_at, data[resume_at:]).status_code == 204
    stalled.close()
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_file_over_4_gib_streams_with_flat_memory(server):
    size = 4 * 1024 * MiB + 256 * MiB
    free = shutil.disk_usage(server.storage).free
    if free < size + 2 * 1024 * MiB:
        pytest.skip(f"needs {size + 2 * 1024 * MiB} free bytes on the storage filesystem, has {free}")
    block = pattern(MiB, seed=7)
    expected = hashlib.sha256()
    for _ in range(size // MiB):
        expected.update(block)
    url = create(server, size, "huge.img", sha256=expected.hexdigest())
    part = 1024 * MiB
    offset = 0
    started = time.monotonic()
    while offset < size:
        length = min(part, size - offset)
        offset = stream_patch(server, url, offset, length, (block for _ in range(length // MiB)))
    elapsed = time.monotonic() - started
    peak_kib = server.proc_status("VmHWM")
    listing = attachments(server)
    assert listing["attachments"][0]["size"] == size
    assert listing["attachments"][0]["sha256"] == expected.hexdigest()
    print(f"\n[report] {size / MiB:.0f} MiB upload in {elapsed:.1f} s "
          f"({size / MiB / elapsed:.0f} MiB/s, debug build); server peak RSS {peak_kib / 1024:.1f} MiB")
    # Memory must not grow with the file: a server that buffered even one 1 GiB PATCH would be far above this.
    assert peak_kib < 256 * 1024
