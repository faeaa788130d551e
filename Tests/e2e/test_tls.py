"""End-to-end: `serve --tls-cert --tls-key` with a test CA made by `openssl`, and the certificate reloaded on
SIGHUP while an upload started before it goes on."""
import hashlib
import shutil
import signal
import socket
import ssl
import subprocess
import time

import requests

from conftest import Server
from helpers import auth, metadata, pattern, sha256_header


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=CaseFiles test CA", cwd=directory)


def make_server_cert(directory, name: str, serial: str):
    """A certificate for 127.0.0.1 signed by the test CA, with the given hex serial."""
    (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", "/CN=127.0.0.1", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", f"0x{serial}",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)


def peer_serial(port: int, ca) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()["serialNumber"]


def start_tls(server, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki)
    make_server_cert(pki, "one", "1111")
    shutil.copy(pki / "one.pem", pki / "server.pem")
    shutil.copy(pki / "one.key", pki / "server.key")
    server.stop()
    server.url = f"https://127.0.0.1:{server.port}"
    server.process = subprocess.Popen(
        [str(server_binary()), "serve", "--storage", str(server.storage), "--port", str(server.port),
         "--min-free-space", "0", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")],
        stdout=server.log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(server.url + "/healthz", verify=str(pki / "ca.pem"), timeout=1).status_code == 200:
                return pki
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "serve did not answer over HTTPS; see server.log"
            time.sleep(0.05)


def server_binary():
    from conftest import BINARY
    return BINARY


def test_tus_upload_and_range_download_over_https(server, tmp_path):
    pki = start_tls(server, tmp_path)
    ca = str(pki / "ca.pem")
    data = pattern(3 * 1024 * 1024 + 17, seed=7)
    digest = hashlib.sha256(data).hexdigest()
    headers = {**auth(server.customer), "Upload-Length": str(len(data)), "Upload-Metadata": metadata("tls.bin", digest)}
    created = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=headers, verify=ca, timeout=10)
    assert created.status_code == 201, created.text
    url = server.url + created.headers["Location"]
    offset = 0
    for chunk in (data[:2 * 1024 * 1024], data[2 * 1024 * 1024:]):
        answer = requests.patch(url, data=chunk, verify=ca, timeout=30, headers={
            **auth(server.customer), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": sha256_header(chunk)})
        assert answer.status_code == 204, answer.text
        offset += len(chunk)
        assert answer.headers["Upload-Offset"] == str(offset)
    upload_id = created.headers["Location"].rsplit("/", 1)[1]
    content = f"{server.url}/api/v1/attachments/{upload_id}/content"
    whole = requests.get(content, headers=auth(server.customer), verify=ca, timeout=30)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == digest
    part = requests.get(content, headers={**auth(server.customer), "Range": "bytes=1000000-1000999"}, verify=ca, timeout=30)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000000-1000999/{len(data)}"
    assert part.content == data[1000000:1001000]
    # Plain HTTP on the TLS port gets no HTTP answer.
    try:
        plain = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert plain.status_code != 200
    except requests.ConnectionError:
        pass


def test_sighup_reloads_the_certificate_while_an_upload_goes_on(server, tmp_path):
    pki = start_tls(server, tmp_path)
    ca = pki / "ca.pem"
    assert peer_serial(server.port, ca) == "1111"
    data = pattern(2 * 1024 * 1024, seed=9)
    headers = {**auth(server.customer), "Upload-Length": str(len(data)), "Upload-Metadata": metadata("reload.bin")}
    created = requests.post(f"{server.url}/api/v1/cases/{server.case}/uploads", headers=headers, verify=str(ca), timeout=10)
    assert created.status_code == 201
    path = created.headers["Location"]

    # Half a PATCH on a connection made under the first certificate...
    context = ssl.create_default_context(cafile=str(ca))
    upload = context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=30),
                                 server_hostname="127.0.0.1")
    assert upload.getpeercert()["serialNumber"] == "1111"
    upload.sendall((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.customer}\r\n"
                    f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                    f"Upload-Checksum: {sha256_header(data)}\r\nContent-Length: {len(data)}\r\n\r\n").encode())
    upload.sendall(data[:len(data) // 2])

    # ...then a new certificate in the same files, and SIGHUP: new connections see it.
    make_server_cert(pki, "two", "2222")
    shutil.copy(pki / "two.pem", pki / "server.pem")
    shutil.copy(pki / "two.key", pki / "server.key")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while peer_serial(server.port, ca) != "2222":
        assert time.monotonic() < deadline, "a new connection still gets the old certificate"
        time.sleep(0.1)
    assert server.process.poll() is None

    # The upload begun under the old certificate finishes on its connection.
    upload.sendall(data[len(data) // 2:])
    reply = b""
    while b"\r\n\r\n" not in reply:
        piece = upload.recv(65536)
        assert piece, "connection closed before the answer"
        reply += piece
    upload.close()
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 204"), head
    assert f"Upload-Offset: {len(data)}".lower() in head.lower()
    listed = requests.get(f"{server.url}/api/v1/attachments/{path.rsplit('/', 1)[1]}", headers=auth(server.customer),
                          verify=str(ca), timeout=10)
    assert listed.json()["sha256"] == hashlib.sha256(data).hexdigest()
