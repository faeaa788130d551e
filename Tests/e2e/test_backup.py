"""End-to-end backups: `casefiles backup` while uploads run, `casefiles restore` into a new root served again,
`casefiles verify` finding bit rot, and the backup lease holding off the purge."""
import datetime
import hashlib
import os
import sqlite3
import stat
import subprocess
import threading
import time

import pytest
import requests

from conftest import BINARY, Server
from helpers import auth
from helpers import pattern
from test_downloads import upload_file
from test_faults import resume_to_the_end
from test_retention import blob_ids, run_purge
from test_uploads import MiB, attachments, create, head_offset, patch


def casefiles(*args, storage=None):
    command = [str(BINARY), *args] + (["--storage", str(storage)] if storage else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def upload_slowly(server, url, data, progress, chunk=MiB):
    """Real tus PATCHes of 1 MiB, with a pause, so the upload is still running when the backup starts."""
    offset = 0
    while offset < len(data):
        piece = data[offset:offset + chunk]
        response = patch(server, url, offset, piece)
        assert response.status_code == 204, response.text
        offset += len(piece)
        progress[url] = offset
        time.sleep(0.05)


def assert_private(root):
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"


def download_sha256(server, attachment_id):
    response = requests.get(f"{server.url}/api/v1/attachments/{attachment_id}/content",
                            headers=auth(server.engineer), timeout=60)
    assert response.status_code == 200
    return hashlib.sha256(response.content).hexdigest()


@pytest.mark.sqlite_only  # `casefiles backup` copies the SQLite file; a PostgreSQL database is backed up with pg_dump
def test_a_backup_taken_while_four_uploads_run_restores_into_a_new_root(server, tmp_path):
    before = {upload_file(server, data, f"before-{n}.log"): hashlib.sha256(data).hexdigest()
              for n, data in enumerate(pattern(3 * MiB + 17 * n, seed=90 + n) for n in range(3))}
    running = [pattern(24 * MiB + 4099 * n, seed=95 + n) for n in range(4)]
    urls = [create(server, len(data), f"running-{n}.bin", sha256=hashlib.sha256(data).hexdigest())
            for n, data in enumerate(running)]
    progress, failures = {}, []

    def upload(url, data):
        try:
            upload_slowly(server, url, data, progress)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=upload, args=pair) for pair in zip(urls, running)]
    for thread in threads:
        thread.start()
    while len(progress) < 4 and not failures:
        time.sleep(0.05)
    backup = tmp_path / "backup"
    made = casefiles("backup", str(backup), storage=server.storage)
    offsets_after_backup = dict(progress)
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert made.returncode == 0, made.stderr + made.stdout
    assert "database integrity ok" in made.stdout
    assert any(offset < len(data) for offset, data in zip(offsets_after_backup.values(), running)), \
        "the uploads should still have been running when the backup ended"
    assert_private(backup)

    restored = tmp_path / "restored" / "Storage"
    done = casefiles("restore", str(backup), storage=restored)
    assert done.returncode == 0, done.stderr + done.stdout
    assert_private(restored)
    again = casefiles("restore", str(backup), storage=restored)
    assert again.returncode != 0 and "is not empty" in again.stderr

    database = sqlite3.connect(restored / "casefiles.sqlite")
    assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    unfinished = dict(database.execute("SELECT id, offset FROM upload WHERE state = 'uploading'").fetchall())
    assert database.execute("SELECT COUNT(*) FROM backupLease").fetchone()[0] == 0
    database.close()

    copy = Server(restored)
    copy.customer, copy.engineer, copy.case = server.customer, server.engineer, server.case
    copy.start()
    try:
        listed = {a["id"]: a["sha256"] for a in attachments(copy)["attachments"] if a["state"] == "verified"}
        assert set(before) <= set(listed)
        for attachment_id, digest in before.items():
            assert listed[attachment_id] == digest
            assert download_sha256(copy, attachment_id) == digest
        # An upload the backup caught part-way resumes on the restored root from the offset the backup committed,
        # and its whole-file SHA-256 still comes out right: the copy holds exactly the committed bytes.
        by_id = {url.rsplit("/", 1)[1]: (url, data) for url, data in zip(urls, running)}
        assert unfinished, "the backup should have caught at least one upload part-way"
        for upload_id, offset in unfinished.items():
            url, data = by_id[upload_id]
            restored_url = copy.url + url[len(server.url):]
            assert head_offset(copy, restored_url) == offset
            assert (restored / "blobs" / upload_id[:2] / upload_id).stat().st_size == offset
            resume_to_the_end(copy, restored_url, data)
            assert download_sha256(copy, upload_id) == hashlib.sha256(data).hexdigest()
    finally:
        copy.stop()


