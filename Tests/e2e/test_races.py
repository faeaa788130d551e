"""Races: many writers on one upload at once, a DELETE during a PATCH, a case closed during a PATCH, a
SIGTERM during a PATCH. Exactly one writer wins, the state stays consistent, no bytes interleave."""
import collections
import hashlib
import json
import signal
import socket
import threading
import time

import requests

from conftest import BEHIND_PROXY

from blobstore import blob_exists
from helpers import SUMMARY, auth, pattern, sha256_header
from test_uploads import MiB, _raw_patch_start, attachments, blob_bytes, create, head_offset, patch
from test_slow_clients import read_status


def test_many_clients_patching_one_upload_at_once(server):
    data = pattern(16 * MiB, seed=90)
    url = create(server, len(data), "contested.log", sha256=hashlib.sha256(data).hexdigest())
    statuses = []

    def writer():
        # Every writer sends the same first 8 MiB at offset 0; only one may land. A loser that was
        # stopped mid-body may also just lose its connection.
        headers = {**auth(server.customer), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                   "Upload-Checksum": sha256_header(data[:8 * MiB])}
        try:
            statuses.append(requests.patch(url, data=data[:8 * MiB], headers=headers, timeout=15).status_code)
        except requests.RequestException:
            statuses.append("dropped")

    threads = [threading.Thread(target=writer) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses.count(204) >= 1
    # Behind nginx a loser whose connection CaseFiles closed mid-body is a 502 from nginx instead.
    assert set(statuses) <= {204, 409, "dropped", *([502] if BEHIND_PROXY else [])}, statuses
    assert head_offset(server, url) == 8 * MiB  # no byte was committed twice
    assert patch(server, url, 8 * MiB, data[8 * MiB:]).status_code == 204
    listing = attachments(server)["attachments"]
    assert listing[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert blob_bytes(server, listing[0]["id"]) == data
    SUMMARY["concurrent writers refused or dropped while one won"] += len(statuses) - statuses.count(204)


def test_a_delete_during_a_patch_wins_cleanly(server):
    data = pattern(8 * MiB, seed=91)
    url = create(server, len(data), "deleted.log")
    sock = _raw_patch_start(server, url, 0, len(data), data[:2 * MiB])
    time.sleep(0.3)
    deleted = requests.delete(url, headers=auth(server.customer), timeout=10)
    assert deleted.status_code == 204
    assert read_status(sock, 10).startswith("HTTP/1.1 409")  # the PATCH stopped, kept its bytes, then lost
    sock.close()
    assert requests.head(url, headers=auth(server.customer), timeout=10).status_code == 410
    upload_id = url.rsplit("/", 1)[1]
    assert not blob_exists(server, upload_id)


def test_a_case_closed_during_a_patch_gets_no_more_bytes(server):
    data = pattern(8 * MiB, seed=92)
    url = create(server, len(data), "late.log")
    sock = _raw_patch_start(server, url, 0, len(data), data[:2 * MiB])
    time.sleep(0.3)
    closed = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", json={"subStatus": "Resolved"},
                           headers=auth(server.customer), timeout=10)
    assert closed.status_code == 200
    sock.sendall(data[2 * MiB:])
    status = read_status(sock, 10)
    sock.close()
    assert status.startswith("HTTP/1.1 403"), status
    assert head_offset(server, url) == 0  # nothing was committed after the case closed


def test_a_superseded_writer_that_keeps_sending_is_let_go_at_once(server):
    """Its body stream was stopped, so the server answers 409 and closes the connection instead of leaving
    a client that is still sending blocked until its own timeout."""
    data = pattern(64 * MiB, seed=93)
    url = create(server, len(data), "superseded.log")
    sock = _raw_patch_start(server, url, 0, len(data), data[:2 * MiB])
    time.sleep(0.3)
    # The newer writer takes over; the old one commits what it verified first, so a HEAD taken before
    # that may be stale (409), and the newcomer asks again.
    for _ in range(2):
        offset = head_offset(server, url)
        taken_over = patch(server, url, offset, data[offset:offset + MiB])
        if taken_over.status_code == 204:
            break
    assert taken_over.status_code == 204, taken_over.text
    started = time.monotonic()
    sock.settimeout(10)
    answer = ""
    try:
        sock.sendall(data[2 * MiB:])  # the old client goes on sending the rest of its 64 MiB
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        answer = read_status(sock, 5)
    except ConnectionResetError:
        answer = "reset"
    sock.close()
    assert time.monotonic() - started < 8, "the old client was left blocked"
    assert answer.startswith("HTTP/1.1 409") or answer in ("reset", ""), answer
    assert head_offset(server, url) == offset + MiB  # nothing the old writer sent later was committed


def read_answer(sock, timeout) -> tuple[str, dict[str, str], bytes]:
    """The status line, the headers (lower-case names) and the body of the answer, read until the server closes."""
    sock.settimeout(timeout)
    received = b""
    try:
        while piece := sock.recv(65536):
            received += piece
    except (socket.timeout, ConnectionResetError):
        pass
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode(errors="replace").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


def test_a_patch_stopped_by_sigterm_answers_503_with_retry_after_not_superseded(server):
    """Shutdown is not a newer writer: the PATCH in flight commits what arrived and answers 503
    `shutting_down` with `Retry-After`, so the client waits and resumes instead of treating it as a conflict."""
    data = pattern(8 * MiB, seed=94)
    url = create(server, len(data), "restart.log")
    sock = _raw_patch_start(server, url, 0, len(data), data[:2 * MiB])
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    status, headers, body = read_answer(sock, 10)
    sock.close()
    assert server.process.wait(timeout=30) == 0
    assert status.startswith("HTTP/1.1 503"), status
    assert headers.get("retry-after") == "5", headers
    assert headers.get("tus-resumable") == "1.0.0", headers
    assert json.loads(body)["error"] == "shutting_down"

    server.start()
    assert head_offset(server, url) == 2 * MiB  # what arrived before SIGTERM was committed
    assert patch(server, url, 2 * MiB, data[2 * MiB:]).status_code == 204


def test_many_mixed_requests_at_once_all_get_answers(server):
    # Synchronous key lookups (token, upload) and pooled asynchronous reads (case, attachment list) at
    # once: 48 clients must all be answered. A synchronous wait for a pooled SQLite connection on the
    # cooperative threads once deadlocked the whole server here, with every reader held by a task
    # waiting for those same threads.
    urls = [create(server, MiB, f"probe{i}.log") for i in range(8)]
    case_url = f"{server.url}/api/v1/cases/{server.case}"
    outcomes = collections.Counter()
    lock = threading.Lock()

    def client(index):
        with requests.Session() as session:
            for round_ in range(25):
                url = urls[(index + round_) % len(urls)]
                try:
                    statuses = (session.head(url, headers=auth(server.customer), timeout=20).status_code,
                                session.get(case_url, headers=auth(server.customer), timeout=20).status_code,
                                session.get(f"{case_url}/attachments", headers=auth(server.engineer),
                                            timeout=20).status_code)
                except requests.RequestException as error:
                    statuses = (type(error).__name__,)
                with lock:
                    outcomes.update(statuses)
                if statuses != (200, 200, 200):
                    return  # a hung server would otherwise cost every client 20 s per request

    threads = [threading.Thread(target=client, args=(i,)) for i in range(48)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert outcomes == {200: 48 * 25 * 3}, outcomes
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    SUMMARY["concurrent mixed requests answered"] += sum(outcomes.values())
