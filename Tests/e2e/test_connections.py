"""Connections that never finish: each slow-client shape is closed within its deadline while a normal client
keeps working, and a server with few descriptors keeps answering under more idle connections than it has
descriptors. Also the HTTP/1.x rules that depend on the connection: HTTP/1.0 and `Connection: close`."""
import hashlib
import re
import socket
import threading
import time
from pathlib import Path

import requests

from helpers import SUMMARY, auth, pattern
from test_uploads import MiB, create, patch

DEADLINE = 2.0
FLAGS = ["--header-timeout", "2s", "--body-timeout", "2s", "--idle-timeout", "2s", "--send-timeout", "2s"]


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """Reads (and discards) until the server closes; the seconds that took, or None if still open at `limit`."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def connect(server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    return sock


def test_each_slow_client_shape_is_closed_within_its_deadline(server):
    server.stop()
    server.start(*FLAGS)
    # An attachment large enough that its response cannot fit in the socket buffers of a client that never reads.
    big = pattern(48 * MiB, seed=70)
    big_url = create(server, len(big), "big.log")
    assert patch(server, big_url, 0, big).status_code == 204
    content = "/api/v1/attachments/" + big_url.rsplit("/", 1)[1] + "/content"

    # A normal client works throughout (HEAD probes, an upload in 1 MiB chunks), on keep-alive connections.
    stop, normal_failures, normal_requests = threading.Event(), [], [0]

    def normal_client():
        session = requests.Session()
        data = pattern(6 * MiB, seed=71)
        url = create(server, len(data), "normal.log")
        offset = 0
        while not stop.is_set():
            try:
                if offset < len(data):
                    answer = patch(server, url, offset, data[offset:offset + MiB])
                    if answer.status_code != 204:
                        normal_failures.append(f"PATCH {answer.status_code}")
                    offset += MiB
                answer = session.get(server.url + "/healthz", timeout=5)
                if answer.status_code != 200:
                    normal_failures.append(f"healthz {answer.status_code}")
                normal_requests[0] += 2
            except requests.RequestException as error:
                normal_failures.append(repr(error))
            time.sleep(0.1)

    worker = threading.Thread(target=normal_client)
    worker.start()
    try:
        silent = connect(server)                                            # 1. sends nothing
        half = connect(server)                                              # 2. half a header section
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        trickle = connect(server)                                           # 3. trickles a JSON body
        trickle.sendall(b"POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + server.engineer.encode()
                        + b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{")
        idle = connect(server)                                              # 4. idle keep-alive
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = connect(server, rcvbuf=4096)                               # 5. never reads the response
        reader.sendall(f"GET {content} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.engineer}\r\n\r\n".encode())
        started = time.monotonic()

        def drip():  # a byte every 0.3 s: each resets a per-read timer, none extends the body deadline
            for _ in range(30):
                try:
                    trickle.sendall(b" ")
                except OSError:
                    return
                time.sleep(0.3)

        dripping = threading.Thread(target=drip)
        dripping.start()
        results = {}
        for name, sock in [("nothing sent", silent), ("half a header", half), ("trickled body", trickle)]:
            results[name] = seconds_until_closed(sock, 8)
        # Idle keep-alive: its deadline runs from the end of its response.
        results["idle keep-alive"] = seconds_until_closed(idle, 8)
        time.sleep(max(0.0, started + 4.5 - time.monotonic()))
        # The reader never read; by now the send deadline has closed it: reading what was buffered ends early.
        received = 0
        reader.settimeout(5)
        try:
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
        dripping.join(10)
    finally:
        stop.set()
        worker.join(30)

    elapsed = {name: value for name, value in results.items()}
    for name, seconds in elapsed.items():
        assert seconds is not None, f"{name}: still open after 8 s ({elapsed})"
        assert seconds <= DEADLINE + 1.5, f"{name}: closed after {seconds:.1f} s, deadline {DEADLINE} s ({elapsed})"
    assert received < len(big), "the client that never read got the whole file: the send deadline did not cut it"
    assert normal_failures == [], normal_failures
    assert normal_requests[0] >= 10
    # Closures are logged at most every 10 s: the first at once, the rest when the interval ends.
    wanted = [rf"\d+ past the {reason} timeout" for reason in ["header", "body", "idle", "send"]]
    deadline = time.monotonic() + 15
    while True:
        log = (server.storage.parent / "server.log").read_text()
        missing = [pattern for pattern in wanted if not re.search(pattern, log)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert missing == [], f"no log line for {missing}"
    assert len(re.findall(r"closed connections:", log)) <= 2, "closures were not rate-limited"
    SUMMARY["slow connections closed at their deadlines"] += 5


def test_the_trickled_body_is_answered_408_with_a_json_error(server):
    server.stop()
    server.start(*FLAGS)
    sock = connect(server)
    sock.sendall(b"POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + server.engineer.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"acc")
    sock.settimeout(6)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert b'"error":"body_timeout"' in body


def test_more_idle_connections_than_descriptors_do_not_stop_the_service(server):
    server.stop()
    server.start(nofile=256)  # the default cap is then (256 - 64) / 2 = 96 connections
    held = []
    for _ in range(400):
        held.append(socket.create_connection(("127.0.0.1", server.port)))
    time.sleep(0.5)
    pid = server.process.pid

    def cpu_ticks():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = cpu_ticks()
    answered = 0
    for _ in range(20):
        assert requests.get(server.url + "/healthz", timeout=3).status_code == 200
        answered += 1
        held.append(socket.create_connection(("127.0.0.1", server.port)))  # and keep crowding it
    time.sleep(1)
    spent = (cpu_ticks() - before) / 100
    assert spent < 1.0, f"the server burned {spent:.1f} CPU s in ~2 s while the connections were held"
    # An upload still works under the crowd.
    data = pattern(3 * MiB, seed=72)
    url = create(server, len(data), "crowded.log")
    assert patch(server, url, 0, data).status_code == 204
    open_descriptors = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    assert open_descriptors < 256
    log = (server.storage.parent / "server.log").read_text()
    assert re.search(r"closed \d+ idle connection\(s\) to admit new ones at the cap of 96", log), log[-2000:]
    for sock in held:
        sock.close()
    SUMMARY["idle connections beyond the descriptor limit"] += len(held)
    assert answered == 20


def raw_exchange(server, request: bytes, timeout=5) -> tuple[bytes, bool]:
    """Sends `request` and reads until the server closes or `timeout`; (what arrived, whether it closed)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        sock.settimeout(timeout)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
            return received, True
        except socket.timeout:
            return received, False


