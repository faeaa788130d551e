"""Compressed uploads (`casefiles-content-encoding`, issue #20 part 3): a PATCH body may be one complete gzip or
deflate (zlib) stream; the server inflates it as it arrives, offsets count decoded bytes, Upload-Checksum covers
the bytes as sent, and a bomb is refused before anything past the limit is written."""
import gzip
import hashlib
import socket
import subprocess
import time
import zlib
from pathlib import Path

import requests

from blobstore import on_object_store, stored_length
from faultproxy import FaultProxy
from helpers import auth, sha256_header
from loggen import generate
from test_client import client, final_line, settled_offset
from test_uploads import MiB, attachments, blob_bytes, create, head_offset, patch


def text_log(size: int, tmp_path: Path, seed: int = 20) -> bytes:
    path = tmp_path / f"log-{seed}-{size}.log"
    generate(str(path), size, seed)
    return path.read_bytes()


def gz(data: bytes, level: int = 1) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def compressed_patch(server, url, offset, body: bytes, coding="gzip", checksum: bytes | None = None, extra=None):
    """PATCHes `body` (already encoded) with Content-Encoding; Upload-Checksum over `checksum` (default: the body)."""
    headers = {"Content-Encoding": coding, "Upload-Checksum": sha256_header(body if checksum is None else checksum)}
    headers.update(extra or {})
    return patch(server, url, offset, body, checksum=False, extra=headers)


def test_options_advertises_the_content_encoding_extension(server):
    response = requests.options(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=auth(server.customer))
    assert response.status_code == 204
    assert "casefiles-content-encoding" in response.headers["Tus-Extension"].split(",")


def test_gzip_and_deflate_chunks_store_the_decoded_file(server, tmp_path):
    data = text_log(6 * MiB, tmp_path)
    url = create(server, len(data), sha256=hashlib.sha256(data).hexdigest())
    first = gz(data[:4 * MiB])
    response = compressed_patch(server, url, 0, first)
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(4 * MiB)  # decoded bytes, not the len(first) sent
    # `deflate` is the zlib format (RFC 9110 §8.4.1.2); the last chunk completes the upload.
    response = compressed_patch(server, url, 4 * MiB, zlib.compress(data[4 * MiB:], 6), coding="deflate")
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    listed = attachments(server)["attachments"][0]
    assert listed["sha256"] == hashlib.sha256(data).hexdigest() and listed["size"] == len(data)
    assert blob_bytes(server, url.rsplit("/", 1)[1]) == data


def test_unknown_and_stacked_encodings_are_415_listing_the_supported_ones(server):
    url = create(server, 100)
    for coding in ["br", "gzip, gzip", "compress"]:
        response = compressed_patch(server, url, 0, b"x" * 100, coding=coding)
        assert response.status_code == 415, (coding, response.text)
        assert response.json()["error"] == "unsupported_content_encoding"
        assert response.headers["Accept-Encoding"] == "gzip, deflate"
    assert head_offset(server, url) == 0


def test_a_body_that_is_not_one_complete_stream_is_400_and_keeps_nothing(server, tmp_path):
    data = text_log(2 * MiB, tmp_path)
    url = create(server, len(data))
    whole = gz(data)
    raw_deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    bodies = {
        "truncated": whole[:-100],
        "trailing garbage": whole + b"garbage",
        "a second member": gz(data[:MiB]) + gz(data[MiB:]),
        "corrupt": whole[:5000] + bytes(1000) + whole[6000:],
    }
    for name, body in bodies.items():
        for checksum in [True, False]:
            headers = {"Content-Encoding": "gzip"}
            if checksum:
                headers["Upload-Checksum"] = sha256_header(body)
            response = patch(server, url, 0, body, checksum=False, extra=headers)
            assert response.status_code == 400, (name, checksum, response.status_code, response.text)
            assert response.json()["error"] == "invalid_content_encoding", name
            assert head_offset(server, url) == 0, name
    # Raw deflate (RFC 1951 without the zlib wrapper) is not `deflate` (RFC 9110 §8.4.1.2): refused, not guessed.
    body = raw_deflate.compress(data) + raw_deflate.flush()
    response = compressed_patch(server, url, 0, body, coding="deflate")
    assert response.status_code == 400 and response.json()["error"] == "invalid_content_encoding", response.text
    assert head_offset(server, url) == 0
    assert response.headers["Upload-Offset"] == "0"


def test_upload_checksum_covers_the_bytes_as_sent(server, tmp_path):
    data = text_log(MiB, tmp_path)
    url = create(server, len(data))
    body = gz(data)
    # A checksum of the decoded bytes is the wrong one: 460, nothing kept.
    response = compressed_patch(server, url, 0, body, checksum=data)
    assert response.status_code == 460, response.text
    assert response.headers["Upload-Offset"] == "0"
    assert head_offset(server, url) == 0
    response = compressed_patch(server, url, 0, body)
    assert response.status_code == 204, response.text
    assert head_offset(server, url) == len(data)


