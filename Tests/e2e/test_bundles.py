"""Reading inside support bundles without downloading them (issue #21): a fixed-seed .tar.gz of logs and the
same files in a zip64 zip, indexed by the real server; one deep entry read through the API is byte for byte what
`tar -xO` and `unzip -p` give, and inflates at most checkpoint spacing + entry size + 64 KiB."""
import base64
import hashlib
import os
import subprocess
import time
from pathlib import Path

import requests

from bundle_helpers import all_entries, entry, upload_archive, wait_indexed
from helpers import auth
from test_uploads import MiB

ROOT = Path(__file__).resolve().parents[2]
# 256 MiB uncompressed, as the issue asks for CI; CASEFILES_BUNDLE_MIB lowers it on a slow machine.
BUNDLE_MIB = int(os.environ.get("CASEFILES_BUNDLE_MIB", "256"))
DEEP = "logs/ic-server/dialer-2025-07-07.log"


def make_bundle(tmp_path, with_zip=False, mib=None):
    tgz = tmp_path / "support-bundle.tar.gz"
    args = [str(ROOT / "Scripts" / "make-log-bundle"), str(tgz), "--mib", str(mib or BUNDLE_MIB)]
    if with_zip:
        args += ["--zip", str(tmp_path / "support-bundle.zip")]
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    return tgz


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def test_a_deep_tar_gz_entry_inflates_from_the_nearest_checkpoint_and_matches_tar(server, tmp_path):
    tgz = make_bundle(tmp_path)
    expected = subprocess.run(["tar", "-xzOf", str(tgz), DEEP], check=True, capture_output=True).stdout
    assert len(expected) == MiB
    attachment = upload_archive(server, tgz.read_bytes(), tgz.name)
    first = wait_indexed(server, attachment)
    assert (first["state"], first["format"], first["truncated"]) == ("ready", "tar.gz", False)
    spacing = first["checkpointSpacing"]
    assert spacing == 4 * MiB
    names = subprocess.run(["tar", "-tzf", str(tgz)], check=True, capture_output=True, text=True).stdout.split()
    listed = all_entries(server, attachment)
    assert [e["path"] for e in listed] == names
    assert [e["number"] for e in listed] == list(range(1, len(names) + 1))
    deep = next(e for e in listed if e["path"] == DEEP)
    assert (deep["size"], deep["type"], deep["sha256"]) == (MiB, "file", hashlib.sha256(expected).hexdigest())

    response = entry(server, attachment, DEEP)
    assert response.status_code == 200, response.text
    assert response.content == expected
    assert response.headers["Repr-Digest"] == repr_digest(expected)
    assert response.headers["Content-Disposition"].startswith('attachment; filename="dialer-2025-07-07.log"')
    inflated = int(response.headers["CaseFiles-Inflated-Bytes"])
    assert MiB <= inflated <= spacing + MiB + 64 * 1024, inflated

    ranged = entry(server, attachment, DEEP, headers={"Range": "bytes=500000-600000"})
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 500000-600000/{MiB}"
    assert ranged.content == expected[500000:600001]
    assert int(ranged.headers["CaseFiles-Inflated-Bytes"]) <= spacing + 100001

    # Each download is logged when its response ends, just after the client has the last byte.
    deadline = time.monotonic() + 10
    while True:
        log = requests.get(f"{server.url}/api/v1/access-log?attachment={attachment}", headers=auth(server.admin),
                           timeout=10).json()["downloads"]
        if len(log) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(d["entryPath"], d["status"], d["bytesSent"], d["completed"]) for d in log] == [
        (DEEP, 206, 100001, True), (DEEP, 200, MiB, True)]


def test_a_zip64_entry_matches_unzip(server, tmp_path):
    make_bundle(tmp_path, with_zip=True)
    archive = tmp_path / "support-bundle.zip"
    expected = subprocess.run(["unzip", "-p", str(archive), DEEP], check=True, capture_output=True).stdout
    assert len(expected) == MiB
    attachment = upload_archive(server, archive.read_bytes(), archive.name)
    first = wait_indexed(server, attachment)
    assert (first["state"], first["format"], first["truncated"]) == ("ready", "zip", False)
    deep = next(e for e in all_entries(server, attachment) if e["path"] == DEEP)
    assert deep["sha256"] == hashlib.sha256(expected).hexdigest()
    response = entry(server, attachment, DEEP)
    assert response.status_code == 200, response.text
    assert response.content == expected
    assert response.headers["Repr-Digest"] == repr_digest(expected)
    assert int(response.headers["CaseFiles-Inflated-Bytes"]) == MiB  # a zip entry inflates from its own start
    tail = entry(server, attachment, DEEP, headers={"Range": "bytes=-1000"})
    assert tail.status_code == 206 and tail.content == expected[-1000:]


def test_the_listing_pages_by_number_and_filters_by_prefix(server, tmp_path):
    tgz = make_bundle(tmp_path, mib=24)
    attachment = upload_archive(server, tgz.read_bytes(), tgz.name)
    wait_indexed(server, attachment)
    names = subprocess.run(["tar", "-tzf", str(tgz)], check=True, capture_output=True, text=True).stdout.split()
    pages = requests.get(f"{server.url}/api/v1/attachments/{attachment}/entries?limit=3", headers=auth(server.engineer),
                         timeout=10)
    assert [e["path"] for e in pages.json()["entries"]] == names[:3]
    assert pages.json()["next"] == "3"
    assert pages.headers["Link"] == f'</api/v1/attachments/{attachment}/entries?limit=3&after=3>; rel="next"'
    assert [e["path"] for e in all_entries(server, attachment, prefix="logs/ic-server/")] == \
        [n for n in names if n.startswith("logs/ic-server/")]


def test_the_index_counts_toward_the_case_quota_and_the_purge_removes_it(server):
    import datetime
    import io
    import tarfile
    from test_retention import run_purge
    from test_uploads import create

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for n in range(50):
            info = tarfile.TarInfo(f"logs/part-{n:03d}.log")
            data = f"line {n}\n".encode() * 100
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = raw.getvalue()
    attachment = upload_archive(server, archive, "parts.tar")
    page = wait_indexed(server, attachment)
    # 96 bytes a row, its path and its SHA-256 in hex (BundleIndexer's estimate of what the rows cost).
    assert page["indexBytes"] == sum(96 + len(f"logs/part-{n:03d}.log") + 64 for n in range(50))
    server.stop()
    server.start("--max-case-size", str(len(archive) + page["indexBytes"] + 100))
    assert create(server, 100, "fits.log").startswith(server.url)
    over = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10, headers={
        **auth(server.customer), "Upload-Length": "1", "Upload-Metadata": "filename b25lLmxvZw=="})
    assert over.status_code == 413 and over.json()["error"] == "case_storage_quota", over.text

    closed = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", json={"subStatus": "Resolved"},
                           headers=auth(server.customer), timeout=10)
    assert closed.status_code == 200, closed.text
    as_of = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_purge(server, "--as-of", as_of, "--force").returncode == 0
    assert [server.query(f"SELECT COUNT(*) FROM {t}") for t in ("bundleIndex", "bundleEntry", "bundleCheckpoint")] \
        == [[("0",)]] * 3
    gone = requests.get(f"{server.url}/api/v1/attachments/{attachment}/entries", headers=auth(server.engineer), timeout=10)
    assert gone.status_code == 410
