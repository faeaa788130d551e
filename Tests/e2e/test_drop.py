"""Per-case drop credentials and one-command curl uploads (issue #20): the real binary, real curl, and the README's
bash retry loop through a proxy that cuts the connection."""
import hashlib
import json
import os
import subprocess
from pathlib import Path

import requests

from faultproxy import FaultProxy
from helpers import SUMMARY, pattern

ROOT = Path(__file__).resolve().parents[2]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_drop(server, case=None, **body) -> dict:
    case = case or server.case
    response = requests.post(f"{server.url}/api/v1/cases/{case}/drop-tokens", headers=bearer(server.engineer),
                             json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def curl(*args: str, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=timeout)


def test_engineers_make_drop_credentials_customers_do_not_and_the_list_never_shows_the_secret(server):
    drop = make_drop(server, expiresInSeconds=3600)
    assert drop["token"].startswith("cfd_") and len(drop["token"]) == 4 + 43
    assert drop["caseNumber"] == "00001413" and drop["createdBy"] == "erin" and drop["state"] == "active"
    assert drop["uploadPath"] == "/api/v1/cases/00001413/files/"
    customer = requests.post(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(server.customer), timeout=10)
    assert (customer.status_code, customer.json()["error"]) == (403, "forbidden")
    other = server.cli("users", "create", "olga", "--role", "customer", "--account", "GLOBEX")
    hidden = requests.post(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(other), timeout=10)
    assert (hidden.status_code, hidden.json()["error"]) == (404, "case_not_found")
    too_long = requests.post(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(server.engineer),
                             json={"expiresInSeconds": 91 * 86400}, timeout=10)
    assert (too_long.status_code, too_long.json()["error"]) == (400, "invalid_expiry")

    listing = requests.get(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(server.admin), timeout=10).json()
    [row] = listing["dropTokens"]
    assert set(row) == {"id", "caseNumber", "createdBy", "createdAt", "expiresAt", "state"}  # never the secret
    assert drop["token"] not in json.dumps(listing)
    # Stored hashed, like user tokens.
    [(stored,)] = server.query("SELECT tokenHash FROM dropToken")
    assert stored == hashlib.sha256(drop["token"].encode()).hexdigest()

    # Used once: the listing shows when.
    assert curl("-f", "-o", "/dev/null", "-I", "-u", f"00001413:{drop['token']}",
                f"{server.url}/api/v1/cases/00001413/files/none.log").returncode == 22  # 404: nothing to continue
    [row] = requests.get(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(server.admin), timeout=10).json()["dropTokens"]
    assert row["lastUsedAt"] is not None

    # The CLI makes one too, and prints a curl command that works as printed.
    out = subprocess.run([os.environ.get("CASEFILES_BIN", str(ROOT / ".build/debug/casefiles")), "cases", "drop-token",
                          "1413", "--expires", "2d", "--server", server.url, "--token", server.engineer],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    secret, _, command = out.stdout.splitlines()
    assert secret.startswith("cfd_") and command == f"upload: curl -fsS -T FILE -u 00001413:{secret} {server.url}/api/v1/cases/00001413/files/"


def test_curl_put_uploads_a_verified_attachment_named_by_curl_and_never_overwrites(server, tmp_path):
    drop = make_drop(server)
    data = pattern(5 * 1024 * 1024 + 17)
    path = tmp_path / "big log.txt"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    first = curl("-f", "-T", str(path), "-u", f"00001413:{drop['token']}", f"{server.url}/api/v1/cases/1413/files/")
    assert first.returncode == 0, first.stderr
    line = first.stdout.strip()
    assert line.startswith("Stored big log.txt in case 00001413 as attachment ")
    assert line.endswith(f": {len(data)} bytes, SHA-256 {digest}")
    # The same name again, as a bearer token and asking for JSON: a second attachment, never an overwrite.
    second = curl("-f", "-T", str(path), "-H", f"Authorization: Bearer {drop['token']}", "-H", "Accept: application/json",
                  f"{server.url}/api/v1/cases/1413/files/big%20log.txt")
    assert second.returncode == 0, second.stderr
    answer = json.loads(second.stdout)
    assert (answer["filename"], answer["size"], answer["sha256"], answer["state"]) == ("big log.txt", len(data), digest, "verified")
    attachments = requests.get(f"{server.url}/api/v1/cases/1413/attachments", headers=bearer(server.engineer),
                               timeout=10).json()["attachments"]
    assert [a["filename"] for a in attachments] == ["big log.txt", "big log.txt"]
    assert len({a["id"] for a in attachments}) == 2
    assert attachments[0]["uploadedBy"] == f"drop credential {drop['id']} (made by erin)"
    content = requests.get(f"{server.url}/api/v1/attachments/{answer['id']}/content", headers=bearer(server.engineer), timeout=30)
    assert content.content == data

    # A chunked body (no Content-Length) works, and a Repr-Digest that does not match fails the file (422).
    chunked = curl("-f", "-T", "-", "-u", f"00001413:{drop['token']}", f"{server.url}/api/v1/cases/1413/files/piped.log",
                   "-H", "Transfer-Encoding: chunked")
    assert chunked.returncode == 0, chunked.stderr  # stdin is empty here: a zero-byte file
    assert "as attachment" in chunked.stdout and ": 0 bytes, SHA-256 e3b0c442" in chunked.stdout
    piped = subprocess.run(f"cat '{path}' | curl -sS -f -T - -u 00001413:{drop['token']} {server.url}/api/v1/cases/1413/files/piped.log",
                           shell=True, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout.strip().endswith(f": {len(data)} bytes, SHA-256 {digest}"), piped.stderr
    wrong = "sha-256=:" + "A" * 43 + "=:"
    bad = curl("-T", str(path), "-u", f"00001413:{drop['token']}", "-H", f"Repr-Digest: {wrong}",
               f"{server.url}/api/v1/cases/1413/files/bad.log", "-w", "%{http_code}")
    assert bad.stdout.endswith("422") and '"whole_file_digest_mismatch"' in bad.stdout
    # Names are checked as tus filenames are.
    evil = curl("-T", str(path), "-u", f"00001413:{drop['token']}", f"{server.url}/api/v1/cases/1413/files/..%5Cwin.ini", "-w", "%{http_code}")
    assert evil.stdout.endswith("400") and '"invalid_filename"' in evil.stdout
    SUMMARY["bytes uploaded with curl -T and verified"] += 3 * len(data)


def test_head_and_content_range_continue_the_newest_unfinished_upload_of_that_name(server, tmp_path):
    drop = make_drop(server)
    auth = ("00001413", drop["token"])
    url = f"{server.url}/api/v1/cases/1413/files/part.log"
    data = pattern(300_000, seed=3)
    # The first 100,000 bytes, as a partial PUT (what curl sends with -C after a cut, here made by hand).
    first = requests.put(url, auth=auth, data=data[:100_000],
                         headers={"Content-Range": f"bytes 0-99999/{len(data)}"}, timeout=30)
    assert (first.status_code, first.headers["Upload-Offset"]) == (200, "100000"), first.text
    head = requests.head(url, auth=auth, timeout=10)
    assert head.status_code == 200
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"], head.headers["Content-Range"]) == \
        ("100000", "300000", "bytes 0-99999/*")
    # Another credential of the same case, and the engineer who made this one, see nothing to continue.
    other = make_drop(server)
    assert requests.head(url, auth=("00001413", other["token"]), timeout=10).status_code == 404
    assert requests.head(url, headers=bearer(server.engineer), timeout=10).status_code == 404
    # A wrong offset: 409 with the right one.
    stale = requests.put(url, auth=auth, data=data[50_000:], headers={"Content-Range": f"bytes 50000-299999/{len(data)}"}, timeout=30)
    assert (stale.status_code, stale.json()["error"]) == (409, "offset_mismatch")
    assert "100000" in stale.json()["message"]
    # curl -C 100000 -T FILE sends Content-Range: bytes 100000-299999/300000 and the rest of the file.
    path = tmp_path / "part.log"
    path.write_bytes(data)
    rest = curl("-f", "-v", "-C", "100000", "-T", str(path), "-u", f"00001413:{drop['token']}", url)
    assert rest.returncode == 0, rest.stderr
    assert "> Content-Range: bytes 100000-299999/300000" in rest.stderr
    assert rest.stdout.strip().endswith(f": 300000 bytes, SHA-256 {hashlib.sha256(data).hexdigest()}")
    assert requests.head(url, auth=auth, timeout=10).status_code == 404  # finished: nothing left to continue
    # curl -C - cannot ask an HTTP server for the size: it sends the whole file as bytes 0-(size-1)/size, which
    # starts a new upload when none of that name is unfinished.
    whole = curl("-f", "-v", "-C", "-", "-T", str(path), "-u", f"00001413:{drop['token']}", url)
    assert whole.returncode == 0 and "> Content-Range: bytes 0-299999/300000" in whole.stderr, whole.stderr
    # A PUT with Content-Range starting past 0 and nothing to continue: 404.
    nothing = requests.put(url, auth=auth, data=b"x", headers={"Content-Range": "bytes 5-5/6"}, timeout=10)
    assert (nothing.status_code, nothing.json()["error"]) == (404, "no_unfinished_upload")


def test_a_drop_credential_uploads_into_its_case_only_and_dies_with_revocation_expiry_and_closure(server, tmp_path):
    drop = make_drop(server)
    token = drop["token"]
    other_case = requests.post(f"{server.url}/api/v1/cases", headers=bearer(server.admin),
                               json={"account": "ACME", "subject": "other"}, timeout=10).json()["number"]
    attachment = curl("-f", "-T", "-", "-u", f"00001413:{token}", "-H", "Accept: application/json",
                      f"{server.url}/api/v1/cases/1413/files/a.log")
    attachment_id = json.loads(attachment.stdout)["id"]

    def status(method, path, auth=("00001413", token), **kwargs):
        response = requests.request(method, server.url + path, auth=auth, timeout=10, **kwargs)
        body = response.json() if method != "HEAD" and response.status_code >= 400 else {}
        return response.status_code, body.get("error")

    assert status("GET", f"/api/v1/attachments/{attachment_id}") == (403, "drop_credential_upload_only")
    assert status("GET", f"/api/v1/attachments/{attachment_id}/content") == (403, "drop_credential_upload_only")
    assert status("GET", "/api/v1/cases/1413/attachments") == (403, "drop_credential_upload_only")
    assert status("GET", "/api/v1/cases") == (403, "drop_credential_upload_only")
    assert status("GET", f"/api/v1/cases/{other_case}") == (404, "case_not_found")
    assert status("PUT", f"/api/v1/cases/{other_case}/files/x.log", data=b"x") == (404, "case_not_found")
    assert status("POST", f"/api/v1/cases/{other_case}/uploads",
                  headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1", "Upload-Metadata": "filename eA=="}) == (404, "case_not_found")
    # Basic with another case's number as the user name is not this credential.
    assert status("PUT", f"/api/v1/cases/{other_case}/files/x.log", auth=(other_case, token), data=b"x") == (401, "invalid_token")
    # tus works with it too, as a bearer token, and it may HEAD its own upload.
    created = requests.post(f"{server.url}/api/v1/cases/1413/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "2", "Upload-Metadata": "filename eA==", **bearer(token)}, timeout=10)
    assert created.status_code == 201, created.text
    assert requests.head(server.url + created.headers["Location"], headers={"Tus-Resumable": "1.0.0", **bearer(token)},
                         timeout=10).status_code == 200
    # The engineer who made it may not append to its upload ("only the creator appends").
    engineer_patch = requests.patch(server.url + created.headers["Location"], data=b"ab", headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        **bearer(server.engineer)}, timeout=10)
    assert (engineer_patch.status_code, engineer_patch.json()["error"]) == (403, "not_upload_creator")

    # Revoked: 401 at once.
    revoked = make_drop(server)
    assert requests.delete(f"{server.url}/api/v1/cases/1413/drop-tokens/{revoked['id']}", headers=bearer(server.engineer),
                           timeout=10).status_code == 204
    assert status("PUT", "/api/v1/cases/1413/files/r.log", auth=("00001413", revoked["token"]), data=b"x") == (401, "invalid_token")
    listing = requests.get(f"{server.url}/api/v1/cases/1413/drop-tokens", headers=bearer(server.engineer), timeout=10).json()
    assert {t["id"]: t["state"] for t in listing["dropTokens"]}[revoked["id"]] == "revoked"
    # Expired: 401.
    expired = make_drop(server)
    server.execute(f"UPDATE dropToken SET expiresAt = '2001-01-01 00:00:00.000' WHERE id = {int(expired['id'])}")
    assert status("PUT", "/api/v1/cases/1413/files/e.log", auth=("00001413", expired["token"]), data=b"x") == (401, "invalid_token")
    # Closing the case revokes every credential of it at once, and reopening does not bring them back.
    requests.post(f"{server.url}/api/v1/cases/1413/close", headers=bearer(server.engineer), json={"subStatus": "Resolved"},
                  timeout=10).raise_for_status()
    assert status("PUT", "/api/v1/cases/1413/files/c.log", data=b"x") == (401, "invalid_token")
    requests.post(f"{server.url}/api/v1/cases/1413/reopen", headers=bearer(server.engineer), timeout=10).raise_for_status()
    assert status("PUT", "/api/v1/cases/1413/files/c.log", data=b"x") == (401, "invalid_token")


def readme_loop(origin: str) -> str:
    """The bash retry loop exactly as README.md prints it, pointed at `origin`, its sleep shortened to 1 s."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("URL=https://files.example.com/api/v1/cases/00001413/files/big.log")
    end = readme.index("; done\n", start) + len("; done\n")
    loop = readme[start:end]
    assert loop.count("\n") == 3  # three lines
    return loop.replace("https://files.example.com", origin).replace("sleep 5", "sleep 1")


def test_the_readme_bash_loop_finishes_a_1_gib_upload_through_a_proxy_that_cuts_it_three_times(server, tmp_path):
    size = int(os.environ.get("CASEFILES_DROP_LOOP_BYTES", 1 << 30))
    drop = make_drop(server)
    big = tmp_path / "big.log"
    block = pattern(1 << 20, seed=7)
    with open(big, "wb") as f:
        for i in range(size // len(block)):
            f.write(i.to_bytes(8, "little") + block[8:])
        f.write(block[: size % len(block)])
    digest = hashlib.sha256(big.read_bytes()).hexdigest() if size <= 1 << 28 else \
        subprocess.run(["sha256sum", str(big)], capture_output=True, text=True, check=True).stdout.split()[0]
    # Cuts at random points of the first three connections that carry a lot (the HEADs are small); later ones pass.
    third = size // 4
    with FaultProxy(server.port, cut_every=(third // 2, third), max_cuts=3) as proxy:
        script = readme_loop(proxy.url)
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env={**os.environ, "TOKEN": drop["token"]},
                                capture_output=True, text=True, timeout=1800)
        cuts = proxy.cuts
    assert result.returncode == 0, result.stderr[-2000:]
    assert cuts == 3
    assert result.stdout.strip().endswith(f": {size} bytes, SHA-256 {digest}"), result.stdout
    SUMMARY["bytes uploaded by the README curl loop through 3 cuts"] += size
