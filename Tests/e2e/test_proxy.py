"""End-to-end: `--trusted-proxy` deciding whose forwarding headers count, and Debian's nginx in front of
CaseFiles with the committed configuration (Scripts/nginx/casefiles.conf.template): an upload through it,
cut mid-way, resumed and verified."""
import hashlib
import os
import shutil
import socket
import subprocess
import time

import pytest
import requests

from conftest import ROOT, free_port
from helpers import auth, metadata, pattern, sha256_header

MiB = 1024 * 1024


def create(server, base: str, extra=None, name="p.log", length=10, sha256=None):
    headers = {**auth(server.customer), "Upload-Length": str(length), "Upload-Metadata": metadata(name, sha256),
               **(extra or {})}
    response = requests.post(f"{base}/api/v1/cases/{server.case}/uploads", headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def test_an_untrusted_peers_forwarding_headers_are_ignored(server):
    server.stop()
    server.start("--trusted-proxy", "10.0.0.0/8")
    location = create(server, server.url, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert location.startswith("/api/v1/uploads/") and len(location) == len("/api/v1/uploads/") + 32, location
    location = create(server, server.url, {"Forwarded": 'for=203.0.113.9;proto=https;host="evil.example"'})
    assert location.startswith("/api/v1/uploads/"), location


def test_a_trusted_proxys_forwarding_headers_make_location_absolute(server):
    server.stop()
    server.start("--trusted-proxy", "192.0.2.0/24", "--trusted-proxy", "127.0.0.1")
    location = create(server, server.url, {"X-Forwarded-Host": "files.example.com", "X-Forwarded-Proto": "https",
                                           "X-Forwarded-For": "198.51.100.7"})
    assert location.startswith("https://files.example.com/api/v1/uploads/"), location
    # Forwarded (RFC 7239) wins over X-Forwarded-*; a host that could break the URL is not used.
    location = create(server, server.url, {"Forwarded": 'for=203.0.113.9;proto=https;host="desk.example.com:8443"',
                                           "X-Forwarded-Host": "files.example.com"})
    assert location.startswith("https://desk.example.com:8443/api/v1/uploads/"), location
    location = create(server, server.url, {"X-Forwarded-Host": "evil.example/x?"})
    assert location.startswith("/api/v1/uploads/"), location
    # The upload named by the absolute Location is the one created.
    upload_id = location.rsplit("/", 1)[1]
    head = requests.head(f"{server.url}/api/v1/uploads/{upload_id}", headers=auth(server.customer), timeout=10)
    assert head.headers["Upload-Offset"] == "0"


@pytest.fixture
def nginx(tmp_path, server):
    """Debian's nginx in the foreground on a loopback port, with the committed server block."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        pytest.fail("nginx is missing: Scripts/bootstrap --with-python installs it")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(prefix, 0o777)  # the worker (nobody, when the test runs as root) writes its temp files here
    port = free_port()
    template = (ROOT / "Scripts" / "nginx" / "casefiles.conf.template").read_text()
    (prefix / "casefiles.conf").write_text(
        template.replace("{{listen}}", f"127.0.0.1:{port}").replace("{{upstream}}", f"127.0.0.1:{server.port}"))
    (prefix / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/casefiles.conf;
}}
""")
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_upload_through_nginx_cut_and_resumed(server, nginx):
    server.stop()
    server.start("--trusted-proxy", "127.0.0.1")
    data = pattern(8 * MiB + 5, seed=3)
    digest = hashlib.sha256(data).hexdigest()
    location = create(server, nginx, name="through-nginx.bin", length=len(data), sha256=digest)
    # nginx sent X-Forwarded-Host (the Host the client used) and CaseFiles trusts 127.0.0.1: the Location
    # names nginx, not CaseFiles' own port.
    assert location.startswith(f"{nginx}/api/v1/uploads/"), location
    path = location[len(nginx):]

    # Half a PATCH through nginx, then the client vanishes.
    half = 4 * MiB
    cut = socket.create_connection(("127.0.0.1", int(nginx.rsplit(":", 1)[1])), timeout=30)
    cut.sendall((f"PATCH {path} HTTP/1.1\r\nHost: {nginx[len('http://'):]}\r\n"
                 f"Authorization: Bearer {server.customer}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                 f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode())
    cut.sendall(data[:half])
    time.sleep(0.5)
    cut.close()

    # proxy_request_buffering off: the bytes reached CaseFiles as they came, so it committed some of them.
    deadline = time.monotonic() + 15
    offset = 0
    while True:
        head = requests.head(location, headers=auth(server.customer), timeout=10)
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        if offset > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 0 < offset <= half

    # Resume from the server's offset, through nginx, in one PATCH with its checksum.
    rest = data[offset:]
    answer = requests.patch(location, data=rest, timeout=60, headers={
        **auth(server.customer), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": sha256_header(rest)})
    assert answer.status_code == 204, answer.text
    assert answer.headers["Upload-Offset"] == str(len(data))
    content = requests.get(f"{nginx}/api/v1/attachments/{path.rsplit('/', 1)[1]}/content",
                           headers=auth(server.customer), timeout=60)
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == digest
