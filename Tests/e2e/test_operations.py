"""Operations: /metrics on its own listener (parsed with prometheus_client's text parser), one structured log
line per request that never carries a credential, and /readyz (free space, SIGTERM)."""
import hashlib
import json
import os
import socket
import subprocess
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import BINARY, Server, free_port
from helpers import TUS, auth, metadata, pattern, sha256_header


def scrape(url: str) -> dict:
    """Every sample as {(name, frozenset(labels)): value}. The parser names every counter's sample `..._total`,
    also those exposed under tusd's names without it (`casefiles_uploads_created`)."""
    text = requests.get(url + "/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture
def observed(tmp_path):
    """A server with --metrics-listen, JSON logs and a purge every second."""
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: build with `swift build` first")
    srv = Server(tmp_path / "Storage")
    srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    srv.admin = srv.cli("users", "create", "adam", "--role", "admin")
    srv.case = srv.cli("cases", "create", "--account", "ACME", "--subject", "Nightly batch crashes", "--number", "1413")
    srv.metrics_url = f"http://127.0.0.1:{free_port()}"
    srv.start("--metrics-listen", srv.metrics_url.removeprefix("http://"), "--log-format", "json",
              "--purge-interval", "1s")
    yield srv
    srv.stop()


def upload(srv, data: bytes, name: str) -> str:
    created = requests.post(f"{srv.url}/api/v1/cases/1413/uploads", timeout=10, headers={
        **auth(srv.customer), "Upload-Length": str(len(data)),
        "Upload-Metadata": metadata(name, hashlib.sha256(data).hexdigest())})
    assert created.status_code == 201
    location = srv.url + created.headers["Location"]
    done = requests.patch(location, data=data, timeout=30, headers={
        **auth(srv.customer), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": sha256_header(data)})
    assert done.status_code == 204
    return location.rsplit("/", 1)[1]


def test_metrics_count_a_representative_sequence_and_logs_carry_no_credential(observed):
    srv = observed
    assert requests.get(srv.url + "/metrics", timeout=5).status_code == 404  # the API listener does not serve it
    first, second = pattern(300_000, seed=1), pattern(200_000, seed=2)
    first_id = upload(srv, first, "a.log")
    upload(srv, second, "b.log")

    # A chunk whose Upload-Checksum does not match: 460, nothing kept.
    created = requests.post(f"{srv.url}/api/v1/cases/1413/uploads", timeout=10, headers={
        **auth(srv.customer), "Upload-Length": "1000", "Upload-Metadata": metadata("c.log")})
    location = srv.url + created.headers["Location"]
    bad = requests.patch(location, data=b"x" * 1000, timeout=10, headers={
        **auth(srv.customer), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": sha256_header(b"y" * 1000)})
    assert bad.status_code == 460
    assert requests.delete(location, headers=auth(srv.customer), timeout=10).status_code == 204

    # A signed-link download of the first file, and a request with a token that is not one.
    link = requests.post(f"{srv.url}/api/v1/attachments/{first_id}/link", headers=auth(srv.customer), timeout=10).json()["url"]
    download = requests.get(srv.url + link, timeout=30, headers={"X-Request-Id": "trace-abc.123"})
    assert download.content == first
    assert download.headers["X-Request-Id"] == "trace-abc.123"
    generated = requests.get(srv.url + "/healthz", headers={"X-Request-Id": "bad id with spaces"}, timeout=5)
    assert generated.headers["X-Request-Id"] != "bad id with spaces" and len(generated.headers["X-Request-Id"]) >= 16
    wrong_token = "cf_not-a-real-token-4242424242"
    assert requests.get(f"{srv.url}/api/v1/cases", headers=auth(wrong_token), timeout=5).status_code == 401

    # The retention purge (run by serve every second): close the case, then move its closure 40 days back.
    srv.cli("cases", "close", "1413")
    closed = (datetime.now(timezone.utc) - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S.000")
    with sqlite3.connect(srv.storage / "casefiles.sqlite") as db:
        db.execute("UPDATE supportCase SET closedAt = ? WHERE number = ?", (closed, srv.case))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and value(scrape(srv.metrics_url), "casefiles_purged_items_total") < 2:
        time.sleep(0.3)

    m = scrape(srv.metrics_url)
    assert value(m, "casefiles_uploads_created_total") == 3
    assert value(m, "casefiles_uploads_finished_total") == 2
    assert value(m, "casefiles_uploads_terminated_total") == 1
    assert value(m, "casefiles_checksum_mismatches_total", algorithm="sha256") == 1
    assert value(m, "casefiles_purged_items_total") == 2
    assert value(m, "casefiles_purged_bytes_total") == len(first) + len(second)
    assert value(m, "casefiles_requests_total", method="PATCH", route="/api/v1/uploads/{id}", status="204") == 2
    assert value(m, "casefiles_requests_total", method="PATCH", route="/api/v1/uploads/{id}", status="460") == 1
    assert value(m, "casefiles_requests_total", method="POST", route="/api/v1/cases/{number}/uploads", status="201") == 3
    assert value(m, "casefiles_requests_total", method="GET", route="/api/v1/attachments/{id}/content", status="200") == 1
    assert value(m, "casefiles_errors_total", status="460", code="checksum_mismatch") == 1
    assert value(m, "casefiles_errors_total", status="401", code="invalid_token") == 1
    assert value(m, "casefiles_request_duration_seconds_count", method="PATCH", route="/api/v1/uploads/{id}") == 3
    assert value(m, "casefiles_request_duration_seconds_sum", method="PATCH", route="/api/v1/uploads/{id}") > 0
    # Bytes: both uploads' bodies and the mismatched chunk in; the download out (plus small JSON answers).
    assert value(m, "casefiles_bytes_received_total") == len(first) + len(second) + 1000
    assert len(first) <= value(m, "casefiles_bytes_sent_total") < len(first) + 4096
    assert value(m, "casefiles_uploads_in_flight") == 0
    assert value(m, "casefiles_connections_open") >= 0 and value(m, "casefiles_blob_store_free_bytes") > 0
    assert value(m, "casefiles_database_size_bytes") > 0
    assert value(m, "casefiles_purge_duration_seconds_count") >= 1

    # One JSON line per request, with the route template and the user's id; no credential in any line.
    lines = [json.loads(line) for line in (srv.storage.parent / "server.log").read_text().splitlines()
             if line.startswith("{")]
    requests_logged = [line for line in lines if line["msg"] == "request"]
    patch = next(l for l in requests_logged if l["method"] == "PATCH" and l["status"] == "204")
    assert patch["route"] == "/api/v1/uploads/{id}" and patch["upload_id"] == first_id
    assert patch["bytes_in"] == str(len(first)) and patch["user_id"] == "1" and "duration_ms" in patch
    assert next(l for l in requests_logged if l["status"] == "460")["error"] == "checksum_mismatch"
    got = next(l for l in requests_logged if l["request_id"] == "trace-abc.123")
    assert got["bytes_out"] == str(len(first)) and got["user_id"] == "1" and got["route"] == "/api/v1/attachments/{id}/content"
    query = dict(part.split("=", 1) for part in link.split("?", 1)[1].split("&"))
    log_text = (srv.storage.parent / "server.log").read_text()
    for secret in (srv.customer, srv.admin, wrong_token, query["sig"], query["link"]):
        assert secret not in log_text


def test_readyz_is_503_naming_free_space_below_the_reserve(tmp_path):
    srv = Server(tmp_path / "Storage")
    srv.start()
    ready = requests.get(srv.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    srv.stop()
    srv.start("--min-free-space", str(10**18))
    low = requests.get(srv.url + "/readyz", timeout=5)
    assert low.status_code == 503 and low.json()["error"] == "not_ready"
    assert "free_space:" in low.json()["message"] and "database" not in low.json()["message"]
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
    srv.stop()


def test_readyz_turns_503_at_sigterm_while_a_request_finishes(observed):
    srv = observed
    assert requests.get(srv.metrics_url + "/readyz", timeout=5).status_code == 200
    # A request in flight: a JSON body sent in part, which the server waits for.
    body = json.dumps({"account": "ACME", "subject": "In flight"}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall((f"POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.admin}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body[:5])
    time.sleep(0.3)
    srv.process.terminate()
    time.sleep(0.5)
    assert srv.process.poll() is None  # still draining
    during = requests.get(srv.metrics_url + "/readyz", timeout=5)
    assert during.status_code == 503 and during.json()["error"] == "not_ready"
    assert "shutdown:" in during.json()["message"]
    sock.sendall(body[5:])
    answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 201")
    sock.close()
    assert srv.process.wait(timeout=20) == 0


# --- Thread priorities (issue #16; ThreadPriority in CaseFilesStorage) ---

CAP_SYS_NICE = 23
CAP_SYS_RESOURCE = 24  # raising RLIMIT_NICE's hard limit (some containers, this machine kind's among them, lack it)
# Root without CAP_SYS_NICE: what an unprivileged service has (dropping it from the bounding set needs root).
WITHOUT_CAP_SYS_NICE = ("setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice")
# RLIMIT_NICE 30 = nice -10 allowed without a capability: what the packaged unit's `LimitNICE=-10` gives.
NICE_LIMIT_MINUS_10 = ("prlimit", "--nice=30")


def has_capability(bit: int) -> bool:
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def has_cap_sys_nice() -> bool:
    return has_capability(CAP_SYS_NICE)


def threads_by_kind(pid: int) -> dict[str, list[tuple[str, int]]]:
    """Each thread's name and nice value (/proc/PID/task/*/stat, field 19), by kind (the name without its
    number): `NIO-SGLTN` (the event loops), `TP` (thread pools), `casefiles` (the main thread)."""
    kinds: dict[str, list[tuple[str, int]]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            nice = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        kinds.setdefault(name.rstrip("0123456789#-"), []).append((name, nice))
    return kinds


def nices(threads: list[tuple[str, int]]) -> list[int]:
    return [nice for _, nice in threads]


def prioritized_server(tmp_path, *extra: str, wrapper: tuple[str, ...] = ()) -> Server:
    srv = Server(tmp_path / "Storage")
    srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    srv.cli("cases", "create", "--account", "ACME", "--subject", "Nightly batch crashes", "--number", "1413")
    srv.start(*extra, wrapper=wrapper)
    return srv


def server_log(srv) -> str:
    return (srv.storage.parent / "server.log").read_text(errors="replace")


def assert_only_the_loops_are_raised(pid: int, loop_nice: int) -> None:
    threads = threads_by_kind(pid)
    loops = threads["NIO-SGLTN"]
    # One thread per loop name: a thread a loop started without naming it would carry the loop's name.
    assert loops and len({name for name, _ in loops}) == len(loops), loops
    assert set(nices(loops)) == {loop_nice}, loops
    others = {kind: found for kind, found in threads.items() if kind != "NIO-SGLTN" and min(nices(found)) <= loop_nice}
    assert not others, others


@pytest.mark.skipif(not has_cap_sys_nice(), reason="raising a thread's priority needs CAP_SYS_NICE (run as root)")
def test_event_loops_run_at_nice_minus_10_and_the_hashing_at_10(tmp_path):
    srv = prioritized_server(tmp_path)
    try:
        assert_only_the_loops_are_raised(srv.process.pid, -10)
        assert 'msg="event loops prioritized" event_loop_nice=-10' in server_log(srv)
        upload(srv, os.urandom(3 * 1024 * 1024), "loops.bin")
        # The pools that hashed the upload run below everyone; still nothing but the loops at -10.
        assert 10 in nices(threads_by_kind(srv.process.pid)["TP"])
        assert_only_the_loops_are_raised(srv.process.pid, -10)
    finally:
        srv.stop()


@pytest.mark.skipif(not (has_cap_sys_nice() and has_capability(CAP_SYS_RESOURCE)),
                    reason="raising RLIMIT_NICE needs CAP_SYS_RESOURCE, and dropping CAP_SYS_NICE root")
def test_the_packaged_units_nice_limit_is_enough_without_a_capability(tmp_path):
    srv = prioritized_server(tmp_path, wrapper=NICE_LIMIT_MINUS_10 + WITHOUT_CAP_SYS_NICE)
    try:
        assert_only_the_loops_are_raised(srv.process.pid, -10)
        assert 'msg="event loops prioritized" event_loop_nice=-10' in server_log(srv)
    finally:
        srv.stop()


def test_without_the_right_the_loops_keep_the_process_priority_and_serve_says_what_to_do(tmp_path):
    srv = prioritized_server(tmp_path, wrapper=WITHOUT_CAP_SYS_NICE if has_cap_sys_nice() else ())
    try:
        threads = threads_by_kind(srv.process.pid)
        assert set(nices(threads["NIO-SGLTN"])) == set(nices(threads["casefiles"])), threads
        log = server_log(srv)
        warning = next(line for line in log.splitlines() if "msg=\"event loops left at the process's priority\"" in line)
        assert "level=warning" in warning and "event_loop_nice=-10" in warning and 'error="Permission denied"' in warning
        assert ('fix="allow it with RLIMIT_NICE (systemd LimitNICE=-10, as the packaged unit does) or CAP_SYS_NICE, '
                'or set event-loop-nice 0 to silence this"') in warning
        assert upload(srv, os.urandom(1024 * 1024), "unprivileged.bin")  # and it serves all the same
    finally:
        srv.stop()


def test_event_loop_nice_0_leaves_the_loops_alone_and_other_values_are_refused(tmp_path):
    for value in ("5", "-21", "high"):
        refused = subprocess.run([str(BINARY), "serve", "--storage", str(tmp_path / "unused"), "--event-loop-nice", value],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert f"event-loop-nice (flag --event-loop-nice): expected a nice value, -20 to 0, got '{value}'" in refused.stderr
    srv = prioritized_server(tmp_path, "--event-loop-nice", "0")
    try:
        threads = threads_by_kind(srv.process.pid)
        assert set(nices(threads["NIO-SGLTN"])) == set(nices(threads["casefiles"])), threads
        assert "event loops" not in server_log(srv)  # neither raised nor a warning: nothing was asked
    finally:
        srv.stop()