def test_verify_reports_a_flipped_byte_and_a_missing_blob(server):
    first = upload_file(server, pattern(4 * MiB, seed=81), "first.bin")
    second = upload_file(server, pattern(4 * MiB + 5, seed=82), "second.bin")
    clean = casefiles("verify", *server.storage_args())
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "verified 2 attachments (8388613 bytes): 0 problem(s)" in clean.stdout

    started = time.monotonic()
    paced = casefiles("verify", "--rate", "4", *server.storage_args())
    assert paced.returncode == 0
    assert time.monotonic() - started >= 1.8, "8.4 MB at 4 MB/s takes at least 2 s"

    blob = server.storage / "blobs" / first[:2] / first
    with open(blob, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    (server.storage / "blobs" / second[:2] / second).unlink()
    found = casefiles("verify", *server.storage_args())
    assert found.returncode == 1
    problems = [line for line in found.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 2, found.stdout
    flipped = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert any(first in line and f"SHA-256 {flipped}, recorded" in line for line in problems)
    assert any(second in line and "missing" in line for line in problems)
    assert blob.read_bytes()[1_000_000] == byte[0] ^ 0x01, "verify reports, never fixes"


def test_the_purge_waits_while_a_backup_holds_its_lease_and_not_after_it_expires(server):
    ids = [upload_file(server, pattern(MiB + n, seed=40 + n), f"held-{n}.txt") for n in range(2)]
    closed = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", headers={**auth(server.customer),
                           "Content-Type": "application/json"}, json={"subStatus": "Resolved"}, timeout=10)
    assert closed.status_code == 200
    as_of = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def set_lease(expires):
        server.execute("DELETE FROM backupLease")
        server.execute("INSERT INTO backupLease (name, holder, expiresAt) "
                       f"VALUES ('backup', 'crashed', '{expires.strftime('%Y-%m-%d %H:%M:%S.000')}')")

    now = datetime.datetime.now(datetime.timezone.utc)
    set_lease(now + datetime.timedelta(minutes=5))  # a backup running (or crashed a moment ago)
    held = run_purge(server, "--as-of", as_of, "--force")
    assert held.returncode != 0 and "a backup holds the blob-removal lease" in held.stderr
    assert blob_ids(server) == set(ids)

    set_lease(now - datetime.timedelta(seconds=1))  # the crashed backup's lease has expired
    finished = run_purge(server, "--as-of", as_of, "--force")
    assert finished.returncode == 0, finished.stderr
    assert blob_ids(server) == set()


def test_backup_and_restore_refuse_a_postgresql_database_before_making_anything(server, tmp_path):
    """They copy a SQLite file: on PostgreSQL each says what to use instead, and leaves no folder behind."""
    if server.database is None:
        pytest.skip("the metadata is on SQLite here (CASEFILES_TEST_DATABASE unset)")
    destination = tmp_path / "backup"
    refused = casefiles("backup", str(destination), *server.storage_args())
    assert refused.returncode == 1
    assert "the metadata is on PostgreSQL (--database): back it up with pg_dump" in refused.stderr
    assert not destination.exists()
    restored = tmp_path / "restored"
    refused = casefiles("restore", str(destination), "--storage", str(restored), "--database", server.database)
    assert refused.returncode == 1
    assert "the metadata is on PostgreSQL (--database): back it up with pg_dump" in refused.stderr
    assert not restored.exists()
