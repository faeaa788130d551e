"""The one mapping from errors to answers: a full disk while creating a blob is 507 (it was a 500), and an
error nothing expected is a logged 500 that still carries Tus-Resumable on a tus route (tus 1.0: every
response but OPTIONS)."""
import subprocess

import pytest
import requests

from conftest import Server
from helpers import auth, b64


def create_upload(server, name: str) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10, headers={
        **auth(server.customer), "Upload-Length": "10", "Upload-Metadata": f"filename {b64(name)}"})


def test_running_out_of_inodes_while_creating_a_blob_is_507_with_tus_resumable(tmp_path):
    mount = tmp_path / "few-inodes"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=48", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a small filesystem ({result.stderr.strip()})")
    server = Server(mount / "Storage")
    try:
        server.customer = server.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
        server.case = server.cli("cases", "create", "--account", "ACME", "--subject", "few inodes", "--number", "1413")
        server.start()
        answers = [create_upload(server, f"f{i}.log") for i in range(60)]  # each blob takes an inode (or two)
        refused = [answer for answer in answers if answer.status_code != 201]
        assert refused, "the filesystem never ran out of inodes"
        first = refused[0]
        assert first.status_code == 507, (first.status_code, first.text)
        assert first.json()["error"] == "insufficient_storage"
        assert first.headers.get("Tus-Resumable") == "1.0.0"
        assert "available" not in first.json()["message"]
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_unexpected_storage_error_is_a_logged_500_with_tus_resumable(server):
    blobs = server.storage / "blobs"
    for shard in range(256):  # every shard folder name taken by a regular file: creating a blob fails
        path = blobs / f"{shard:02x}"
        if not path.exists():
            path.write_bytes(b"")
    answer = create_upload(server, "x.log")
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"] == "internal_error"
    assert answer.headers.get("Tus-Resumable") == "1.0.0"
    assert "unhandled error" in (server.storage.parent / "server.log").read_text()
