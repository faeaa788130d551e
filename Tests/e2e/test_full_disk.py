"""A full disk: the storage root on a small tmpfs. Creation beyond the free space gets 507 at once; a disk
that fills during a PATCH gets 507, the offset stays at the last durable byte, other requests keep working,
and once space is freed the upload resumes and verifies."""
import hashlib
import sqlite3
import subprocess

import pytest
import requests

from conftest import Server
from helpers import SUMMARY, auth, pattern
from test_uploads import MiB, attachments, create, head_offset, patch


@pytest.fixture
def small_server(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a small filesystem ({result.stderr.strip()})")
    srv = Server(mount / "Storage")
    try:
        srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
        srv.engineer = srv.cli("users", "create", "erin", "--role", "engineer")
        srv.case = srv.cli("cases", "create", "--account", "ACME", "--subject", "full disk", "--number", "1413")
        srv.start()
        yield srv
    finally:
        srv.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_507_and_the_upload_resumes_once_space_is_freed(small_server):
    server = small_server
    too_big = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10, headers={
        **auth(server.customer), "Upload-Length": str(100 * MiB), "Upload-Metadata": "filename eA=="})
    assert too_big.status_code == 507 and too_big.json()["error"] == "insufficient_storage"

    kept = pattern(2 * MiB, seed=80)
    kept_url = create(server, len(kept), "kept.log")
    assert patch(server, kept_url, 0, kept).status_code == 204

    data = pattern(24 * MiB, seed=81)
    url = create(server, len(data), "big.log", sha256=hashlib.sha256(data).hexdigest())
    assert patch(server, url, 0, data[:4 * MiB]).status_code == 204
    filler = server.storage.parent / "filler.bin"
    free = int(subprocess.run(["df", "--output=avail", "-B1", str(server.storage)], capture_output=True,
                              text=True).stdout.split()[-1])
    with open(filler, "wb") as f:  # leave about 6 MiB: the next 20 MiB cannot fit
        f.write(b"\0" * (free - 6 * MiB))

    full = patch(server, url, 4 * MiB, data[4 * MiB:], checksum=False)
    assert full.status_code == 507, full.text
    SUMMARY["full-disk failures answered 507 and recovered"] += 1
    assert full.json()["error"] == "insufficient_storage"
    assert head_offset(server, url) == 4 * MiB  # the last durable byte
    # Everything else keeps working: reads, listings, downloads.
    assert attachments(server)["attachments"][0]["filename"] == "kept.log"
    kept_id = kept_url.rsplit("/", 1)[1]
    download = requests.get(f"{server.url}/api/v1/attachments/{kept_id}/content", headers=auth(server.engineer), timeout=10)
    assert download.status_code == 200 and download.content == kept

    filler.unlink()
    assert patch(server, url, 4 * MiB, data[4 * MiB:]).status_code == 204
    done = {a["filename"]: a["sha256"] for a in attachments(server)["attachments"]}
    assert done["big.log"] == hashlib.sha256(data).hexdigest()


def test_sqlite_on_a_full_disk_is_507_and_the_service_stays_up(small_server):
    """The database lives on the same small filesystem: once not a byte is left, writes to SQLite itself fail.
    Each such request gets 507 with a JSON body, reads keep working, and writes work again once space is freed."""
    server = small_server
    kept = create(server, 4, "kept.log")
    assert patch(server, kept, 0, b"kept").status_code == 204
    filler = server.storage.parent / "filler.bin"
    with open(filler, "wb", buffering=0) as f:  # every last byte: SQLite's own writes (WAL, journal) now fail
        for block in (MiB, 4096):
            try:
                while f.write(b"\0" * block):
                    pass
            except OSError:
                pass
    statuses = []
    for i in range(300):  # WAL pages already allocated absorb the first writes; bounded either way
        response = requests.post(f"{server.url}/api/v1/cases", timeout=10, json={"account": "ACME", "subject": f"full {i}"},
                                 headers=auth(server.engineer))
        statuses.append(response.status_code)
        if response.status_code != 201:
            break
    assert statuses[-1] == 507, statuses[-5:]
    assert set(statuses) <= {201, 507}
    assert response.json()["error"] == "insufficient_storage" and "disk" in response.json()["message"]
    # Reads keep working while the disk is full.
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert head_offset(server, kept) == 4
    listing = requests.get(f"{server.url}/api/v1/cases", headers=auth(server.engineer), timeout=10)
    assert listing.status_code == 200

    filler.unlink()
    again = requests.post(f"{server.url}/api/v1/cases", json={"account": "ACME", "subject": "space again"},
                          headers=auth(server.engineer), timeout=10)
    assert again.status_code == 201, again.text
    SUMMARY["full-disk failures answered 507 and recovered"] += 1
    with sqlite3.connect(server.storage / "casefiles.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
