"""End-to-end webhooks: events for the case system from the outbox, signed, retried with backoff through a
receiver that refuses at first, and not lost to a SIGKILL between the state change and the delivery."""
import datetime
import hashlib
import hmac
import json
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from conftest import SECRETS
from test_drop import make_drop
from test_operations import scrape, value

from conftest import free_port
from helpers import auth, pattern
from test_downloads import upload_file
from test_retention import run_purge
from test_uploads import MiB, create, patch


class Receiver:
    """The case system's end: answers 500 to the first `refusals` POSTs of each event id, then 200."""

    def __init__(self, port, refusals=0):
        self.deliveries, self.refusals, self.lock = [], refusals, threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    event_id = self.headers["CaseFiles-Event-Id"]
                    seen = sum(1 for d in receiver.deliveries if d["id"] == event_id)
                    receiver.deliveries.append({"id": event_id, "body": body, "signature": self.headers["CaseFiles-Signature"],
                                                "answered": 500 if seen < receiver.refusals else 200})
                    status = receiver.deliveries[-1]["answered"]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/hooks/casefiles"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self):
        self.http.shutdown()
        self.http.server_close()

    def accepted(self):
        with self.lock:
            return {d["id"] for d in self.deliveries if d["answered"] == 200}


def verify_signature(delivery, secret: bytes):
    """What a receiver does (README, "Webhooks"): HMAC-SHA-256 over "<t>.<body>", compared in constant time."""
    fields = dict(part.split("=", 1) for part in delivery["signature"].split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + delivery["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    assert abs(time.time() - int(fields["t"])) < 300


def outbox(server):
    rows = [line.split("\t") for line in server.cli("events", "list").splitlines()]
    return {row[0]: {"type": row[1], "state": row[2], "attempts": int(row[3])} for row in rows}


def wait_for(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_every_event_arrives_signed_through_a_receiver_that_refuses_three_times(server, tmp_path):
    receiver = Receiver(free_port(), refusals=3)
    secret_file = tmp_path / "webhook.secret"
    server.stop()
    metrics_port = free_port()
    server.start("--webhook", receiver.url, "--webhook-secret-file", str(secret_file), "--webhook-retry-base", "0.2s",
                 "--metrics-listen", f"127.0.0.1:{metrics_port}")
    try:
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, "generated private when missing"
        secret = secret_file.read_text().strip().encode()
        verified = [upload_file(server, pattern(MiB + n, seed=30 + n), f"v-{n}.log") for n in range(2)]
        data = pattern(MiB, seed=39)
        url = create(server, len(data), "wrong.bin", sha256=hashlib.sha256(b"something else").hexdigest())
        assert patch(server, url, 0, data).status_code == 422
        failed = url.rsplit("/", 1)[1]
        # A drop credential used twice: one first-use event, however often it is used.
        drop = make_drop(server)
        SECRETS.add(drop["token"])
        for n in range(2):
            put = requests.put(f"{server.url}/api/v1/cases/{server.case}/files/dropped-{n}.log", data=pattern(1000, seed=n),
                               auth=(server.case, drop["token"]), timeout=10)
            assert put.status_code == 201, put.text
        closed = requests.post(f"{server.url}/api/v1/cases/{server.case}/close", headers={
            **auth(server.customer), "Content-Type": "application/json"}, json={"subStatus": "Resolved"}, timeout=10)
        assert closed.status_code == 200
        as_of = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert run_purge(server, "--as-of", as_of, "--force").returncode == 0  # another process: the CLI

        events = outbox(server)
        assert sorted(e["type"] for e in events.values()) == [
            "attachment.verified", "attachment.verified", "attachment.verified", "attachment.verified", "case.purged",
            "drop_credential.first_used", "upload.failed"]
        wait_for(lambda: receiver.accepted() == set(events))
        for delivery in receiver.deliveries:
            verify_signature(delivery, secret)
            assert json.loads(delivery["body"])["id"] == delivery["id"]
        for event_id in events:
            answers = [d["answered"] for d in receiver.deliveries if d["id"] == event_id]
            assert answers == [500, 500, 500, 200], (event_id, answers)
        bodies = {d["id"]: json.loads(d["body"]) for d in receiver.deliveries}
        verified_events = {b["data"]["uploadID"]: b for b in bodies.values() if b["type"] == "attachment.verified"}
        assert set(verified) <= set(verified_events) and len(verified_events) == 4
        [first_use] = [b for b in bodies.values() if b["type"] == "drop_credential.first_used"]
        assert first_use["data"] == {"caseNumber": server.case, "dropCredentialID": drop["id"]}
        assert drop["token"] not in json.dumps(bodies)
        assert verified_events[verified[0]]["data"]["sha256"] == hashlib.sha256(pattern(MiB, seed=30)).hexdigest()
        failure = next(b for b in bodies.values() if b["type"] == "upload.failed")
        assert failure["data"]["uploadID"] == failed and failure["data"]["reason"] == "sha256_mismatch"
        purged = next(b for b in bodies.values() if b["type"] == "case.purged")
        assert purged["data"]["caseNumber"] == server.case and purged["data"]["itemsPurged"] == 4
        wait_for(lambda: all(e["state"] == "delivered" and e["attempts"] == 4 for e in outbox(server).values()))
        # The outbox as the metrics show it: all seven delivered, none pending or dead.
        samples = scrape(f"http://127.0.0.1:{metrics_port}")
        assert [value(samples, "casefiles_webhook_events", state=state) for state in ("pending", "delivered", "dead")] \
            == [0, 7, 0]
    finally:
        receiver.stop()


def test_a_sigkill_between_the_state_change_and_the_delivery_loses_nothing(server, tmp_path):
    port = free_port()  # nothing listens yet: every attempt is refused
    url = f"http://127.0.0.1:{port}/hooks/casefiles"
    flags = ("--webhook", url, "--webhook-secret-file", str(tmp_path / "secret"), "--webhook-retry-base", "0.2s")
    server.stop()
    server.start(*flags)
    attachment = upload_file(server, pattern(2 * MiB, seed=50), "crash.log")
    wait_for(lambda: next(iter(outbox(server).values()))["attempts"] >= 1)
    server.kill()
    [(event_id, event)] = outbox(server).items()
    assert event["state"] == "pending" and event["type"] == "attachment.verified"

    receiver = Receiver(port)
    try:
        server.start(*flags)
        wait_for(lambda: receiver.accepted() == {event_id})
        body = json.loads(receiver.deliveries[0]["body"])
        assert body["data"]["uploadID"] == attachment
        verify_signature(receiver.deliveries[0], (tmp_path / "secret").read_text().strip().encode())
        wait_for(lambda: outbox(server)[event_id]["state"] == "delivered")
    finally:
        receiver.stop()
