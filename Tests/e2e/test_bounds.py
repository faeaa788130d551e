"""Issue #17: no customer can fill the disk or the database, and every byte has an author. Limits are set low with
`serve` flags; each test asserts the exact status, error code and figure."""
import http.client
import re
import subprocess

import pytest
import requests

from conftest import Server
from helpers import auth, b64, pattern
from test_uploads import MiB, attachments, create, head_offset, patch

CHUNK = {"Content-Type": "application/offset+octet-stream"}


def restart(server, *flags: str) -> None:
    server.stop()
    server.start(*flags)


def post_upload(server, token: str, length: int | None, name="q.log") -> requests.Response:
    headers = {**auth(token), "Upload-Metadata": f"filename {b64(name)}"}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    return requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=headers, timeout=10)


def patch_as(server, token: str, url: str, offset: int, data: bytes) -> requests.Response:
    return requests.patch(url, data=data, timeout=60, headers={**auth(token), **CHUNK, "Upload-Offset": str(offset)})


# MARK: - 1. Sizes and free space


@pytest.fixture
def tmpfs_server(tmp_path):
    """A server whose storage root is an 80 MiB tmpfs, so the free space is known."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a small filesystem ({result.stderr.strip()})")
    srv = Server(mount / "Storage")
    try:
        srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
        srv.case = srv.cli("cases", "create", "--account", "ACME", "--subject", "reservations", "--number", "1413")
        srv.start()
        yield srv
    finally:
        srv.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_declared_bytes_are_reserved_and_released_and_a_507_does_not_tell_the_free_space(tmpfs_server):
    server = tmpfs_server
    first = post_upload(server, server.customer, 30 * MiB, "first.log")
    second = post_upload(server, server.customer, 30 * MiB, "second.log")
    assert (first.status_code, second.status_code) == (201, 201)
    # 60 MiB are promised on an 80 MiB disk: a third 30 MiB upload does not fit, although nothing is written yet.
    third = post_upload(server, server.customer, 30 * MiB, "third.log")
    assert third.status_code == 507, third.text
    assert third.json()["error"] == "insufficient_storage"
    # The client learns that there is not enough space and what to do, never the server's free space.
    assert not re.search(r"\d{3,}", third.json()["message"]), third.json()["message"]
    assert "retry later" in third.json()["message"].lower()
    log = (server.storage.parent / "server.log").read_text(errors="replace")
    assert re.search(r'level=warning .*msg="not enough free space for an upload" .*availableBytes=\d+ .*requestedBytes=31457280',
                     log), log[-2000:]

    # A deferred length is checked as its bytes arrive, against the free space less every reservation:
    # about 19 MiB are left, so 25 MiB are refused, with a Content-Length before the body and chunked as they come.
    deferred = post_upload(server, server.customer, None, "deferred.log")
    assert deferred.status_code == 201
    url = server.url + deferred.headers["Location"]
    data = pattern(25 * MiB, seed=170)
    declared = patch_as(server, server.customer, url, 0, data)
    assert (declared.status_code, declared.json()["error"]) == (507, "insufficient_storage"), declared.text
    chunked = requests.patch(url, data=iter([data[i:i + MiB] for i in range(0, len(data), MiB)]), timeout=60,
                             headers={**auth(server.customer), **CHUNK, "Upload-Offset": "0"})
    assert (chunked.status_code, chunked.json()["error"]) == (507, "insufficient_storage"), chunked.text
    assert head_offset(server, url) == 0  # nothing past the room was kept

    # Terminating an upload releases its reservation: the same 25 MiB now fit.
    assert requests.delete(server.url + first.headers["Location"], headers=auth(server.customer), timeout=10).status_code == 204
    assert patch_as(server, server.customer, url, 0, data).status_code == 204
    assert head_offset(server, url) == 25 * MiB
    # Bytes written release their part of a reservation as they arrive, so they are not counted twice (on the
    # disk and as promised): with 25 MiB written, and `second` at 10 of its 30 MiB, about 80 - 25 - 10 - 20 = 25 MiB
    # are left. Counted twice, only 15 would be.
    second_url = server.url + second.headers["Location"]
    assert patch(server, second_url, 0, pattern(10 * MiB, seed=171)).status_code == 204
    assert post_upload(server, server.customer, 36 * MiB, "too-big.log").status_code == 507
    assert post_upload(server, server.customer, 22 * MiB, "fits.log").status_code == 201


# MARK: - 2. Quotas


def test_upload_count_and_case_byte_quotas(server):
    restart(server, "--max-unfinished-uploads-per-user", "3", "--max-unfinished-uploads-per-case", "4",
            "--max-case-size", "1000")
    mine = [post_upload(server, server.customer, 100) for _ in range(3)]
    assert [r.status_code for r in mine] == [201, 201, 201]
    fourth = post_upload(server, server.customer, 100)
    assert fourth.status_code == 429, fourth.text
    assert fourth.json()["error"] == "unfinished_uploads_per_user_quota"
    assert "3 unfinished uploads" in fourth.json()["message"]

    assert post_upload(server, server.engineer, 100).status_code == 201  # the case's fourth
    fifth = post_upload(server, server.engineer, 100)
    assert fifth.status_code == 429 and fifth.json()["error"] == "unfinished_uploads_per_case_quota", fifth.text
    assert "4 unfinished uploads" in fifth.json()["message"]

    # Finishing or deleting one frees a place; the case then holds 300 declared bytes.
    assert requests.delete(server.url + mine[0].headers["Location"], headers=auth(server.customer), timeout=10).status_code == 204
    over = post_upload(server, server.engineer, 701)
    assert over.status_code == 413 and over.json()["error"] == "case_storage_quota", over.text
    assert "1000 bytes" in over.json()["message"]
    exact = post_upload(server, server.engineer, 700)
    assert exact.status_code == 201, exact.text  # exactly 1,000 bytes

    # Stored bytes count as declared ones did; a deferred length is held to the quota as its bytes arrive.
    assert requests.delete(server.url + exact.headers["Location"], headers=auth(server.engineer), timeout=10).status_code == 204
    done = server.url + mine[1].headers["Location"]
    assert patch(server, done, 0, b"x" * 100).status_code == 204  # verified: 100 stored bytes
    deferred = post_upload(server, server.customer, None)
    assert deferred.status_code == 201
    url = server.url + deferred.headers["Location"]
    too_much = patch_as(server, server.customer, url, 0, b"y" * 701)  # 300 + 701 > 1000
    assert too_much.status_code == 413 and too_much.json()["error"] == "case_storage_quota", too_much.text
    assert patch_as(server, server.customer, url, 0, b"y" * 700).status_code == 204
    assert head_offset(server, url) == 700


def test_the_default_case_quota_is_one_tebibyte(server):
    over = post_upload(server, server.customer, 2 ** 40 + 1)
    assert over.status_code == 413 and over.json()["error"] == "case_storage_quota", over.text
    assert str(2 ** 40) in over.json()["message"]


def test_comments_are_capped_at_4_kib(server):
    headers = auth(server.engineer)
    close = f"{server.url}/api/v1/cases/{server.case}/close"
    long = requests.post(close, json={"subStatus": "Resolved", "comment": "é" * 2049}, headers=headers, timeout=10)
    assert long.status_code == 400 and long.json()["error"] == "comment_too_long", long.text
    assert "4096 bytes" in long.json()["message"]
    assert requests.get(f"{server.url}/api/v1/cases/{server.case}", headers=headers, timeout=10).json()["status"] != "Closed"
    fits = requests.post(close, json={"subStatus": "Resolved", "comment": "é" * 2048}, headers=headers, timeout=10)
    assert fits.status_code == 200, fits.text
    reopen = requests.post(f"{server.url}/api/v1/cases/{server.case}/reopen", json={"comment": "x" * 4097},
                           headers=headers, timeout=10)
    assert reopen.status_code == 400 and reopen.json()["error"] == "comment_too_long"


def test_history_and_the_case_list_come_in_pages(server):
    headers = auth(server.engineer)
    base = f"{server.url}/api/v1/cases/{server.case}"
    for _ in range(2):
        assert requests.post(base + "/close", json={"subStatus": "Resolved"}, headers=headers, timeout=10).status_code == 200
        assert requests.post(base + "/reopen", headers=headers, timeout=10).status_code == 200
    assert requests.post(base + "/close", json={"subStatus": "Resolved"}, headers=headers, timeout=10).status_code == 200
    everything = requests.get(base + "/history", headers=headers, timeout=10).json()
    assert [e["kind"] for e in everything["events"]] == ["closed", "reopened", "closed", "reopened", "closed"]
    assert "next" not in everything

    first = requests.get(base + "/history?limit=2", headers=headers, timeout=10)
    assert first.status_code == 200
    ids = [e["id"] for e in everything["events"]]
    assert [e["id"] for e in first.json()["events"]] == ids[:2]
    assert first.json()["next"] == str(ids[1])
    assert first.headers["Link"] == f'</api/v1/cases/{server.case}/history?limit=2&after={ids[1]}>; rel="next"'
    second = requests.get(server.url + first.headers["Link"][1:].split(">")[0], headers=headers, timeout=10).json()
    assert [e["id"] for e in second["events"]] == ids[2:4]
    last = requests.get(f"{base}/history?limit=2&after={second['next']}", headers=headers, timeout=10)
    assert [e["id"] for e in last.json()["events"]] == ids[4:] and "next" not in last.json() and "Link" not in last.headers

    for number in ["1414", "1415"]:
        server.cli("cases", "create", "--account", "ACME", "--subject", "more", "--number", number)
    page = requests.get(f"{server.url}/api/v1/cases?limit=2", headers=headers, timeout=10).json()
    assert [c["number"] for c in page["cases"]] == ["00001413", "00001414"] and page["next"] == "00001414"
    rest = requests.get(f"{server.url}/api/v1/cases?limit=2&after=00001414", headers=headers, timeout=10).json()
    assert [c["number"] for c in rest["cases"]] == ["00001415"] and "next" not in rest
    for query, code in [("limit=0", "invalid_limit"), ("limit=1001", "invalid_limit"), ("after=abc", "invalid_cursor")]:
        bad = requests.get(f"{base}/history?{query}", headers=headers, timeout=10)
        assert (bad.status_code, bad.json()["error"]) == (400, code), (query, bad.text)


def test_state_changing_calls_are_rate_limited_per_user(server):
    restart(server, "--rate-limit", "5")
    made = [post_upload(server, server.customer, 2).status_code for _ in range(5)]
    assert made == [201] * 5
    limited = post_upload(server, server.customer, 2)
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"] == "rate_limited"
    assert limited.headers["Tus-Resumable"] == "1.0.0"
    # 5 a minute: one more is earned 12 s after the bucket emptied.
    assert 1 <= int(limited.headers["Retry-After"]) <= 12
    closing = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", json={"subStatus": "Resolved"},
                            headers=auth(server.customer), timeout=10)
    assert closing.status_code == 429 and closing.json()["error"] == "rate_limited"
    # The data routes and reads are not counted; other users have their own budget.
    url = create(server, 2, token=server.engineer)
    assert patch_as(server, server.engineer, url, 0, b"ab").status_code == 204
    mine = server.url + attachments(server, server.customer)["uploads"][0]["id"].join(["/api/v1/uploads/", ""])
    for _ in range(10):
        assert requests.head(mine, headers=auth(server.customer), timeout=10).status_code == 200
        assert requests.get(f"{server.url}/api/v1/cases", headers=auth(server.customer), timeout=10).status_code == 200
    assert patch_as(server, server.customer, mine, 0, b"ab").status_code == 204


# MARK: - 3. Every byte has an author


def test_only_the_creator_appends_and_every_append_is_recorded_with_its_sender(server):
    url = create(server, 6, "authored.log")
    for token in [server.engineer, server.admin]:
        refused = patch_as(server, token, url, 0, b"xx")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "not_upload_creator"
    assert head_offset(server, url) == 0
    assert patch_as(server, server.customer, url, 0, b"abc").status_code == 204
    assert patch_as(server, server.customer, url, 3, b"def").status_code == 204

    rows = server.query(f"""
        SELECT a.fromOffset, a.toOffset, u.name FROM uploadAppend a JOIN "user" u ON u.id = a.userID
        WHERE a.uploadID = '{url.rsplit("/", 1)[1]}' ORDER BY a.fromOffset""")
    assert rows == [("0", "3", "carol"), ("3", "6", "carol")]

    # Others may still terminate it as the permission table says: an engineer may.
    other = create(server, 4, "abandoned.log")
    assert requests.delete(other, headers=auth(server.engineer), timeout=10).status_code == 204
