"""Helpers for the bundle tests: upload an archive, wait for its index, list and read entries."""
import hashlib
import time
from urllib.parse import quote

import requests

from helpers import auth
from test_uploads import MiB, create, patch


def upload_archive(server, data: bytes, name: str) -> str:
    url = create(server, len(data), name, sha256=hashlib.sha256(data).hexdigest())
    for start in range(0, len(data), 8 * MiB):
        assert patch(server, url, start, data[start:start + 8 * MiB]).status_code == 204
    return url.rsplit("/", 1)[1]


def listing(server, attachment: str, **params) -> dict:
    response = requests.get(f"{server.url}/api/v1/attachments/{attachment}/entries", params=params,
                            headers=auth(server.engineer), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_indexed(server, attachment: str, timeout: float = 300) -> dict:
    """The first page of the listing once the index is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        page = listing(server, attachment)
        if page["state"] != "pending":
            return page
        assert time.monotonic() < deadline, "the index stayed pending"
        time.sleep(0.2)


def all_entries(server, attachment: str, **params) -> list:
    entries, after = [], None
    while True:
        page = listing(server, attachment, **params, **({"after": after} if after else {}))
        entries += page["entries"]
        after = page.get("next")
        if not after:
            return entries


def entry(server, attachment: str, path: str, headers=None, **params) -> requests.Response:
    """The whole path as one percent-encoded segment (`/` as %2F): `..` and a leading `/` reach the server as the
    archive spells them, and no client resolves them as dot segments on the way."""
    return requests.get(f"{server.url}/api/v1/attachments/{attachment}/entries/{quote(path, safe='')}",
                        params=params, headers={**auth(server.engineer), **(headers or {})}, timeout=120)
