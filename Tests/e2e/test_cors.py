"""Cross-origin browsers (issue #19 part 1): `serve --cors-origin ORIGIN`.

A page of the tests' own (Tests/e2e/foreign_origin: tus over XHR with exactly the headers tus-js-client sends),
served by Python's http.server from a second port, is a foreign origin to CaseFiles; headless Chromium runs it.
Raw requests check the exact headers of preflights and of the answers made outside the router."""
import hashlib
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, free_port
from helpers import TUS, auth, b64
from test_browser import browser  # noqa: F401  (the headless Chromium fixture)

PAGE_DIR = ROOT / "Tests" / "e2e" / "foreign_origin"
KiB = 1024

ALLOW_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS, PUT"
ALLOW_HEADERS = ("Authorization, Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, Upload-Defer-Length, "
                 "Upload-Concat, Upload-Checksum, Upload-Complete, Upload-Incomplete, Upload-Draft-Interop-Version, "
                 "Content-Digest, Repr-Digest, Want-Repr-Digest, Want-Content-Digest, X-HTTP-Method-Override, "
                 "X-Request-Id, Content-Type, Content-Disposition, Range, If-Range")
EXPOSE_HEADERS = ("Location, Upload-Offset, Upload-Length, Upload-Expires, Upload-Metadata, Upload-Complete, "
                  "Upload-Limit, Upload-Concat, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "
                  "Tus-Checksum-Algorithm, Repr-Digest, Content-Digest, ETag, Content-Range, Content-Disposition, "
                  "Retry-After, X-Request-Id, Link")
LISTED = "https://portal.example"
UNLISTED = "https://evil.example"


def page_bytes(size: int, seed: int) -> bytes:
    """The bytes tus-xhr.js uploads: byte i = (i * 31 + seed * 7 + (i >> 13)) & 255."""
    return bytes((i * 31 + seed * 7 + (i >> 13)) & 255 for i in range(size))


