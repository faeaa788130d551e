"""The fault suite's crash part: named failpoints in the narrow windows, then random SIGKILLs while several
uploads run. After every restart each upload resumes and completes, each attachment's bytes match its SHA-256,
SQLite's integrity check passes and no orphan blob is left. `Scripts/faults --full` runs 50 random kills."""
import hashlib
import os
import random
import sqlite3
import threading
import time

import pytest
import requests

from helpers import SUMMARY, auth, pattern, sha256_header
from test_uploads import MiB, attachments, create

KILLS = int(os.environ.get("FAULTS_KILLS", "8"))


def resume_to_the_end(server, url, data, chunk=2 * MiB, deadline=120):
    """A stubborn client: HEAD, then checksummed chunks, riding out a dead server until done."""
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        try:
            head = requests.head(url, headers=auth(server.customer), timeout=5)
            if head.status_code != 200:
                raise AssertionError(f"HEAD answered {head.status_code}")
            offset = int(head.headers["Upload-Offset"])
            if offset == len(data):
                return
            piece = data[offset:offset + chunk]
            requests.patch(url, data=piece, timeout=30, headers={
                **auth(server.customer), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": sha256_header(piece)})
        except requests.RequestException:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not complete")


def check_consistency(server):
    db = sqlite3.connect(server.storage / "casefiles.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    live = {row[0] for row in db.execute("SELECT id FROM upload WHERE state IN ('uploading', 'verified')")}
    db.close()
    blobs = {p.name for p in (server.storage / "blobs").glob("*/*")}
    assert blobs == live, f"orphans {blobs - live}, missing {live - blobs}"
    for attachment in attachments(server)["attachments"]:
        blob = (server.storage / "blobs" / attachment["id"][:2] / attachment["id"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == attachment["sha256"]
        SUMMARY["bytes verified against their SHA-256 after crashes"] += len(blob)


@pytest.mark.parametrize("failpoint", ["append.after-fsync", "append.after-commit", "complete.before-commit"])
def test_a_crash_in_each_narrow_window_loses_nothing(server, failpoint):
    data = pattern(12 * MiB, seed=60)
    url = create(server, len(data), f"{failpoint}.log", sha256=hashlib.sha256(data).hexdigest())
    server.stop()
    os.environ["CASEFILES_FAILPOINTS"] = f"{failpoint}=2" if failpoint != "complete.before-commit" else f"{failpoint}=1"
    try:
        server.start()
    finally:
        del os.environ["CASEFILES_FAILPOINTS"]
    # Drive until the failpoint kills the server.
    try:
        resume_to_the_end(server, url, data, deadline=20)
    except AssertionError:
        pass
    assert server.process.wait(timeout=30) == -9, "the failpoint should have killed the server"
    SUMMARY["crashes survived (failpoints)"] += 1
    server.start()
    server.stop()  # a clean restart runs the startup sweep
    server.start()
    resume_to_the_end(server, url, data)
    check_consistency(server)
    SUMMARY["uploads completed across crashes"] += 1


def test_random_sigkills_while_several_uploads_run(server):
    rng = random.Random(7)
    files = [pattern((3 + n) * MiB + n * 1000, seed=70 + n) for n in range(4)]
    urls = [create(server, len(data), f"load-{n}.bin", sha256=hashlib.sha256(data).hexdigest())
            for n, data in enumerate(files)]
    errors = []

    def client(url, data):
        try:
            resume_to_the_end(server, url, data, chunk=512 * 1024, deadline=300)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=pair) for pair in zip(urls, files)]
    for thread in threads:
        thread.start()
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.05, 0.4))
        server.kill()
        SUMMARY["crashes survived (random SIGKILL)"] += 1
        server.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    server.stop()
    server.start()  # the startup sweep
    check_consistency(server)
    SUMMARY["uploads completed across crashes"] += len(files)
