"""Issue #16: the upload timeline (`serve --trace-uploads`) and the CLI's chunk size chosen from the measured rate."""
import base64
import hashlib
import json
import subprocess
from pathlib import Path

import requests

from conftest import ROOT
from faultproxy import FaultProxy
from helpers import auth, metadata, pattern, sha256_header
from test_client import client
from test_uploads import MiB, attachments


def traced(server, tmp_path) -> Path:
    """Restarts the fixture's server with --trace-uploads; returns the trace file."""
    trace = tmp_path / "trace.jsonl"
    server.stop()
    server.start("--trace-uploads", str(trace))
    return trace


def lines(trace: Path) -> list[dict]:
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def create(server, length: int) -> str:
    response = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10, headers={
        **auth(server.customer), "Tus-Resumable": "1.0.0", "Upload-Length": str(length),
        "Upload-Metadata": metadata("traced.bin")})
    assert response.status_code == 201, response.text
    return server.url + response.headers["Location"]


def patch(server, url: str, offset: int, body: bytes, checksum: str) -> requests.Response:
    return requests.patch(url, data=body, timeout=60, headers={
        **auth(server.customer), "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", "Upload-Checksum": checksum})


def test_trace_records_each_append_and_the_summary_reads_it(server, tmp_path):
    trace = traced(server, tmp_path)
    data = pattern(6 * MiB, seed=16)
    url = create(server, len(data))
    assert patch(server, url, 0, data[:2 * MiB], sha256_header(data[:2 * MiB])).status_code == 204
    assert patch(server, url, 2 * MiB, data[2 * MiB:5 * MiB], sha256_header(data[2 * MiB:5 * MiB])).status_code == 204
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"not these bytes").digest()).decode()
    assert patch(server, url, 5 * MiB, data[5 * MiB:], wrong).status_code == 460
    assert patch(server, url, 5 * MiB, data[5 * MiB:], sha256_header(data[5 * MiB:])).status_code == 204

    found = lines(trace)
    assert [(t["offset"], t["bytes"], t["outcome"]) for t in found] == [
        (0, 2 * MiB, "committed"), (2 * MiB, 3 * MiB, "committed"), (5 * MiB, 0, "checksumMismatch"),
        (5 * MiB, MiB, "committed")]
    upload_id = url.rsplit("/", 1)[1]
    for t in found:
        assert t["upload"] == upload_id
        assert t["ended"] - t["started"] == t["total"] > 0
        assert t["setup"] + t["batches"] <= t["total"]
    for t in (found[0], found[1], found[3]):  # committed: both digests ran, the bytes were made durable and recorded
        assert t["hashChunk"] > 0 and t["hashFile"] > 0
        assert t["storage"]["fdatasync"] > 0 and t["commit"] > 0
        # A lone upload's whole-file SHA-256 ran in the queued lane (BulkWork.maxFileLanes), waited for at the end.
        assert t["fileLane"] is True and t["laneWait"] >= 0 and t["settleWait"] >= 0
    assert found[1]["storage"]["backgroundWrites"] >= 2  # 3 MiB through 1 MiB staging buffers
    assert found[2]["commit"] == 0  # a refused chunk is never committed

    summary = subprocess.run([str(ROOT / "Scripts" / "upload-timeline"), str(trace)], capture_output=True, text=True,
                             check=True).stdout
    for size in (1, 2, 3):
        assert f"{size} MiB requests: 1 (1 with a queued lane 2)," in summary
    assert "fdatasync" in summary and "gap" in summary


def chunk_sizes(trace: Path) -> list[int]:
    return [t["bytes"] for t in lines(trace) if t["outcome"] == "committed"]


def test_cli_grows_its_chunks_on_a_fast_link(server, tmp_path):
    trace = traced(server, tmp_path)
    path = tmp_path / "fast.bin"
    data = pattern(40 * MiB, seed=17)
    path.write_bytes(data)
    result = client(server, "upload", "--case", server.case, str(path), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    # 8 MiB first; loopback moves it in well under a second, which asks for chunks past the 32 MiB maximum, and
    # the size at most doubles per chunk. Each chunk is read while the one before is sent, so a larger size
    # shows one chunk later: 8, 8 (read during the first), 16, then the 8 MiB left.
    assert chunk_sizes(trace) == [8 * MiB, 8 * MiB, 16 * MiB, 8 * MiB]
    [attachment] = attachments(server)["attachments"]
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()


def test_cli_shrinks_its_chunks_on_a_slow_link(server, tmp_path):
    trace = traced(server, tmp_path)
    path = tmp_path / "slow.bin"
    data = pattern(14 * MiB, seed=18)
    path.write_bytes(data)
    with FaultProxy(server.port, rate=2.5e6) as proxy:
        # --compress off: the link's rate is in bytes as sent, and this data compresses well.
        result = client(server, "upload", "--case", server.case, "--compress", "off", str(path), url=proxy.url,
                        state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    # 8 MiB at 2.5 MB/s takes ~3.4 s; 2 s at that rate is 5 MB, so 4 MiB chunks (the 8 MiB read meanwhile is
    # read again at the smaller size: a slow link should not wait for a chunk too large), then what is left.
    assert chunk_sizes(trace) == [8 * MiB, 4 * MiB, 2 * MiB]
    [attachment] = attachments(server)["attachments"]
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()


def test_fixed_chunk_size_is_kept(server, tmp_path):
    trace = traced(server, tmp_path)
    path = tmp_path / "fixed.bin"
    path.write_bytes(pattern(10 * MiB, seed=19))
    result = client(server, "upload", "--case", server.case, "--chunk-size", "3MiB", str(path), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert chunk_sizes(trace) == [3 * MiB, 3 * MiB, 3 * MiB, MiB]
