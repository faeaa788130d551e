"""End-to-end downloads and lifecycle: curl resuming a cut download, downloads beside uploads, SIGTERM."""
import base64
import hashlib
import signal
import subprocess
import threading
import time

import requests

from helpers import auth, pattern
from test_uploads import MiB, attachments, create, head_offset, patch, stream_patch


def upload_file(server, data: bytes, name: str) -> str:
    url = create(server, len(data), name, sha256=hashlib.sha256(data).hexdigest())
    for start in range(0, len(data), 8 * MiB):
        assert patch(server, url, start, data[start:start + 8 * MiB]).status_code == 204
    return url.rsplit("/", 1)[1]


def test_curl_resumes_a_cut_download_and_the_digest_matches(server, tmp_path):
    data = pattern(24 * MiB, seed=11)
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
    assert log[1]["completed"] is False and log[1]["bytesSent"] >= partial


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
