"""End-to-end retention: the purge CLI killed part-way (SIGKILL) and run again ends consistent."""
import datetime
import os
import subprocess

import requests

from blobstore import stored_blob_ids
from conftest import BINARY
from helpers import auth, pattern
from test_downloads import upload_file
from test_uploads import MiB, attachments


def run_purge(server, *args, failpoints=None):
    env = dict(server.environment)  # the object store's settings too, when the suite uses one
    if failpoints:
        env["CASEFILES_FAILPOINTS"] = failpoints
    return subprocess.run([str(BINARY), "purge", *args, *server.storage_args()],
                          capture_output=True, text=True, timeout=120, env=env)


def blob_ids(server) -> set[str]:
    return stored_blob_ids(server)


def test_a_purge_killed_part_way_completes_on_the_next_run(server):
    ids = [upload_file(server, pattern(2 * MiB + n, seed=20 + n), f"log-{n}.txt") for n in range(4)]
    closed = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", headers={**auth(server.customer),
                           "Content-Type": "application/json"}, json={"subStatus": "Resolved"}, timeout=10)
    assert closed.status_code == 200
    as_of = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")

    refused = run_purge(server, "--as-of", as_of)
    assert refused.returncode != 0 and "future" in refused.stderr
    dry = run_purge(server, "--dry-run", "--as-of", as_of)
    assert dry.returncode == 0, dry.stderr
    assert f"would purge case {server.case}" in dry.stdout and "4 items" in dry.stdout
    assert blob_ids(server) == set(ids), "a dry run changes nothing"

    # Killed with SIGKILL right after the second tombstone was committed, before its file was removed.
    killed = run_purge(server, "--as-of", as_of, "--force", failpoints="purge.after-tombstone=2")
    assert killed.returncode == -9
    assert len(blob_ids(server)) == 3  # one file removed, the second's tombstone committed but file still there

    finished = run_purge(server, "--as-of", as_of, "--force")
    assert finished.returncode == 0, finished.stderr
    assert blob_ids(server) == set(), "no blob left that no live row owns"

    listing = attachments(server)["attachments"]
    assert sorted(a["id"] for a in listing) == sorted(ids)
    assert all(a["state"] == "purged" for a in listing)

    log = run_purge(server, "log", "--items")
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    runs = [line for line in lines if line.startswith("run ") and "  cli  " in line]
    assert len(runs) == 2
    assert "finished" in runs[0] and "items 2" in runs[0]
    assert "interrupted" in runs[-1] and "items 2" in runs[-1]
    assert sum(1 for line in lines if line.startswith("  ")) == 4  # every item audited exactly once, across both runs
    runs_api = requests.get(f"{server.url}/api/v1/purge-runs", headers=auth(server.admin), timeout=10).json()["runs"]
    assert sum(r["bytesFreed"] for r in runs_api) == sum(2 * MiB + n for n in range(4))

    reopen = requests.post(f"{server.url}/api/v1/cases/{server.case}/reopen", headers=auth(server.customer), timeout=10)
    assert reopen.status_code == 409
    assert reopen.json()["error"] == "reopen_window_passed"