def gzip_bomb(zeros: int) -> bytes:
    """`zeros` zero bytes as one gzip stream (1 GiB: about 1 MiB), made in pieces so the zeros never sit in memory."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MiB)
    parts = [encoder.compress(block) for _ in range(zeros // MiB)]
    parts.append(encoder.flush())
    return b"".join(parts)


def wchar(server) -> int:
    return server.proc_io("wchar")


def test_a_gzip_bomb_is_413_and_writes_nothing_past_the_limit(server):
    bomb = gzip_bomb(1024 * MiB)
    assert len(bomb) < 1100 * 1024
    url = create(server, 10 * MiB)
    upload_id = url.rsplit("/", 1)[1]
    written = wchar(server)
    response = compressed_patch(server, url, 0, bomb)
    assert response.status_code == 413, response.text
    # Zeros deflate at ~1030:1, past the default 1000:1 once the first MiB is out.
    assert response.json()["error"] == "compression_ratio_exceeded"
    assert wchar(server) - written < 3 * MiB
    assert head_offset(server, url) == 0
    assert stored_length(server, upload_id) == 0


def test_a_bomb_within_the_ratio_stops_at_the_uploads_length(server):
    server.stop()
    server.start("--max-compression-ratio", "100000")
    bomb = gzip_bomb(1024 * MiB)
    url = create(server, 10 * MiB)
    upload_id = url.rsplit("/", 1)[1]
    written = wchar(server)
    response = compressed_patch(server, url, 0, bomb)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_exceeds_length"
    # Nothing past the upload's 10 MiB reached the disk (a little more for the log and SQLite).
    assert wchar(server) - written < 11 * MiB
    assert head_offset(server, url) == 0
    # A file is truncated back to 0. An unfinished multipart upload cannot lose one part: a part the discarded bytes
    # filled stays until the next append overwrites it or the completion leaves it out; never past the length.
    assert stored_length(server, upload_id) == 0 if not on_object_store() else stored_length(server, upload_id) <= 10 * MiB


def test_a_cut_compressed_body_without_checksum_keeps_its_decoded_bytes(server, tmp_path):
    data = text_log(12 * MiB, tmp_path)
    url = create(server, len(data))
    body = gz(data)
    half = len(body) // 2
    sock = socket_patch(server, url, len(body))
    sock.sendall(body[:half])
    time.sleep(0.5)
    sock.close()
    offset = settled_offset(server, url)
    # About half the file: what the first half of the stream decoded to.
    assert 3 * MiB < offset < 9 * MiB
    if not on_object_store():  # an unfinished multipart upload's parts cannot be read back; the SHA-256 below covers them
        assert blob_bytes(server, url.rsplit("/", 1)[1])[:offset] == data[:offset]
    response = compressed_patch(server, url, offset, gz(data[offset:]))
    assert response.status_code == 204, response.text
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def socket_patch(server, url, total):
    """A PATCH with Content-Encoding: gzip and no checksum whose body the caller sends (and may cut)."""
    path = url[len(server.url):]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    lines = [f"PATCH {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.customer}", "Tus-Resumable: 1.0.0", "Upload-Offset: 0",
             "Content-Type: application/offset+octet-stream", "Content-Encoding: gzip", f"Content-Length: {total}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def test_cli_compress_auto_sends_about_gzip_1_and_stores_the_file_exactly(server, tmp_path):
    path = tmp_path / "dialer.log"
    generate(str(path), 40 * MiB, 20)
    data = path.read_bytes()
    gzip_size = len(subprocess.run(["gzip", "-1", "-c", str(path)], capture_output=True, check=True).stdout)
    with FaultProxy(server.port) as proxy:
        result = client(server, "upload", "--case", server.case, "--compress", "auto", str(path),
                        url=proxy.url, state=tmp_path / "state")
        sent = proxy.bytes_up
    assert result.returncode == 0, result.stderr + result.stdout
    assert final_line(result.stdout)["size"] == len(data)
    # Everything on the wire, headers of every request included, within 1.1x of `gzip -1 -c`.
    assert sent <= 1.1 * gzip_size, (sent, gzip_size, len(data))
    listed = attachments(server)["attachments"][0]
    download = requests.get(f"{server.url}/api/v1/attachments/{listed['id']}/content", headers=auth(server.engineer))
    assert download.status_code == 200 and download.content == data

    # An already-compressed file goes as it is (auto decides from its first bytes: the gzip signature).
    packed = tmp_path / "dialer.log.gz"
    packed.write_bytes(gz(data[:8 * MiB], 6))
    with FaultProxy(server.port) as proxy:
        result = client(server, "upload", "--case", server.case, "--compress", "auto", str(packed),
                        url=proxy.url, state=tmp_path / "state")
        sent = proxy.bytes_up
    assert result.returncode == 0, result.stderr + result.stdout
    assert "compressed to" not in result.stdout
    assert packed.stat().st_size <= sent < packed.stat().st_size + 64 * 1024
