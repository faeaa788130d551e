"""The access-control matrix: every route against every kind of caller, from one table.

Columns: no token, a bad token, a customer of the case's account, a customer of another account, an
engineer, an admin. Each cell is the exact status; every refusal must carry the JSON error body (HEAD
refusals carry none, by HTTP). Routes that change state get fresh objects for every cell, so one cell never
depends on another. The table must name every route the router has: a new route without a row fails."""
import re

import pytest
import requests

from helpers import SUMMARY, TUS, b64, sha256_header

CALLERS = ["none", "bad", "own", "other", "engineer", "admin"]
UPLOAD = {"Upload-Length": "4", "Upload-Metadata": f"filename {b64('m.log')}"}


class World:
    """Tokens for every caller and helpers that make fresh cases, uploads and attachments as an admin."""

    def __init__(self, server):
        self.server = server
        self.tokens = {"none": None, "bad": "not-a-real-token-" + "x" * 20, "own": server.customer,
                       "other": server.cli("users", "create", "olga", "--role", "customer", "--account", "GLOBEX"),
                       "engineer": server.engineer, "admin": server.admin}

    def headers(self, caller: str, extra=None) -> dict:
        headers = dict(TUS)
        if self.tokens[caller]:
            headers["Authorization"] = f"Bearer {self.tokens[caller]}"
        headers.update(extra or {})
        return headers

    def as_admin(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = self.headers("admin", kwargs.pop("headers", None))
        response = requests.request(method, self.server.url + path, headers=headers, timeout=10, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response

    def new_case(self) -> str:
        return self.as_admin("POST", "/api/v1/cases", json={"account": "ACME", "subject": "matrix"}).json()["number"]

    def closed_case(self) -> str:
        number = self.new_case()
        self.as_admin("POST", f"/api/v1/cases/{number}/close", json={"subStatus": "Resolved"})
        return number

    def held_case(self) -> str:
        number = self.new_case()
        self.as_admin("POST", f"/api/v1/cases/{number}/hold")
        return number

    def upload(self, creator: str = "own") -> str:
        headers = self.headers(creator, UPLOAD)
        response = requests.post(f"{self.server.url}/api/v1/cases/{self.server.case}/uploads", headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        return response.headers["Location"].rsplit("/", 1)[1]

    def drop_token(self, case: str | None = None) -> dict:
        """A fresh drop credential (issue #20) for `case` (the server's case by default), made by the engineer."""
        return self.as_admin("POST", f"/api/v1/cases/{case or self.server.case}/drop-tokens").json()

    def partial_put(self, creator: str) -> str:
        """The curl front-end's URL of an unfinished upload `creator` made (2 of 4 bytes arrived)."""
        self.partials = getattr(self, "partials", 0) + 1
        path = f"/api/v1/cases/{self.server.case}/files/partial-{self.partials}.log"
        response = requests.put(self.server.url + path, data=b"da", timeout=10, headers={
            "Authorization": f"Bearer {self.tokens[creator]}", "Content-Range": "bytes 0-1/4"})
        assert response.status_code == 200, response.text
        return path

    def attachment(self) -> str:
        upload_id = self.upload("admin")  # only an upload's creator sends its bytes
        data = b"data"
        self.as_admin("PATCH", f"/api/v1/uploads/{upload_id}", data=data, headers={
            "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream", "Upload-Checksum": sha256_header(data)})
        return upload_id


CHUNK = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}

# (route as the router spells it, method, how to make the path, request extras, expected statuses by CALLERS)
# Customers of another account get 404 for anything inside a case: they must not learn that it exists.
MATRIX = [
    ("/healthz", "GET", lambda w: "/healthz", {}, [200, 200, 200, 200, 200, 200]),
    ("/readyz", "GET", lambda w: "/readyz", {}, [200, 200, 200, 200, 200, 200]),
    ("/", "GET", lambda w: "/", {}, [200, 200, 200, 200, 200, 200]),
    ("/cases/:number", "GET", lambda w: f"/cases/{w.server.case}", {}, [200, 200, 200, 200, 200, 200]),
    ("/static/app.js", "GET", lambda w: "/static/app.js", {}, [200, 200, 200, 200, 200, 200]),
    ("/static/app.css", "GET", lambda w: "/static/app.css", {}, [200, 200, 200, 200, 200, 200]),
    ("/static/bundles.js", "GET", lambda w: "/static/bundles.js", {}, [200, 200, 200, 200, 200, 200]),
    ("/api/v1/openapi.json", "GET", lambda w: "/api/v1/openapi.json", {}, [200, 200, 200, 200, 200, 200]),
    ("/api/v1/cases", "GET", lambda w: "/api/v1/cases", {}, [401, 401, 200, 200, 200, 200]),
    ("/api/v1/cases", "POST", lambda w: "/api/v1/cases", {"json": {"account": "ACME", "subject": "new"}},
     [401, 401, 403, 403, 201, 201]),
    ("/api/v1/cases/:number", "GET", lambda w: f"/api/v1/cases/{w.server.case}", {}, [401, 401, 200, 404, 200, 200]),
    ("/api/v1/cases/:number", "PATCH", lambda w: f"/api/v1/cases/{w.new_case()}",
     {"json": {"status": "Awaiting Info", "subStatus": "Info required from the customer"}},
     [401, 401, 403, 404, 200, 200]),
    ("/api/v1/cases/:number/close", "POST", lambda w: f"/api/v1/cases/{w.new_case()}/close",
     {"json": {"subStatus": "Resolved"}}, [401, 401, 200, 404, 200, 200]),
    ("/api/v1/cases/:number/reopen", "POST", lambda w: f"/api/v1/cases/{w.closed_case()}/reopen", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/cases/:number/history", "GET", lambda w: f"/api/v1/cases/{w.server.case}/history", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/cases/:number/hold", "POST", lambda w: f"/api/v1/cases/{w.new_case()}/hold", {},
     [401, 401, 403, 404, 403, 200]),
    ("/api/v1/cases/:number/hold", "DELETE", lambda w: f"/api/v1/cases/{w.held_case()}/hold", {},
     [401, 401, 403, 404, 403, 200]),
    ("/api/v1/cases/:number/attachments", "GET", lambda w: f"/api/v1/cases/{w.server.case}/attachments", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/purge-runs", "GET", lambda w: "/api/v1/purge-runs", {}, [401, 401, 403, 403, 403, 200]),
    ("/api/v1/access-log", "GET", lambda w: "/api/v1/access-log", {}, [401, 401, 403, 403, 403, 200]),
    # tus discovery is anonymous by design: clients probe it before they have credentials.
    ("/api/v1/cases/:number/uploads", "OPTIONS", lambda w: f"/api/v1/cases/{w.server.case}/uploads", {},
     [204, 204, 204, 204, 204, 204]),
    ("/api/v1/cases/:number/uploads", "POST", lambda w: f"/api/v1/cases/{w.server.case}/uploads",
     {"headers": UPLOAD}, [401, 401, 201, 404, 201, 201]),
    ("/api/v1/uploads/:id", "OPTIONS", lambda w: f"/api/v1/uploads/{w.upload()}", {}, [204, 204, 204, 204, 204, 204]),
    ("/api/v1/uploads/:id", "HEAD", lambda w: f"/api/v1/uploads/{w.upload()}", {}, [401, 401, 200, 404, 200, 200]),
    # Only an upload's creator sends its bytes (issue #17): staff may terminate a customer's upload, not append to it.
    ("/api/v1/uploads/:id", "PATCH", lambda w: f"/api/v1/uploads/{w.upload()}", {"data": b"da", "headers": CHUNK},
     [401, 401, 204, 404, 403, 403]),
    ("/api/v1/uploads/:id", "DELETE", lambda w: f"/api/v1/uploads/{w.upload()}", {}, [401, 401, 204, 404, 204, 204]),
    # The same routes on an upload an engineer started: a customer may not touch it.
    ("/api/v1/uploads/:id", "PATCH", lambda w: f"/api/v1/uploads/{w.upload('engineer')}",
     {"data": b"da", "headers": CHUNK}, [401, 401, 403, 404, 204, 403]),
    ("/api/v1/uploads/:id", "DELETE", lambda w: f"/api/v1/uploads/{w.upload('engineer')}", {},
     [401, 401, 403, 404, 204, 204]),
    # And on an admin's: no one else appends, not even another admin's role; an engineer may still terminate it.
    ("/api/v1/uploads/:id", "PATCH", lambda w: f"/api/v1/uploads/{w.upload('admin')}",
     {"data": b"da", "headers": CHUNK}, [401, 401, 403, 404, 403, 204]),
    ("/api/v1/uploads/:id", "HEAD", lambda w: f"/api/v1/uploads/{w.upload('admin')}", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/uploads/:id", "DELETE", lambda w: f"/api/v1/uploads/{w.upload('admin')}", {},
     [401, 401, 403, 404, 204, 204]),
    # Drop credentials (issue #20): made, listed and revoked by staff only.
    ("/api/v1/cases/:number/drop-tokens", "POST", lambda w: f"/api/v1/cases/{w.server.case}/drop-tokens", {},
     [401, 401, 403, 404, 201, 201]),
    ("/api/v1/cases/:number/drop-tokens", "GET", lambda w: f"/api/v1/cases/{w.server.case}/drop-tokens", {},
     [401, 401, 403, 404, 200, 200]),
    ("/api/v1/cases/:number/drop-tokens/:tokenID", "DELETE",
     lambda w: f"/api/v1/cases/{w.server.case}/drop-tokens/{w.drop_token()['id']}", {}, [401, 401, 403, 404, 204, 204]),
    # The curl front-end: a PUT is a new attachment for anyone who may upload; HEAD finds only the caller's own
    # unfinished upload of that name (here the customer's).
    ("/api/v1/cases/:number/files/:filename", "PUT", lambda w: f"/api/v1/cases/{w.server.case}/files/m.log",
     {"data": b"data"}, [401, 401, 201, 404, 201, 201]),
    ("/api/v1/cases/:number/files/:filename", "HEAD", lambda w: w.partial_put("own"), {}, [401, 401, 200, 404, 404, 404]),
    ("/api/v1/attachments/:id", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/attachments/:id/link", "POST", lambda w: f"/api/v1/attachments/{w.attachment()}/link", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/attachments/:id/content", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}/content", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/attachments/:id/content", "HEAD", lambda w: f"/api/v1/attachments/{w.attachment()}/content", {},
     [401, 401, 200, 404, 200, 200]),
    # The attachment is 4 bytes of text: listed as not an archive (200, or pending), its entries refused with 409.
    ("/api/v1/attachments/:id/entries", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}/entries", {},
     [401, 401, 200, 404, 200, 200]),
    ("/api/v1/attachments/:id/entries/**", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}/entries/a.log", {},
     [401, 401, 409, 404, 409, 409]),
]


