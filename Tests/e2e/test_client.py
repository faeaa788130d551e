"""End-to-end: the `casefiles upload` / `download` client against the real server, through a fault proxy."""
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import requests

from conftest import BINARY
from faultproxy import FaultProxy
from helpers import auth, pattern
from test_uploads import MiB, attachments


def client(server, *args, url=None, state=None, timeout=300):
    env = {**os.environ, "CASEFILES_TOKEN": server.customer, "CASEFILES_SERVER": url or server.url,
           "XDG_STATE_HOME": str(state)}
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, env=env, timeout=timeout)


def start_client(server, *args, url, state):
    env = {**os.environ, "CASEFILES_TOKEN": server.customer, "CASEFILES_SERVER": url, "XDG_STATE_HOME": str(state)}
    return subprocess.Popen([str(BINARY), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def state_upload_url(state: Path) -> str | None:
    files = list((state / "casefiles").glob("upload-*.json"))
    return json.loads(files[0].read_text())["uploadURL"] if files else None


def wait_for_offset(server, state, at_least: int, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = state_upload_url(state)
        if url:
            response = requests.head(url, headers=auth(server.customer), timeout=5)
            if response.status_code == 200 and int(response.headers["Upload-Offset"]) >= at_least:
                return
        time.sleep(0.1)
    raise AssertionError(f"the upload never reached {at_least} bytes")


def settled_offset(server, url: str) -> int:
    previous = -1
    for _ in range(50):
        offset = int(requests.head(url, headers=auth(server.customer), timeout=5).headers["Upload-Offset"])
        if offset == previous:
            return offset
        previous = offset
        time.sleep(0.5)
    raise AssertionError("the offset never settled")


def final_line(output: str) -> dict:
    match = re.search(r"attachment (\w+) sha256 (\w+) \((\d+) bytes; resumed at (\d+); sent (\d+)\)", output)
    assert match, output
    return dict(zip(["id", "sha256", "size", "resumed", "sent"], [match[1], match[2], *map(int, match.groups()[2:])]))


def test_sigkill_mid_upload_then_rerun_sends_only_the_rest(server, tmp_path):
    data = pattern(64 * MiB, seed=30)
    path = tmp_path / "app.tar"
    path.write_bytes(data)
    state = tmp_path / "state"
    chunk = 4 * MiB
    with FaultProxy(server.port, rate=16 * MiB) as slow:
        running = start_client(server, "upload", "--case", server.case, "--chunk-size", "4MiB", str(path),
                               url=slow.url, state=state)
        wait_for_offset(server, state, 16 * MiB)
        running.send_signal(signal.SIGKILL)
        running.wait(10)
        # The proxy may still deliver the chunk that was in flight; wait until the offset settles.
        committed = settled_offset(server, state_upload_url(state))
        assert 16 * MiB <= committed < len(data)

        slow.rate = None  # the same server URL (the state is per server), now at full speed
        rerun = client(server, "upload", "--case", server.case, "--chunk-size", "4MiB", str(path),
                       url=slow.url, state=state)
    assert rerun.returncode == 0, rerun.stderr
    result = final_line(rerun.stdout)
    assert f"resuming {path} at byte {committed}" in rerun.stdout
    assert result["resumed"] == committed
    assert result["sent"] == len(data) - committed  # nothing acknowledged is sent again
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    # What the killed client sent but the server never acknowledged is at most the chunk in flight.
    assert committed % chunk == 0
    assert not list((state / "casefiles").glob("upload-*.json")), "the state file is removed once done"


def test_200_mib_up_and_down_through_a_proxy_that_cuts_every_few_megabytes(server, tmp_path):
    data = pattern(200 * MiB, seed=31)
    path = tmp_path / "big.log"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with FaultProxy(server.port, cut_every=(3 * MiB, 9 * MiB), seed=7) as proxy:
        up = client(server, "upload", "--case", server.case, "--chunk-size", "1MiB", "--retry-delay", "0.01",
                    "--max-retry-delay", "0.2", "--retries", "20", str(path), url=proxy.url, state=tmp_path / "state")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr
        result = final_line(up.stdout)
        assert result["sha256"] == digest
        cuts_during_upload = proxy.cuts
        assert cuts_during_upload >= 10, "the proxy should have cut the upload many times"

        target = tmp_path / "copy.log"
        down = client(server, "download", result["id"], "-o", str(target), "--retry-delay", "0.01",
                      "--max-retry-delay", "0.2", "--retries", "20", url=proxy.url, state=tmp_path / "state")
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr
        assert proxy.cuts - cuts_during_upload >= 10, "the proxy should have cut the download many times"
    assert "download interrupted" in down.stdout
    assert target.read_bytes() == data
    assert not Path(str(target) + ".part").exists()
    print(f"\n[report] 200 MiB through the cutting proxy: {cuts_during_upload} cuts while uploading, "
          f"{proxy.cuts - cuts_during_upload} while downloading")


def test_a_file_changed_since_the_last_attempt_starts_a_new_upload(server, tmp_path):
    path = tmp_path / "rotating.log"
    path.write_bytes(pattern(32 * MiB, seed=32))
    state = tmp_path / "state"
    with FaultProxy(server.port, rate=8 * MiB) as slow:
        running = start_client(server, "upload", "--case", server.case, "--chunk-size", "2MiB", str(path),
                               url=slow.url, state=state)
        wait_for_offset(server, state, 4 * MiB)
        running.send_signal(signal.SIGKILL)
        running.wait(10)
        first_url = state_upload_url(state)

        changed = pattern(32 * MiB, seed=33)
        path.write_bytes(changed)
        slow.rate = None
        rerun = client(server, "upload", "--case", server.case, "--chunk-size", "2MiB", str(path),
                       url=slow.url, state=state)
    assert rerun.returncode == 0, rerun.stderr
    assert "changed since the last attempt" in rerun.stdout
    result = final_line(rerun.stdout)
    assert result["resumed"] == 0 and result["sha256"] == hashlib.sha256(changed).hexdigest()
    assert not first_url.endswith(result["id"])
    verified = [a for a in attachments(server)["attachments"] if a["state"] == "verified"]
    assert [a["sha256"] for a in verified] == [hashlib.sha256(changed).hexdigest()]


def test_exit_codes_say_what_kind_of_failure_it_was(server, tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"hello")
    state = tmp_path / "state"
    bad_token = subprocess.run([str(BINARY), "upload", "--server", server.url, "--token", "cf_wrong", "--case",
                                server.case, str(path)], capture_output=True, text=True,
                               env={**os.environ, "XDG_STATE_HOME": str(state)}, timeout=60)
    assert bad_token.returncode == 4 and "invalid_token" in bad_token.stderr
    missing = client(server, "upload", "--case", server.case, str(tmp_path / "nope.log"), state=state)
    assert missing.returncode == 6
    unreachable = client(server, "upload", "--case", server.case, "--retries", "2", "--retry-delay", "0.01", str(path),
                         url="http://127.0.0.1:9", state=state)
    assert unreachable.returncode == 3
    requests.post(f"{server.url}/api/v1/cases/{server.case}/close", json={"subStatus": "Resolved"},
                  headers=auth(server.customer), timeout=10)
    closed = client(server, "upload", "--case", server.case, str(path), state=state)
    assert closed.returncode == 4 and "case_closed" in closed.stderr
    usage = client(server, "upload", "--case", server.case, "--chunk-size", "lots", str(path), state=state)
    assert usage.returncode == 64
