"""Issue #17, "history and listings paginated": a case's attachment listing comes in pages like the case list and
the history (`limit`, `after`, `next`, `Link`), and every client of it (the CLI here; the page in test_browser.py)
follows `next` to the end."""
import hashlib
import os
import re
import subprocess
import time

import requests

from conftest import BINARY
from helpers import auth, b64
from test_uploads import attachments

CHUNK = {"Content-Type": "application/offset+octet-stream"}


def upload(server, name: str, data: bytes | None) -> str:
    """Creates an upload of `data` in one request (creation-with-upload), verified at once; with None, an unfinished
    upload of 10 bytes. Returns its id."""
    headers = {**auth(server.customer), "Upload-Metadata": f"filename {b64(name)}"}
    if data is None:
        response = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10,
                                 headers={**headers, "Upload-Length": "10"})
    else:
        response = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", data=data, timeout=10,
                                 headers={**headers, **CHUNK, "Upload-Length": str(len(data))})
    assert response.status_code == 201, response.text
    time.sleep(0.002)  # the listing's order is creation time (kept to the millisecond), then id
    return response.headers["Location"].rsplit("/", 1)[1]


def test_the_attachment_listing_comes_in_pages(server):
    # Oldest first: a, b, c verified, d unfinished, e verified.
    ids = [upload(server, f"{name}.log", None if name == "d" else name.encode()) for name in "abcde"]
    base = f"{server.url}/api/v1/cases/{server.case}/attachments"
    headers = auth(server.engineer)

    first = requests.get(base + "?limit=2", headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    assert [a["id"] for a in first.json()["attachments"]] == ids[0:2] and first.json()["uploads"] == []
    # The cursor is the last row's place in the order: its creation time in milliseconds, then its id.
    cursor = first.json()["next"]
    assert re.fullmatch(rf"\d{{13}}-{ids[1]}", cursor), cursor
    assert first.headers["Link"] == f'</api/v1/cases/{server.case}/attachments?limit=2&after={cursor}>; rel="next"'

    second = requests.get(server.url + first.headers["Link"][1:].split(">")[0], headers=headers, timeout=10).json()
    assert [a["id"] for a in second["attachments"]] == [ids[2]]
    assert [u["id"] for u in second["uploads"]] == [ids[3]]  # a page's rows are split as the whole list was
    assert second["next"].endswith("-" + ids[3])

    last = requests.get(f"{base}?limit=2&after={second['next']}", headers=headers, timeout=10)
    assert [a["id"] for a in last.json()["attachments"]] == [ids[4]] and last.json()["uploads"] == []
    assert "next" not in last.json() and "Link" not in last.headers

    # Without `limit`, one page of up to 100: everything, no `next`.
    whole = requests.get(base, headers=headers, timeout=10).json()
    assert [a["id"] for a in whole["attachments"]] == [ids[0], ids[1], ids[2], ids[4]] and "next" not in whole

    for query in ["limit=0", "limit=1001", "after=xyz", f"after={ids[0]}", f"after=-{ids[0]}"]:
        response = requests.get(f"{base}?{query}", headers=headers, timeout=10)
        expected = "invalid_limit" if query.startswith("limit") else "invalid_cursor"
        assert (response.status_code, response.json()["error"]) == (400, expected), (query, response.text)


def test_the_client_lists_and_downloads_every_page(server, tmp_path):
    """More attachments than the server's default page (100): the CLI follows `next`. 101 one-byte attachments
    made through the API are the cheapest honest way: no setting exists, or is added, only to make pages small."""
    data = {f"file{i:03}.log": f"{i:03}".encode() for i in range(101)}
    ids = [upload(server, name, content) for name, content in data.items()]
    page = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.customer),
                        timeout=10).json()
    assert len(page["attachments"]) == 100 and page["next"].endswith("-" + ids[99])
    assert [a["id"] for a in attachments(server)["attachments"]] == ids

    env = {**os.environ, "CASEFILES_TOKEN": server.customer, "CASEFILES_SERVER": server.url,
           "XDG_STATE_HOME": str(tmp_path / "state")}
    listed = subprocess.run([str(BINARY), "attachments", "--case", server.case], capture_output=True, text=True,
                            env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ids

    target = tmp_path / "all"
    result = subprocess.run([str(BINARY), "download", "--case", server.case, "--all", "-o", str(target)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in target.iterdir()} == data
    assert result.stdout.count("downloaded ") == 101
    assert f"sha256 {hashlib.sha256(b'100').hexdigest()} (3 bytes)" in result.stdout