def router_routes() -> set[tuple[str, str]]:
    """Every (path, method) the Swift sources register, read from the controllers themselves."""
    from conftest import ROOT
    found = set()
    prefix = {"router": "", "group": "/api/v1"}
    for source in (ROOT / "Sources").rglob("*.swift"):
        text = source.read_text()
        for receiver, method, path in re.findall(r'\b(router|group)\.(get|post|put|patch|delete|head)\("([^"]*)"', text):
            found.add((prefix[receiver] + "/" + path.strip("/"), method.upper()))
        for receiver, path, method in re.findall(r'\b(router|group)\.on\("([^"]*)", method: \.(\w+)', text):
            found.add((prefix[receiver] + "/" + path.strip("/"), method.upper()))
    return {(path.rstrip("/") or "/", method) for path, method in found}


def test_the_matrix_names_every_route():
    routes = router_routes()
    assert len(routes) > 25  # the scan itself works
    assert routes == {(route, method) for route, method, *_ in MATRIX}


def test_every_route_against_every_caller(server):
    world = World(server)
    checked = 0
    failures = []
    for route, method, make_path, extras, expected in MATRIX:
        for caller, status in zip(CALLERS, expected):
            kwargs = dict(extras)
            headers = world.headers(caller, kwargs.pop("headers", None))
            response = requests.request(method, server.url + make_path(world), headers=headers, timeout=10, **kwargs)
            cell = f"{method} {route} as {caller}: {response.status_code}, expected {status}"
            json_answer = response.headers.get("Content-Type", "").startswith("application/json") \
                and not route.endswith("openapi.json")  # the public API description may be revalidated
            if response.status_code != status:
                failures.append(cell + f" {response.text[:120]}")
            elif response.headers.get("X-Content-Type-Options") != "nosniff" or "Cache-Control" not in response.headers:
                failures.append(cell + f" without nosniff or a caching rule: {dict(response.headers)}")
            elif json_answer and response.headers["Cache-Control"] != "no-store":
                # JSON answers hold customer data (subjects, file names, upload state): no cache may keep them.
                failures.append(cell + f" JSON with Cache-Control {response.headers['Cache-Control']!r}")
            elif status >= 400 and method != "HEAD":
                body = response.json()
                if not (body.get("error") and body.get("message")):
                    failures.append(cell + " without a JSON error body")
            checked += 1
    assert not failures, "\n".join(failures)
    assert checked == len(MATRIX) * len(CALLERS)
    SUMMARY["access-matrix cells checked (route x caller)"] += checked
    SUMMARY["statuses and error codes checked"] += checked


