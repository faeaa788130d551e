"""Issue #18: no bearer token and no signed-link signature appears in any log line of the end-to-end run.

Runs last (the files run in name order): every server the suite started registered its log (`conftest.LOGS`),
every token made through `Server.cli("users", "create")` and every link signature a JSON response handed out
was recorded (`conftest.SECRETS`). Run alone, it makes its own: a server, tokens used in good and bad requests,
a signed link downloaded."""
import hashlib

import requests

import conftest
from conftest import LOGS, SECRETS
from helpers import auth, pattern
from test_downloads import upload_file


def test_this_run_logged_requests_carrying_secrets(server):
    # Requests that carry each kind of secret, so at least this test's log has something to leak.
    data = pattern(1 << 20, seed=29)
    attachment = upload_file(server, data, "secrets.bin")
    link = requests.post(f"{server.url}/api/v1/attachments/{attachment}/link", headers=auth(server.customer), timeout=10)
    assert link.status_code in (200, 201), link.text
    url = link.json()["url"]
    assert hashlib.sha256(requests.get(server.url + url if url.startswith("/") else url, timeout=30).content).hexdigest() \
        == hashlib.sha256(data).hexdigest()
    wrong = server.customer[:-4] + "zzzz"
    SECRETS.add(wrong)
    assert requests.get(f"{server.url}/api/v1/cases", headers=auth(wrong), timeout=10).status_code == 401
    requests.get(f"{server.url}/api/v1/cases?token={server.customer}", timeout=10)  # a token in the query, by mistake
    server.stop()


def test_no_log_line_of_the_run_carries_a_token_or_a_signature():
    assert SECRETS, "the run recorded no secret: the recording in conftest is broken"
    assert LOGS, "the run started no server"
    checked = 0
    for log in LOGS:
        if not log.exists():
            continue
        text = log.read_text(errors="replace")
        checked += text.count("\n")
        leaked = sorted(secret for secret in SECRETS if secret in text)
        assert not leaked, f"{log} carries {len(leaked)} secret(s), e.g. ...{leaked[0][-6:]}"
    assert checked > 0
    print(f"\n[report] {checked} log lines of {len(LOGS)} servers checked against {len(SECRETS)} secrets")