@pytest.fixture
def foreign_origin():
    """Python's http.server serving the page from a second port: the foreign origin, as its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                "--directory", str(PAGE_DIR)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    origin = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(origin + "/index.html", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield origin
    process.terminate()
    process.wait(timeout=10)


def restart(server, *flags: str) -> None:
    server.stop()
    server.start(*flags)


def open_page(driver, origin: str, server, **params) -> dict:
    query = urllib.parse.urlencode({"api": server.url, "token": server.customer, "case": server.case, **params})
    driver.get(f"{origin}/index.html?{query}")
    WebDriverWait(driver, 60).until(
        lambda d: (d.execute_script("return window.tusState") or {}).get("state") in ("paused", "done", "error"))
    return driver.execute_script("return window.tusState")


def unfinished(server) -> list[dict]:
    response = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.engineer), timeout=10)
    return response.json()["uploads"]


@pytest.mark.parametrize("override", ["0", "1"], ids=["patch", "method-override"])
def test_foreign_page_uploads_reloads_resumes_and_verifies(server, browser, foreign_origin, override):  # noqa: F811
    restart(server, "--cors-origin", foreign_origin)
    size, chunk, seed = 3 * 512 * KiB + 1234, 512 * KiB, 5
    params = {"size": size, "chunk": chunk, "seed": seed, "override": override}

    first = open_page(browser, foreign_origin, server, **params, stopAfter=2)
    assert first["state"] == "paused", first
    # The page read Location from the 201 and Upload-Offset from each append: both exposed.
    assert [entry["method"] for entry in first["log"]] == ["POST"] + ["POST" if override == "1" else "PATCH"] * 2
    assert [entry["status"] for entry in first["log"]] == [201, 204, 204]
    assert first["log"][0]["location"].startswith("/api/v1/uploads/")
    assert [entry["offset"] for entry in first["log"][1:]] == [str(chunk), str(2 * chunk)]
    assert all(entry["tusResumable"] == "1.0.0" for entry in first["log"])
    url = first["url"]
    head = requests.head(url, headers=auth(server.customer), timeout=10)
    assert head.headers["Upload-Offset"] == str(2 * chunk)

    # Reload mid-way: the page finds its upload URL in localStorage, asks HEAD where to resume, and finishes.
    second = open_page(browser, foreign_origin, server, **params)
    assert second["state"] == "done", second
    assert second["detail"] == url
    assert second["log"][0] == {"method": "HEAD", "status": 200, "location": None, "offset": str(2 * chunk),
                                "tusResumable": "1.0.0"}
    assert [entry["offset"] for entry in second["log"][1:]] == [str(3 * chunk), str(size)]

    upload_id = url.rsplit("/", 1)[1]
    shown = requests.get(f"{server.url}/api/v1/attachments/{upload_id}", headers=auth(server.customer), timeout=10)
    assert shown.status_code == 200, shown.text
    assert shown.json()["sha256"] == hashlib.sha256(page_bytes(size, seed)).hexdigest()
    assert shown.json()["size"] == size


@pytest.mark.parametrize("flags", [[], ["--cors-origin", UNLISTED]], ids=["no-cors-origin", "other-origin-listed"])
def test_foreign_page_is_refused_by_the_browser(server, browser, foreign_origin, flags):  # noqa: F811
    restart(server, *flags)
    state = open_page(browser, foreign_origin, server, size=4096, chunk=4096, seed=2)
    # The preflight of the creation POST is refused: the XHR errors with status 0 and nothing is created.
    assert state["state"] == "error", state
    assert state["log"] == [{"method": "POST", "status": 0, "error": True}]
    assert "failed at the network level (status 0)" in state["detail"]
    assert unfinished(server) == []


def cors_headers(response) -> dict:
    return {name.lower(): value for name, value in response.headers.items() if name.lower().startswith("access-control-")}


def test_preflight_answers_the_exact_headers_for_a_listed_origin_only(server):
    restart(server, "--cors-origin", LISTED, "--cors-origin", "http://localhost:3000")
    preflight = {"Access-Control-Request-Method": "PATCH",
                 "Access-Control-Request-Headers": "authorization,content-type,tus-resumable,upload-offset"}
    for path in (f"/api/v1/cases/{server.case}/uploads", "/api/v1/uploads/" + "0" * 32, "/api/v1/cases"):
        answer = requests.options(server.url + path, headers={"Origin": LISTED, **preflight}, timeout=10)
        assert answer.status_code == 204
        assert cors_headers(answer) == {
            "access-control-allow-origin": LISTED,
            "access-control-allow-methods": ALLOW_METHODS,
            "access-control-allow-headers": ALLOW_HEADERS,
            "access-control-max-age": "7200",
        }
        assert answer.headers["Vary"] == "Origin"
    second = requests.options(server.url + "/api/v1/cases", timeout=10,
                              headers={"Origin": "http://localhost:3000", **preflight})
    assert second.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"

    refused = requests.options(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=10,
                               headers={"Origin": UNLISTED, **preflight})
    assert cors_headers(refused) == {}
    assert refused.headers["Tus-Version"] == "1.0.0"  # answered as if CORS did not exist: tus discovery

    # An OPTIONS without Access-Control-Request-Method is tus discovery, and stays so for a listed origin.
    discovery = requests.options(f"{server.url}/api/v1/cases/{server.case}/uploads", headers={"Origin": LISTED}, timeout=10)
    assert discovery.status_code == 204
    assert discovery.headers["Tus-Version"] == "1.0.0"
    assert discovery.headers["Tus-Extension"].startswith("creation,")
    assert discovery.headers["Access-Control-Allow-Origin"] == LISTED
    assert discovery.headers["Access-Control-Expose-Headers"] == EXPOSE_HEADERS


def test_errors_made_outside_the_router_carry_cors_headers(server):
    restart(server, "--cors-origin", LISTED)
    uploads = f"{server.url}/api/v1/cases/{server.case}/uploads"
    created = requests.post(uploads, headers={**auth(server.customer), "Upload-Length": "10",
                                              "Upload-Metadata": f"filename {b64('a.bin')}"}, timeout=10)
    assert created.status_code == 201
    upload = server.url + created.headers["Location"]
    answers = {
        401: lambda origin: requests.post(uploads, headers={**TUS, "Origin": origin, "Upload-Length": "1"}, timeout=10),
        405: lambda origin: requests.put(upload, headers={**auth(server.customer), "Origin": origin}, timeout=10),
        412: lambda origin: requests.patch(upload, headers={"Authorization": f"Bearer {server.customer}", "Origin": origin,
                                                            "Upload-Offset": "0",
                                                            "Content-Type": "application/offset+octet-stream"},
                                           data=b"x", timeout=10),
    }
    for status, send in answers.items():
        listed = send(LISTED)
        assert listed.status_code == status, listed.text
        assert cors_headers(listed) == {"access-control-allow-origin": LISTED,
                                        "access-control-expose-headers": EXPOSE_HEADERS}, status
        assert "Origin" in listed.headers["Vary"]
        assert listed.headers["Content-Type"].startswith("application/json")
        unlisted = send(UNLISTED)
        assert unlisted.status_code == status
        assert cors_headers(unlisted) == {}, status
    # A success for a listed origin exposes what a tus client reads.
    head = requests.head(upload, headers={**auth(server.customer), "Origin": LISTED}, timeout=10)
    assert head.headers["Access-Control-Allow-Origin"] == LISTED
    assert head.headers["Upload-Offset"] == "0"


def test_cors_origin_must_be_an_origin(tmp_path):
    from conftest import BINARY
    for bad in ("https://portal.example/", "https://portal.example/path", "*", "null", "portal.example"):
        result = subprocess.run([str(BINARY), "serve", "--storage", str(tmp_path / "S"), "--cors-origin", bad],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "cors-origin" in result.stderr + result.stdout, bad
        assert "expected origins such as https://portal.example" in result.stderr + result.stdout, bad