# A drop credential (issue #20) for the server's case, as `curl -u 00001413:TOKEN` sends it: it uploads into its case
# and sees its own uploads; anything else in its case is 403, another case 404 (as for a customer of another account);
# an expired, revoked or closed-case credential is 401. (description, method, path, extras, credential, status, code)
OTHER_CASE = {"account": "GLOBEX", "subject": "another account's case"}
DROP_ROWS = [
    ("read an attachment", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}", {}, "live", 403, "drop_credential_upload_only"),
    ("download an attachment", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}/content", {}, "live", 403,
     "drop_credential_upload_only"),
    ("link an attachment", "POST", lambda w: f"/api/v1/attachments/{w.attachment()}/link", {}, "live", 403,
     "drop_credential_upload_only"),
    ("list the cases", "GET", lambda w: "/api/v1/cases", {}, "live", 403, "drop_credential_upload_only"),
    ("read its case", "GET", lambda w: f"/api/v1/cases/{w.server.case}", {}, "live", 403, "drop_credential_upload_only"),
    ("list its case's attachments", "GET", lambda w: f"/api/v1/cases/{w.server.case}/attachments", {}, "live", 403,
     "drop_credential_upload_only"),
    ("make another drop credential", "POST", lambda w: f"/api/v1/cases/{w.server.case}/drop-tokens", {}, "live", 403,
     "drop_credential_upload_only"),
    ("close its case", "POST", lambda w: f"/api/v1/cases/{w.server.case}/close", {"json": {"subStatus": "Resolved"}}, "live",
     403, "drop_credential_upload_only"),
    ("read another case", "GET", lambda w: f"/api/v1/cases/{w.new_case()}", {}, "live", 404, "case_not_found"),
    ("list another case's attachments", "GET", lambda w: f"/api/v1/cases/{w.new_case()}/attachments", {}, "live", 404,
     "case_not_found"),
    ("PUT into another case", "PUT", lambda w: f"/api/v1/cases/{w.new_case()}/files/x.log", {"data": b"x"}, "live", 404,
     "case_not_found"),
    ("tus-create in another case", "POST", lambda w: f"/api/v1/cases/{w.new_case()}/uploads", {"headers": UPLOAD}, "live",
     404, "case_not_found"),
    ("HEAD another user's upload in its case", "HEAD", lambda w: f"/api/v1/uploads/{w.upload('own')}", {}, "live", 403, None),
    ("append to another user's upload in its case", "PATCH", lambda w: f"/api/v1/uploads/{w.upload('own')}",
     {"data": b"da", "headers": CHUNK}, "live", 403, "not_upload_creator"),
    ("PUT into its case", "PUT", lambda w: f"/api/v1/cases/{w.server.case}/files/x.log", {"data": b"x"}, "live", 201, None),
    ("tus-create in its case", "POST", lambda w: f"/api/v1/cases/{w.server.case}/uploads", {"headers": UPLOAD}, "live", 201,
     None),
    ("PUT with an expired credential", "PUT", lambda w: f"/api/v1/cases/{w.server.case}/files/x.log", {"data": b"x"},
     "expired", 401, "invalid_token"),
    ("PUT with a revoked credential", "PUT", lambda w: f"/api/v1/cases/{w.server.case}/files/x.log", {"data": b"x"},
     "revoked", 401, "invalid_token"),
    ("tus-create with a closed case's credential", "POST", lambda w: f"/api/v1/cases/{w.closed_drop_case}/uploads",
     {"headers": UPLOAD}, "closed", 401, "invalid_token"),
    ("read an attachment with a revoked credential", "GET", lambda w: f"/api/v1/attachments/{w.attachment()}", {},
     "revoked", 401, "invalid_token"),
]


