"""End-to-end downloads and lifecycle: curl resuming a cut download, downloads beside uploads, SIGTERM; the
storage root's modes, the link-signing key file and its rotation, and what a signed link may serve."""
import base64
import hashlib
import hmac
import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from blobstore import on_object_store
from conftest import BEHIND_PROXY, BINARY, Server, free_port
from helpers import auth, pattern
from test_uploads import MiB, attachments, create, head_offset, patch, stream_patch


def upload_file(server, data: bytes, name: str) -> str:
    url = create(server, len(data), name, sha256=hashlib.sha256(data).hexdigest())
    for start in range(0, len(data), 8 * MiB):
        assert patch(server, url, start, data[start:start + 8 * MiB]).status_code == 204
    return url.rsplit("/", 1)[1]


def larger_than_loopback_buffers_hold():
    """Bytes past what loopback's socket buffers can take in at most (the receive and send maxima: 32 MiB and
    4 MiB here) plus what a client at 8 MB/s reads in a second: a download of this size cannot have been
    written whole before that client is cut (a 24 MiB file could be, and a CI run once logged it completed)."""
    receive = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[2])
    send = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    return receive + send + 16 * MiB


def test_curl_resumes_a_cut_download_and_the_digest_matches(server, tmp_path):
    data = pattern(larger_than_loopback_buffers_hold(), seed=11)
    attachment = upload_file(server, data, "trace.bin")
    url = f"{server.url}/api/v1/attachments/{attachment}/content"
    target = tmp_path / "trace.bin"
    header = f"Authorization: Bearer {server.engineer}"
    cut = subprocess.run(["curl", "-sS", "-o", str(target), "--limit-rate", "8M", "--max-time", "1", "-H", header, url])
    assert cut.returncode == 28, "the first transfer should have been cut by --max-time"
    partial = target.stat().st_size
    assert 0 < partial < len(data)

    resumed = subprocess.run(["curl", "-sS", "-C", "-", "-o", str(target), "-D", "-", "-H", header, url],
                             capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert "206 Partial Content" in resumed.stdout
    assert f"Content-Range: bytes {partial}-{len(data) - 1}/{len(data)}" in resumed.stdout
    assert target.read_bytes() == data
    digest_line = next(line for line in resumed.stdout.splitlines() if line.lower().startswith("repr-digest:"))
    assert digest_line.split(":", 1)[1].strip() == f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"

    log = requests.get(f"{server.url}/api/v1/access-log?attachment={attachment}", headers=auth(server.admin),
                       timeout=10).json()["downloads"]
    assert [entry["status"] for entry in log] == [206, 200]
    assert log[0]["range"] == f"bytes={partial}-"
    # Behind nginx the server sees what nginx read ahead of the cut client, which can be the whole file.
    assert (BEHIND_PROXY or log[1]["completed"] is False) and log[1]["bytesSent"] >= partial


def test_a_slow_download_neither_blocks_nor_is_blocked_by_uploads_to_the_same_case(server):
    data = pattern(32 * MiB, seed=12)
    attachment = upload_file(server, data, "big.log")
    received = bytearray()
    finished = threading.Event()

    def slow_download():
        with requests.get(f"{server.url}/api/v1/attachments/{attachment}/content", headers=auth(server.engineer),
                          stream=True, timeout=60) as response:
            assert response.status_code == 200
            for piece in response.iter_content(MiB):
                received.extend(piece)
                time.sleep(0.1)
        finished.set()

    reader = threading.Thread(target=slow_download)
    reader.start()
    time.sleep(0.3)
    uploaded = []
    for n in range(3):
        extra = pattern(4 * MiB, seed=100 + n)
        uploaded.append(upload_file(server, extra, f"extra-{n}.log"))
    assert not finished.is_set(), "the uploads should have finished while the download was still streaming"
    reader.join(timeout=60)
    assert bytes(received) == data
    states = {a["id"]: a["state"] for a in attachments(server)["attachments"]}
    assert all(states[i] == "verified" for i in uploaded)


def test_sigterm_during_an_upload_commits_what_arrived_and_exits_0(server):
    data = pattern(48 * MiB, seed=13)
    url = create(server, len(data), "dump.bin", sha256=hashlib.sha256(data).hexdigest())
    sender = threading.Thread(target=lambda: _ignore_errors(
        lambda: stream_patch(server, url, 0, len(data), (data[i:i + MiB] for i in range(0, len(data), MiB)), pause=0.05)))
    sender.start()
    time.sleep(1.0)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    sender.join(timeout=30)

    server.start()
    offset = head_offset(server, url)
    assert 0 < offset < len(data), "the bytes that arrived before SIGTERM were committed"
    assert patch(server, url, offset, data[offset:], checksum=False).status_code == 204
    assert attachments(server)["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def _ignore_errors(action):
    try:
        action()
    except Exception:  # the connection is expected to end early
        pass


# --- The storage root: every path private (folders 0700, files 0600) --------------------------------------

def modes_under(root) -> dict[str, str]:
    """Every path under the root (the root as "."), with its permission bits in octal."""
    found = {".": oct(stat.S_IMODE(root.lstat().st_mode))}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def wanted_modes(root) -> dict[str, str]:
    return {name: oct(0o700 if (root / name).is_dir() else 0o600) for name in modes_under(root)}


def metadata_files(srv) -> set[str]:
    """The storage root's metadata files: SQLite's, or none when the metadata is on PostgreSQL."""
    return set() if srv.database else {"casefiles.sqlite"}


@pytest.mark.skipif(on_object_store(), reason="the modes of blob files: blobs are objects in the object store")
def test_every_path_serve_creates_on_a_fresh_root_is_private(tmp_path):
    previous = os.umask(0o022)  # the usual umask: SQLite alone would make the database 0644, FileManager 0755
    try:
        srv = Server(tmp_path / "Storage")
        srv.start()
    finally:
        os.umask(previous)
    try:
        assert modes_under(srv.storage) == wanted_modes(srv.storage)
        assert {".", "blobs", "link-signing.key"} | metadata_files(srv) <= set(modes_under(srv.storage))
        # On PostgreSQL no SQLite file is made beside the blobs.
        assert srv.database is None or not any(name.startswith("casefiles.sqlite") for name in modes_under(srv.storage))
        srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
        srv.case = srv.cli("cases", "create", "--account", "ACME", "--subject", "modes", "--number", "1413")
        data = pattern(100_000, seed=21)
        url = create(srv, len(data), "a.log", sha256=hashlib.sha256(data).hexdigest())
        assert patch(srv, url, 0, data).status_code == 204
        upload_id = url.rsplit("/", 1)[1]
        modes = modes_under(srv.storage)
        assert modes[f"blobs/{upload_id[:2]}"] == "0o700" and modes[f"blobs/{upload_id[:2]}/{upload_id}"] == "0o600"
        if srv.database is None:
            assert modes["casefiles.sqlite-wal"] == "0o600" and modes["casefiles.sqlite-shm"] == "0o600"
        assert modes == wanted_modes(srv.storage)
    finally:
        srv.stop()


@pytest.mark.skipif(on_object_store(), reason="the modes of blob files: blobs are objects in the object store")
def test_a_cli_command_that_creates_the_root_makes_it_private(tmp_path):
    previous = os.umask(0o022)
    try:
        srv = Server(tmp_path / "Storage")
        srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    finally:
        os.umask(previous)
    modes = modes_under(srv.storage)
    assert modes == wanted_modes(srv.storage)
    assert {".", "blobs", "link-signing.key"} | metadata_files(srv) <= set(modes)
    assert modes["."] == "0o700" and modes["link-signing.key"] == "0o600"
    assert srv.database is not None or modes["casefiles.sqlite"] == "0o600"


@pytest.mark.sqlite_only
def test_a_database_open_to_others_is_warned_about_and_strict_serve_refuses(tmp_path):
    srv = Server(tmp_path / "Storage")
    srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    database = srv.storage / "casefiles.sqlite"
    database.chmod(0o644)
    for leftover in ["casefiles.sqlite-wal", "casefiles.sqlite-shm"]:  # gone or private after the CLI; out of the way
        (srv.storage / leftover).unlink(missing_ok=True)

    refused = subprocess.run([str(BINARY), "serve", "--storage", str(srv.storage), "--port", str(free_port()),
                              "--strict-permissions"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert f"{database} has mode 0644, wants 0600" in refused.stderr
    assert f"chmod 600 '{database}'" in refused.stderr
    assert oct(stat.S_IMODE(database.stat().st_mode)) == "0o644", "nothing is changed behind the operator's back"

    srv.start()  # without the flag: it serves, and says so loudly, one line per path
    srv.stop()
    log = (tmp_path / "server.log").read_text()
    warned = [line for line in log.splitlines() if "open to other users" in line]
    # SQLite gives -wal and -shm the database file's mode, so they are named too.
    assert [line.split("open to other users: ", 1)[1].split(" has mode ")[0] for line in warned] == \
        [str(database), f"{database}-wal", f"{database}-shm"]
    assert all(" has mode 0644 " in line and "chmod 600" in line for line in warned)

    for path in [database, srv.storage / "casefiles.sqlite-wal", srv.storage / "casefiles.sqlite-shm"]:
        path.chmod(0o600)
    srv.start("--strict-permissions")
    srv.stop()


# --- Signed links: the key file, rotation, the stored expiry, the byte budget -----------------------------

def issue_link(server, attachment: str) -> tuple[str, dict]:
    response = requests.post(f"{server.url}/api/v1/attachments/{attachment}/link", headers=auth(server.engineer),
                             timeout=10)
    assert response.status_code == 200, response.text
    return server.url + response.json()["url"], response.json()


def key_file(server) -> dict[str, str]:
    """`link-signing.key` as {"current": hex, "previous": hex}."""
    return dict(line.split(" ", 1) for line in (server.storage / "link-signing.key").read_text().splitlines())


def signed_url(server, attachment: str, nonce: str, expires: int, key_hex: str) -> str:
    sig = hmac.new(bytes.fromhex(key_hex), f"{attachment}|{nonce}|{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{server.url}/api/v1/attachments/{attachment}/content?link={nonce}&expires={expires}&sig={sig}"


def error_of(response) -> str:
    assert response.headers["Content-Type"].startswith("application/json"), (response.status_code, response.content[:80])
    assert response.json()["message"]
    return response.json()["error"]


def test_a_url_signed_with_the_key_file_cannot_outlive_the_links_stored_expiry(server):
    server.stop()
    server.start("--max-link-lifetime", "2s")
    attachment = upload_file(server, pattern(1000, seed=31), "a.log")
    url, issued = issue_link(server, attachment)
    expires_at = datetime.fromisoformat(issued["expiresAt"].replace("Z", "+00:00"))
    assert expires_at - datetime.now(timezone.utc) <= timedelta(seconds=2)  # capped at the configured maximum
    # The attacker's case: the key read from the key file signs a ten-year expiry for the link's nonce.
    nonce = parse_qs(urlsplit(url).query)["link"][0]
    forged = signed_url(server, attachment, nonce, int(time.time()) + 10 * 365 * 86400, key_file(server)["current"])
    assert requests.head(forged, timeout=10).status_code == 200  # genuine signature, and the row is still live
    time.sleep(2.5)
    for attempt in [forged, url]:
        refused = requests.get(attempt, timeout=10)
        assert (refused.status_code, error_of(refused)) == (403, "invalid_link")

    # A link issued under a longer maximum stops once the current maximum has passed since it was issued.
    server.stop()
    server.start("--max-link-lifetime", "1h")
    long_url, _ = issue_link(server, attachment)
    assert requests.head(long_url, timeout=10).status_code == 200
    server.stop()
    server.start("--max-link-lifetime", "2s")
    time.sleep(2.5)
    refused = requests.get(long_url, timeout=10)
    assert (refused.status_code, error_of(refused)) == (403, "invalid_link")


def test_a_rotation_keeps_links_of_the_previous_key_and_refuses_older_ones(server):
    attachment = upload_file(server, pattern(1000, seed=32), "a.log")
    old_url, _ = issue_link(server, attachment)
    first_key = key_file(server)["current"]
    server.cli("keys", "rotate-link-key")  # while serve runs: it picks the new key up by itself
    keys = key_file(server)
    assert keys["previous"] == first_key and keys["current"] != first_key
    assert oct(stat.S_IMODE((server.storage / "link-signing.key").stat().st_mode)) == "0o600"
    assert requests.head(old_url, timeout=10).status_code == 200
    new_url, _ = issue_link(server, attachment)
    query = parse_qs(urlsplit(new_url).query)
    assert new_url == signed_url(server, attachment, query["link"][0], int(query["expires"][0]), keys["current"])

    server.cli("keys", "rotate-link-key")
    refused = requests.get(old_url, timeout=10)  # signed with the key two rotations old
    assert (refused.status_code, error_of(refused)) == (403, "invalid_link")
    assert requests.get(new_url, timeout=10).content == pattern(1000, seed=32)


def test_range_from_zero_again_and_again_is_refused_at_the_third_whole_file(server):
    data = pattern(MiB, seed=33)
    attachment = upload_file(server, data, "a.log")
    url, _ = issue_link(server, attachment)
    for _ in range(2):
        served = requests.get(url, headers={"Range": "bytes=0-"}, timeout=10)
        assert served.status_code == 206 and served.content == data
    refused = requests.get(url, headers={"Range": "bytes=0-"}, timeout=10)
    assert (refused.status_code, error_of(refused)) == (410, "link_used_up")
    assert "new link" in refused.json()["message"]

    url, _ = issue_link(server, attachment)  # a Range the server cannot parse is ignored: it counts as whole
    for value in ["bytes=abc", "items=0-1"]:
        served = requests.get(url, headers={"Range": value}, timeout=10)
        assert served.status_code == 200 and served.content == data
    refused = requests.get(url, headers={"Range": "bytes=0-0"}, timeout=10)
    assert (refused.status_code, error_of(refused)) == (410, "link_used_up")


def test_a_cut_download_through_a_link_is_charged_what_was_sent(server, tmp_path):
    data = pattern(48 * MiB, seed=34)
    attachment = upload_file(server, data, "big.bin")
    url, _ = issue_link(server, attachment)
    target = tmp_path / "big.bin"
    cut = subprocess.run(["curl", "-sS", "-o", str(target), "--limit-rate", "8M", "--max-time", "1", url])
    assert cut.returncode == 28
    resumed = subprocess.run(["curl", "-sS", "-f", "-C", "-", "-o", str(target), url], timeout=60)
    assert resumed.returncode == 0 and target.read_bytes() == data
    # About one file served so far (plus what sat in socket buffers when the cut came), of a budget of two:
    # half the file again fits, which it would not if the cut response had been charged whole.
    half = requests.get(url, headers={"Range": f"bytes={len(data) // 2}-"}, timeout=60)
    assert half.status_code == 206 and half.content == data[len(data) // 2:]
    refused = requests.get(url, timeout=10)
    assert (refused.status_code, error_of(refused)) == (410, "link_used_up")


@pytest.mark.sqlite_only
def test_a_key_kept_in_the_database_moves_to_the_key_file_and_its_links_keep_working(server):
    data = pattern(1000, seed=35)
    attachment = upload_file(server, data, "a.log")
    server.stop()
    # Put the storage back the way a release before the key file left it: the key in the settings table,
    # links without a byte count or issue time, the v5 migration not applied, no key file.
    legacy_key = secrets.token_hex(32)
    nonce = secrets.token_hex(16)
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    database = sqlite3.connect(server.storage / "casefiles.sqlite")
    with database:
        database.execute("DELETE FROM grdb_migrations WHERE identifier LIKE 'v5:%'")
        database.execute("ALTER TABLE downloadLink DROP COLUMN bytesServed")
        database.execute("ALTER TABLE downloadLink DROP COLUMN issuedAt")
        database.execute("INSERT INTO setting (key, value) VALUES ('link-signing-key', ?)", [legacy_key])
        user_id = database.execute("SELECT id FROM user WHERE name = 'erin'").fetchone()[0]
        database.execute("INSERT INTO downloadLink (nonce, uploadID, userID, expiresAt) VALUES (?, ?, ?, ?)",
                         [nonce, attachment, user_id, expires.strftime("%Y-%m-%d %H:%M:%S.000")])
    database.close()
    (server.storage / "link-signing.key").unlink()

    server.start()
    url = signed_url(server, attachment, nonce, int(expires.timestamp()), legacy_key)
    assert requests.get(url, timeout=10).content == data
    assert key_file(server) == {"current": legacy_key}
    assert oct(stat.S_IMODE((server.storage / "link-signing.key").stat().st_mode)) == "0o600"
    database = sqlite3.connect(server.storage / "casefiles.sqlite")
    assert database.execute("SELECT COUNT(*) FROM setting WHERE key = 'link-signing-key'").fetchone() == (0,)
    database.close()
