"""RFC 9530 digests both ways (issue #19 part 3): `Content-Digest` on appends is checked like `Upload-Checksum`
(sha-256, sha-512); the response completing an upload carries the verified `Repr-Digest`; downloads honour
`Want-Repr-Digest` / `Want-Content-Digest` with sha-256."""
import base64
import hashlib

import pytest
import requests

from helpers import auth, metadata, pattern
from test_downloads import issue_link
from test_uploads import create, head_offset, patch


def field(algorithm: str, data: bytes) -> str:
    """An RFC 9530 digest field member: `sha-256=:<base64>:`."""
    digest = hashlib.new(algorithm.replace("-", ""), data).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode()}:"


def error_of(response) -> str:
    return response.json()["error"]


@pytest.mark.parametrize("algorithm", ["sha-256", "sha-512"])
def test_content_digest_right_is_kept_and_wrong_keeps_nothing(server, algorithm):
    data = pattern(300_000, seed=91)
    url = create(server, len(data))
    first, second = data[:100_000], data[100_000:]

    right = patch(server, url, 0, first, checksum=False, extra={"Content-Digest": field(algorithm, first)})
    assert right.status_code == 204, right.text
    assert right.headers["Upload-Offset"] == "100000"

    wrong = patch(server, url, 100_000, second, checksum=False,
                  extra={"Content-Digest": field(algorithm, second[:-1] + b"\0")})
    assert wrong.status_code == 460, wrong.text
    assert error_of(wrong) == "checksum_mismatch"
    assert wrong.headers["Upload-Offset"] == "100000"
    assert head_offset(server, url) == 100_000  # all-or-nothing, as with Upload-Checksum

    # Other members of unsupported algorithms may come along; the supported one is checked.
    done = patch(server, url, 100_000, second, checksum=False,
                 extra={"Content-Digest": f"md5=:{base64.b64encode(b'0' * 16).decode()}:, {field(algorithm, second)}"})
    assert done.status_code == 204, done.text
    assert done.headers["Upload-Offset"] == str(len(data))


@pytest.mark.parametrize("value", [
    "md5=:" + base64.b64encode(b"0" * 16).decode() + ":",
    "unixsum=:AAAA:",
    "sha=:" + base64.b64encode(b"0" * 20).decode() + ":, crc32c=:AAAAAA==:",
])
def test_content_digest_with_only_unsupported_algorithms_is_refused(server, value):
    data = pattern(5000, seed=92)
    url = create(server, len(data))
    refused = patch(server, url, 0, data, checksum=False, extra={"Content-Digest": value})
    assert refused.status_code == 400, refused.text
    assert error_of(refused) == "unsupported_digest_algorithm"
    assert "verifies sha-256 and sha-512" in refused.json()["message"]
    assert head_offset(server, url) == 0


@pytest.mark.parametrize("value, code", [
    ("sha-256=:" + base64.b64encode(b"0" * 31).decode() + ":", "invalid_header"),  # 31 bytes, not 32
    ("sha-256=abc", "invalid_header"),  # a token, not a byte sequence
    ("sha-256=:%%%:", "invalid_header"),  # not a structured-field dictionary
])
def test_malformed_content_digest_is_refused(server, value, code):
    data = pattern(5000, seed=93)
    url = create(server, len(data))
    refused = patch(server, url, 0, data, checksum=False, extra={"Content-Digest": value})
    assert refused.status_code == 400, refused.text
    assert error_of(refused) == code
    assert "Content-Digest" in refused.json()["message"]
    assert head_offset(server, url) == 0


def test_upload_checksum_and_content_digest_together_are_refused(server):
    data = pattern(5000, seed=94)
    url = create(server, len(data))
    refused = patch(server, url, 0, data, checksum=True, extra={"Content-Digest": field("sha-256", data)})
    assert refused.status_code == 400, refused.text
    assert error_of(refused) == "two_content_checksums"
    assert head_offset(server, url) == 0


def test_creation_with_upload_checks_content_digest_and_answers_repr_digest(server):
    data = pattern(70_000, seed=95)
    uploads = f"{server.url}/api/v1/cases/{server.case}/uploads"
    headers = {**auth(server.customer), "Upload-Length": str(len(data)), "Upload-Metadata": metadata("w.bin"),
               "Content-Type": "application/offset+octet-stream"}
    wrong = requests.post(uploads, data=data, timeout=30,
                          headers={**headers, "Content-Digest": field("sha-512", data + b"!")})
    assert wrong.status_code == 460, wrong.text
    assert "Location" not in wrong.headers

    created = requests.post(uploads, data=data, timeout=30, headers={**headers, "Content-Digest": field("sha-512", data)})
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == str(len(data))
    # The upload completed with this request: its answer names the verified whole-file digest.
    assert created.headers["Repr-Digest"] == field("sha-256", data)


def test_the_completing_patch_carries_the_verified_repr_digest(server):
    data = pattern(200_000, seed=96)
    url = create(server, len(data))
    partial = patch(server, url, 0, data[:50_000])
    assert partial.status_code == 204
    assert "Repr-Digest" not in partial.headers  # not complete: nothing verified yet
    final = patch(server, url, 50_000, data[50_000:], extra={"Want-Repr-Digest": "sha-256=5"})
    assert final.status_code == 204, final.text
    assert final.headers["Repr-Digest"] == field("sha-256", data)


def test_downloads_honour_want_repr_digest_and_want_content_digest(server):
    data = pattern(150_000, seed=97)
    url = create(server, len(data))
    assert patch(server, url, 0, data).status_code == 204
    attachment = url.rsplit("/", 1)[1]
    content = f"{server.url}/api/v1/attachments/{attachment}/content"
    wanted = {"Want-Repr-Digest": "sha-512=3, sha-256=10", "Want-Content-Digest": "sha-256=1"}

    full = requests.get(content, headers={**auth(server.engineer), **wanted}, timeout=30)
    assert full.status_code == 200
    assert full.content == data
    assert full.headers["Repr-Digest"] == field("sha-256", data)
    # A whole 200 without content coding: its content is the representation.
    assert full.headers["Content-Digest"] == field("sha-256", data)

    part = requests.get(content, headers={**auth(server.engineer), **wanted, "Range": "bytes=10-99"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["Repr-Digest"] == field("sha-256", data)
    assert "Content-Digest" not in part.headers

    unasked = requests.get(content, headers=auth(server.engineer), timeout=30)
    assert "Content-Digest" not in unasked.headers
    refused = requests.get(content, headers={**auth(server.engineer), "Want-Content-Digest": "sha-256=0"}, timeout=30)
    assert "Content-Digest" not in refused.headers

    link, _ = issue_link(server, attachment)
    signed = requests.get(link, headers=wanted, timeout=30)
    assert signed.status_code == 200
    assert signed.headers["Repr-Digest"] == field("sha-256", data)
    assert signed.headers["Content-Digest"] == field("sha-256", data)