def test_http10_gets_http10_answers_and_a_closed_connection(server):
    data = b"hello, 1996\n" * 1000
    url = create(server, len(data), "old.log")
    assert patch(server, url, 0, data).status_code == 204
    content = "/api/v1/attachments/" + url.rsplit("/", 1)[1] + "/content"

    received, closed = raw_exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 ") and closed
    assert b"connection: close" in head.lower() and b"transfer-encoding" not in head.lower()
    assert body == b'{"status":"ok"}'

    received, closed = raw_exchange(server, f"GET {content} HTTP/1.0\r\nAuthorization: Bearer {server.engineer}\r\n\r\n".encode())
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 ") and closed and b"transfer-encoding" not in head.lower()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()

    # Expect: 100-continue from an HTTP/1.0 client: never a 1xx (RFC 9110 §15.2), only the final answer.
    fresh = create(server, 4, "expect.log").removeprefix(server.url)
    headers = "".join(f"{name}: {value}\r\n" for name, value in auth(server.customer).items())
    request = (f"PATCH {fresh} HTTP/1.0\r\n{headers}Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
               f"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        sock.settimeout(1.5)
        try:
            early = sock.recv(65536)
        except socket.timeout:
            early = b""
        assert not early.startswith(b"HTTP/1.1 100") and not early.startswith(b"HTTP/1.0 100"), early
        sock.sendall(b"abcd")
        sock.settimeout(5)
        received = early
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.0 204 "), received[:200]

    # HTTP/1.0 with keep-alive is honoured for a response with a Content-Length: two requests on one connection.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.0 200 ") and b"connection: keep-alive" in answer.lower()


def test_connection_close_in_any_case_closes_after_the_response(server):
    for value in ["close", "Close", "keep-alive, close"]:
        received, closed = raw_exchange(server, f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: {value}\r\n\r\n".encode())
        assert received.startswith(b"HTTP/1.1 200 "), value
        assert b"connection: close" in received.lower(), value
        assert closed, f"Connection: {value} left the connection open"


def test_a_refused_upload_request_still_has_a_body_deadline(server):
    """A PATCH refused by its headers (a stale offset, a body past the room left) without its body being read
    must not hold the connection: found open forever, so ten of them took a server capped at ten down."""
    server.stop()
    server.start(*FLAGS, "--max-connections", "4")
    held = []
    for label, offset, length in [("stale offset", 5, 10), ("past the room", 0, 1000)] * 2:
        url = create(server, 100, f"{label}.log").removeprefix(server.url)
        headers = "".join(f"{name}: {value}\r\n" for name, value in auth(server.customer).items())
        sock = connect(server)
        sock.sendall(f"PATCH {url} HTTP/1.1\r\nHost: x\r\n{headers}Upload-Offset: {offset}\r\n"
                     f"Content-Type: application/offset+octet-stream\r\nContent-Length: {length}\r\n\r\n".encode())
        held.append((label, sock))
    for label, sock in held:
        sock.settimeout(5)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 409 ") or answer.startswith(b"HTTP/1.1 413 "), (label, answer[:80])
        seconds = seconds_until_closed(sock, 8)
        assert seconds is not None and seconds <= DEADLINE + 1.5, f"{label}: still open ({seconds})"
    assert requests.get(server.url + "/healthz", timeout=3).status_code == 200


def test_sigterm_cuts_a_download_whose_client_stopped_reading(server):
    data = pattern(48 * MiB, seed=73)
    url = create(server, len(data), "stuck.log")
    assert patch(server, url, 0, data).status_code == 204
    content = "/api/v1/attachments/" + url.rsplit("/", 1)[1] + "/content"
    reader = connect(server, rcvbuf=4096)
    reader.sendall(f"GET {content} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.engineer}\r\n\r\n".encode())
    time.sleep(1)
    started = time.monotonic()
    server.process.terminate()
    server.process.wait(timeout=15)  # the default send deadline is 60 s: shutdown must not wait for it
    assert server.process.returncode == 0
    assert time.monotonic() - started < 10
    reader.close()


def test_http10_keep_alive_survives_a_204_and_chunked_10_closes(server):
    url = create(server, 8, "ten.log").removeprefix(server.url)
    headers = "".join(f"{name}: {value}\r\n" for name, value in auth(server.customer).items())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        for offset in (0, 4):  # two tus chunks on one HTTP/1.0 keep-alive connection: a 204 needs no length
            sock.sendall(f"PATCH {url} HTTP/1.0\r\nConnection: keep-alive\r\n{headers}Upload-Offset: {offset}\r\n"
                         f"Content-Type: application/offset+octet-stream\r\nContent-Length: 4\r\n\r\nabcd".encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.0 204 ") and b"connection: keep-alive" in answer.lower(), answer[:200]
    # HTTP/1.0 has no chunked coding (RFC 9112 §6.1): answered, then closed even with keep-alive asked for.
    received, closed = raw_exchange(server, b"POST /api/v1/cases HTTP/1.0\r\nConnection: keep-alive\r\n"
                                    b"Transfer-Encoding: chunked\r\nAuthorization: Bearer " + server.engineer.encode()
                                    + b"\r\nContent-Type: application/json\r\n\r\n"
                                    b"2\r\n{}\r\n0\r\n\r\n")
    assert received.startswith(b"HTTP/1.0 ") and closed and b"connection: close" in received.lower(), received[:200]


def test_answers_made_below_the_router_carry_nosniff(server):
    received, _ = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 431 ")
    assert b"x-content-type-options: nosniff" in head and b"cache-control: no-store" in head
