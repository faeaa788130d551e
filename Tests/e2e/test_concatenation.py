"""tus `concatenation`: partial uploads in parallel, a final upload naming them, verified in the background by one
read of the partials in order; downloads stream across the partials' blobs. Refusals, a crash during verification
(the `concat.after-checkpoint` failpoint), and `casefiles upload --parallel`."""
import base64
import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import requests

from conftest import BINARY
from helpers import auth, metadata, pattern, sha256_header
from test_client import settled_offset

MiB = 1024 * 1024
# 1 GiB, as the issue asks (about 25 s with a debug build); CONCAT_TEST_SIZE=268435456 for a quicker run.
LARGE = int(os.environ.get("CONCAT_TEST_SIZE", 1024 * MiB))


def create_partial(server, length, name="part.bin", token=None, case=None):
    r = requests.post(f"{server.url}/api/v1/cases/{case or server.case}/uploads",
                      headers={**auth(token or server.customer), "Upload-Length": str(length),
                               "Upload-Concat": "partial", "Upload-Metadata": metadata(name)})
    assert r.status_code == 201, r.text
    return server.url + r.headers["Location"]


def patch(server, url, offset, chunk, token=None):
    return requests.patch(url, data=chunk, headers={
        **auth(token or server.customer), "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", "Upload-Checksum": sha256_header(chunk)})


def send_all(server, url, data, start=0, chunk=16 * MiB, token=None):
    offset = start
    view = memoryview(data)
    while offset < len(data):
        r = patch(server, url, offset, bytes(view[offset:offset + chunk]), token)
        assert r.status_code == 204, r.text
        offset = int(r.headers["Upload-Offset"])


def head(server, url, token=None):
    return requests.head(url, headers=auth(token or server.customer))


def create_final(server, urls, sha256=None, name="whole.bin", token=None, case=None, extra=None):
    return requests.post(f"{server.url}/api/v1/cases/{case or server.case}/uploads",
                         headers={**auth(token or server.customer), "Upload-Concat": "final;" + " ".join(urls),
                                  "Upload-Metadata": metadata(name, sha256), **(extra or {})})


def wait_verified(server, url, deadline=600):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        r = head(server, url)
        assert r.status_code == 200, r.text
        if "Upload-Offset" in r.headers:
            return r
        assert r.headers["Upload-Verification"].startswith("verifying; verified-bytes=")
        time.sleep(0.2)
    raise AssertionError("the final upload was not verified in time")


def cut_after(server, url, offset, body, send):
    """A PATCH that declares the whole `body` and sends only `send` bytes of it, then the connection is cut."""
    path = url[len(server.url):]
    head_lines = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.customer}\r\n"
                  f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
                  f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head_lines.encode())
        s.sendall(body[:send])
        time.sleep(0.5)
        s.shutdown(socket.SHUT_RDWR)


def split(size, n):
    base, extra = divmod(size, n)
    bounds, start = [], 0
    for i in range(n):
        length = base + (1 if i < extra else 0)
        bounds.append((start, start + length))
        start += length
    return bounds


