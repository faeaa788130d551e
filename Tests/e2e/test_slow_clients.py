"""Slow and stuck clients are cut off (408) while other uploads keep working; what they sent is kept."""
import hashlib
import socket
import threading
import time

from helpers import SUMMARY, pattern, sha256_header
from test_uploads import MiB, _raw_patch_start, attachments, create, head_offset, patch


def read_status(sock, timeout) -> str:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    except socket.timeout:
        return "timeout"
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def test_stalled_and_trickling_clients_are_cut_off(server):
    server.stop()
    server.start("--stall-timeout", "2", "--min-upload-rate", "65536")

    stalled_data = pattern(10 * MiB, seed=50)
    stalled_url = create(server, len(stalled_data), "stalled.log")
    stalled = _raw_patch_start(server, stalled_url, 0, len(stalled_data), stalled_data[:MiB])

    trickle_data = pattern(4 * MiB, seed=51)
    trickle_url = create(server, len(trickle_data), "trickle.log")
    trickle = _raw_patch_start(server, trickle_url, 0, len(trickle_data), b"", checksum=sha256_header(trickle_data))
    stop = threading.Event()

    def drip():  # 2.5 KB/s: every tiny part would reset a plain idle timer
        sent = 0
        while not stop.is_set() and sent < len(trickle_data):
            try:
                trickle.sendall(trickle_data[sent:sent + 512])
            except OSError:
                return
            sent += 512
            time.sleep(0.2)

    dripping = threading.Thread(target=drip)
    dripping.start()

    # Meanwhile an ordinary upload goes through untouched.
    normal = pattern(8 * MiB, seed=52)
    normal_url = create(server, len(normal), "normal.log")
    assert patch(server, normal_url, 0, normal).status_code == 204

    assert read_status(stalled, 15).startswith("HTTP/1.1 408"), "the stalled request was not cut off"
    assert read_status(trickle, 15).startswith("HTTP/1.1 408"), "the trickling request was not cut off"
    SUMMARY["stalled or trickling clients cut off"] += 2
    stop.set()
    dripping.join(5)
    stalled.close()
    trickle.close()

    assert head_offset(server, stalled_url) == MiB          # no checksum: what arrived is kept
    assert head_offset(server, trickle_url) == 0            # with a checksum: all or nothing
    assert patch(server, stalled_url, MiB, stalled_data[MiB:]).status_code == 204
    done = {a["filename"]: a["sha256"] for a in attachments(server)["attachments"]}
    assert done["stalled.log"] == hashlib.sha256(stalled_data).hexdigest()
    assert done["normal.log"] == hashlib.sha256(normal).hexdigest()