def test_drop_credential_rows(server):
    import sqlite3
    world = World(server)
    live = world.drop_token()
    expired = world.drop_token()
    with sqlite3.connect(server.storage / "casefiles.sqlite", timeout=10) as db:
        db.execute("UPDATE dropToken SET expiresAt = '2001-01-01 00:00:00.000' WHERE id = ?", (expired["id"],))
    revoked = world.drop_token()
    world.as_admin("DELETE", f"/api/v1/cases/{server.case}/drop-tokens/{revoked['id']}")
    world.closed_drop_case = world.new_case()
    closed = world.drop_token(world.closed_drop_case)
    world.as_admin("POST", f"/api/v1/cases/{world.closed_drop_case}/close", json={"subStatus": "Resolved"})
    credentials = {"live": (server.case, live), "expired": (server.case, expired), "revoked": (server.case, revoked),
                   "closed": (world.closed_drop_case, closed)}
    failures = []
    for what, method, make_path, extras, credential, status, code in DROP_ROWS:
        kwargs = dict(extras)
        headers = {**TUS, **kwargs.pop("headers", {})}
        number, token = credentials[credential]
        response = requests.request(method, server.url + make_path(world), headers=headers, timeout=10,
                                    auth=(number, token["token"]), **kwargs)
        got_code = response.json().get("error") if method != "HEAD" and response.status_code >= 400 else None
        if (response.status_code, got_code) != (status, code):
            failures.append(f"{what} ({credential}): {response.status_code} {got_code}, expected {status} {code}")
    assert not failures, "\n".join(failures)
    SUMMARY["access-matrix cells checked (route x caller)"] += len(DROP_ROWS)
    SUMMARY["statuses and error codes checked"] += len(DROP_ROWS)