def test_eight_partials_at_once_one_cut_and_resumed_then_verified_and_downloaded(server):
    data = pattern(LARGE + 12345, seed=190)
    digest = hashlib.sha256(data).hexdigest()
    bounds = split(len(data), 8)
    urls = [create_partial(server, end - start, f"part{i}") for i, (start, end) in enumerate(bounds)]
    options = requests.options(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=auth(server.customer))
    assert "concatenation" in options.headers["Tus-Extension"].split(",")
    assert head(server, urls[0]).headers["Upload-Concat"] == "partial"

    # Part 3 is cut part-way through its first request, then resumed from the offset HEAD gives.
    start3, end3 = bounds[3]
    cut_after(server, urls[3], 0, data[start3:end3], send=(end3 - start3) // 3)
    # What arrived is committed once the server sees the cut, which a HEAD can overtake (in the object store the
    # commit stores a tail object first): read the offset once it stops moving.
    committed = settled_offset(server, urls[3])
    assert 0 < committed < end3 - start3

    errors = []

    def sender(i):
        try:
            start, end = bounds[i]
            send_all(server, urls[i], data[start:end], start=committed if i == 3 else 0)
        except BaseException as error:  # reported below
            errors.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    sent = time.monotonic() - started

    r = create_final(server, urls, sha256=digest)
    assert r.status_code == 201, r.text
    assert "Upload-Offset" not in r.headers
    final = server.url + r.headers["Location"]
    first = head(server, final)
    assert first.headers["Upload-Length"] == str(len(data))
    assert first.headers["Upload-Concat"] == "final;" + " ".join(u[len(server.url):] for u in urls)
    if "Upload-Offset" not in first.headers:  # still verifying: tus says no offset yet
        assert first.headers["Upload-Verification"].startswith("verifying; verified-bytes=")
    verifying = time.monotonic()
    done = wait_verified(server, final)
    print(f"\n{len(data) / MiB:.0f} MiB: 8 partials sent in {sent:.1f} s, verified in {time.monotonic() - verifying:.1f} s")
    assert done.headers["Upload-Offset"] == str(len(data))
    assert done.headers["Upload-Verification"] == "verified"

    final_id = final.rsplit("/", 1)[1]
    attachment = requests.get(f"{server.url}/api/v1/attachments/{final_id}", headers=auth(server.customer)).json()
    assert attachment["sha256"] == digest and attachment["size"] == len(data)
    # Partials are never attachments: the case lists the final alone, and a partial cannot be downloaded.
    listing = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.customer)).json()
    assert [a["id"] for a in listing["attachments"]] == [final_id]
    assert listing["uploads"] == []
    partial_id = urls[0].rsplit("/", 1)[1]
    r = requests.get(f"{server.url}/api/v1/attachments/{partial_id}/content", headers=auth(server.customer))
    assert r.status_code == 404 and r.json()["error"] == "attachment_not_found"

    # The whole content, streamed across the eight partials' blobs.
    content = f"{server.url}/api/v1/attachments/{final_id}/content"
    whole = hashlib.sha256()
    with requests.get(content, headers=auth(server.customer), stream=True) as r:
        assert r.status_code == 200
        for piece in r.iter_content(4 * MiB):
            whole.update(piece)
    assert whole.hexdigest() == digest
    # A range across the boundary between part 3 and part 4.
    boundary = bounds[4][0]
    r = requests.get(content, headers={**auth(server.customer), "Range": f"bytes={boundary - 1000}-{boundary + 999}"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {boundary - 1000}-{boundary + 999}/{len(data)}"
    assert r.content == data[boundary - 1000:boundary + 1000]


def small_partials(server, data, n=2, token=None, case=None):
    urls = []
    for i, (start, end) in enumerate(split(len(data), n)):
        url = create_partial(server, end - start, f"p{i}", token=token, case=case)
        send_all(server, url, data[start:end], token=token)
        urls.append(url)
    return urls


def test_refusals(server):
    data = pattern(3 * MiB, seed=191)
    urls = small_partials(server, data)

    # An incomplete partial: 400, naming it.
    unfinished = create_partial(server, 1000, "unfinished")
    r = create_final(server, urls + [unfinished])
    assert r.status_code == 400 and r.json()["error"] == "partial_incomplete"
    assert unfinished.rsplit("/", 1)[1] in r.json()["message"] and "0 of 1000 bytes" in r.json()["message"]

    # An ordinary upload is not a partial.
    ordinary = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads",
                             headers={**auth(server.customer), "Upload-Length": "0", "Upload-Metadata": metadata("o")})
    r = create_final(server, urls + [server.url + ordinary.headers["Location"]])
    assert r.status_code == 400 and r.json()["error"] == "not_a_partial_upload"

    # Another user's partial, on the same case: 403.
    theirs = small_partials(server, b"x" * 10, n=1, token=server.engineer)
    r = create_final(server, urls + theirs)
    assert r.status_code == 403 and r.json()["error"] == "partial_not_yours"

    # A partial of another case of the same account: 403; of a case the user cannot see: 404.
    server.cli("cases", "create", "--account", "ACME", "--subject", "Other", "--number", "1414")
    other_case = small_partials(server, b"y" * 10, n=1, case="00001414")
    r = create_final(server, urls + other_case)
    assert r.status_code == 403 and r.json()["error"] == "partial_of_other_case"
    server.cli("cases", "create", "--account", "GLOBEX", "--subject", "Hidden", "--number", "1415")
    hidden = small_partials(server, b"z" * 10, n=1, token=server.engineer, case="00001415")
    r = create_final(server, urls + hidden)
    assert r.status_code == 404 and r.json()["error"] == "upload_not_found"

    # A final takes no length and no body; malformed Upload-Concat values are 400.
    r = create_final(server, urls, extra={"Upload-Length": str(len(data))})
    assert r.status_code == 400 and r.json()["error"] == "final_upload_length"
    r = create_final(server, ["/elsewhere/abc"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_upload_concat"
    r = create_final(server, [urls[0], urls[0]])
    assert r.status_code == 400 and r.json()["error"] == "invalid_upload_concat"

    # Absolute URLs and paths are both accepted.
    r = create_final(server, [urls[0], urls[1][len(server.url):]], sha256=hashlib.sha256(data).hexdigest())
    assert r.status_code == 201, r.text
    final = server.url + r.headers["Location"]

    # PATCH to a final: 403 (tus); a partial in a final is neither appended to nor deleted, nor used twice.
    r = patch(server, final, 0, b"more")
    assert r.status_code == 403 and r.json()["error"] == "final_upload_not_writable"
    r = patch(server, urls[0], 0, b"more")
    assert r.status_code == 403 and r.json()["error"] == "partial_in_final"
    r = requests.delete(urls[1], headers=auth(server.customer))
    assert r.status_code == 403 and r.json()["error"] == "partial_in_final"
    r = create_final(server, urls)
    assert r.status_code == 409 and r.json()["error"] == "partial_already_used"
    wait_verified(server, final)
    r = requests.delete(final, headers=auth(server.customer))
    assert r.status_code == 403 and r.json()["error"] == "final_upload_not_writable"


def test_a_final_whose_digest_does_not_match_fails_with_its_partials(server):
    data = pattern(2 * MiB, seed=192)
    urls = small_partials(server, data)
    r = create_final(server, urls, sha256="0" * 64)
    assert r.status_code == 201
    final = server.url + r.headers["Location"]
    end = time.monotonic() + 60
    while head(server, final).status_code == 200 and time.monotonic() < end:
        time.sleep(0.1)
    r = head(server, final)
    assert r.status_code == 410
    assert head(server, urls[0]).status_code == 410
    listing = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.customer)).json()
    assert listing["attachments"] == []


def test_a_crash_during_verification_resumes_from_its_checkpoint(server):
    data = pattern(160 * MiB + 777, seed=193)
    digest = hashlib.sha256(data).hexdigest()
    urls = small_partials(server, data, n=4)
    server.stop()
    os.environ["CASEFILES_FAILPOINTS"] = "concat.after-checkpoint=1"
    try:
        server.start()
    finally:
        del os.environ["CASEFILES_FAILPOINTS"]
    r = create_final(server, urls, sha256=digest)
    assert r.status_code == 201
    final = server.url + r.headers["Location"]
    final_id = final.rsplit("/", 1)[1]
    assert server.process.wait(timeout=120) == -9, "the failpoint should have killed the server"

    # Killed right after the first checkpoint, the first read (4 MiB, or to a partial's end) that reaches 64 MiB:
    # that much committed, the final still unverified and unlisted.
    checkpoint, position = None, 0
    for start, end in split(len(data), 4):
        while position < end and checkpoint is None:
            position += min(4 * MiB, end - position)
            if position >= 64 * MiB:
                checkpoint = position
    [row] = server.query(f"""SELECT state, "offset", sha256 FROM upload WHERE id = '{final_id}'""")
    assert row == ("uploading", str(checkpoint), None)
    assert server.cli("cases", "show", server.case).count(final_id) == 1  # listed as unfinished, not verified
    assert f"{final_id}  uploading" in server.cli("cases", "show", server.case)

    server.start()
    done = wait_verified(server, final)
    assert done.headers["Upload-Offset"] == str(len(data))
    listing = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.customer)).json()
    assert [(a["id"], a["sha256"]) for a in listing["attachments"]] == [(final_id, digest)]
    got = requests.get(f"{server.url}/api/v1/attachments/{final_id}/content", headers=auth(server.customer))
    assert hashlib.sha256(got.content).hexdigest() == digest


def test_cli_upload_parallel_4(server, tmp_path):
    data = pattern(40 * MiB + 3, seed=194)
    path = tmp_path / "bundle.tar"
    path.write_bytes(data)
    env = {**os.environ, "CASEFILES_TOKEN": server.customer, "CASEFILES_SERVER": server.url,
           "XDG_STATE_HOME": str(tmp_path / "state")}
    up = subprocess.run([str(BINARY), "upload", "--case", server.case, "--parallel", "4", "--quiet", str(path)],
                        capture_output=True, text=True, env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert f"sha256 {digest}" in up.stdout
    listing = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.customer)).json()
    assert [(a["filename"], a["sha256"], a["size"]) for a in listing["attachments"]] == [("bundle.tar", digest, len(data))]
    assert list((tmp_path / "state" / "casefiles").glob("*.json")) == []  # nothing left to resume
