"""The S3 blob store through the real binary and the real object store (CASEFILES_TEST_BLOB_STORE=s3, which
Scripts/test sets for its object-store pass): what the bucket holds after cut requests, a crash between the
verifying commit and the multipart completion, and the orphan sweep. Skipped on local files."""
import hashlib
import os

import pytest
import requests

from blobstore import _s3, blob_bytes, on_object_store
from helpers import auth, pattern, sha256_header
from test_uploads import MiB, create, patch

pytestmark = pytest.mark.skipif(not on_object_store(), reason="CASEFILES_TEST_BLOB_STORE=s3 only")

PART = 5 * MiB  # S3's smallest part: a few MiB cross parts


def bucket_state(server, upload_id: str) -> tuple[set[str], int]:
    """The keys under blobs/<id>, and how many multipart uploads are open on blobs/<id>."""
    s3 = _s3()
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=server.blob_bucket, Prefix=f"blobs/{upload_id}")
            .get("Contents", [])}
    uploads = s3.list_multipart_uploads(Bucket=server.blob_bucket, Prefix=f"blobs/{upload_id}").get("Uploads", [])
    return keys, len(uploads)


def recorded_etag(server, upload_id: str) -> str | None:
    """The entity tag the metadata store recorded for the upload's finished object (`objectETag`)."""
    return server.query(f"SELECT objectETag FROM upload WHERE id = '{upload_id}'")[0][0]


def object_etag(server, upload_id: str) -> str:
    """The finished object's ETag as the bucket reports it (HeadObject, with botocore)."""
    return _s3().head_object(Bucket=server.blob_bucket, Key=f"blobs/{upload_id}")["ETag"]


def download(server, upload_id: str, headers=None) -> requests.Response:
    return requests.get(f"{server.url}/api/v1/attachments/{upload_id}/content",
                        headers={**auth(server.engineer), **(headers or {})}, timeout=60)


def test_parts_tails_and_a_refused_request_end_as_one_object_of_exactly_the_committed_bytes(server):
    server.stop()
    server.start("--s3-part-size", str(PART))
    data = pattern(13 * MiB + 12_345, seed=81)
    url = create(server, len(data), "parts.log", sha256=hashlib.sha256(data).hexdigest())
    upload_id = url.rsplit("/", 1)[1]

    assert patch(server, url, 0, data[:7 * MiB]).status_code == 204
    # Part 1 uploaded whole; the 2 MiB of part 2 stored as its tail, with the record of the multipart upload.
    assert bucket_state(server, upload_id) == ({f"blobs/{upload_id}.upload", f"blobs/{upload_id}.tail-2"}, 1)

    # 4 MiB with a wrong checksum: part 2 is uploaded with them on the way, then the request is refused whole.
    wrong = patch(server, url, 7 * MiB, data[7 * MiB:11 * MiB],
                  extra={"Upload-Checksum": sha256_header(b"not these bytes")})
    assert wrong.status_code == 460
    assert patch(server, url, 7 * MiB, data[7 * MiB:]).status_code == 204

    assert bucket_state(server, upload_id) == ({f"blobs/{upload_id}"}, 0)
    assert blob_bytes(server, upload_id) == data
    # Which object the SHA-256 was verified for: the completion's ETag, recorded with the upload (a multipart one).
    assert recorded_etag(server, upload_id) == object_etag(server, upload_id)
    assert object_etag(server, upload_id).endswith('-3"')
    assert download(server, upload_id).content == data
    ranged = download(server, upload_id, {"Range": f"bytes={PART - 10}-{PART + 9}"})
    assert ranged.status_code == 206 and ranged.content == data[PART - 10:PART + 10]


def test_a_crash_between_the_verifying_commit_and_the_completion_is_completed_at_the_next_start(server):
    data = pattern(3 * MiB + 777, seed=82)
    url = create(server, len(data), "crash.log", sha256=hashlib.sha256(data).hexdigest())
    upload_id = url.rsplit("/", 1)[1]
    assert patch(server, url, 0, data[:MiB]).status_code == 204
    server.stop()
    os.environ["CASEFILES_FAILPOINTS"] = "append.after-commit=1"  # killed right after the commit that verifies
    try:
        server.start()
    finally:
        del os.environ["CASEFILES_FAILPOINTS"]
    try:
        patch(server, url, MiB, data[MiB:])
    except requests.ConnectionError:
        pass
    assert server.process.wait(timeout=30) == -9
    # Verified in the metadata store, still a multipart upload with its tail in the bucket.
    assert bucket_state(server, upload_id) == ({f"blobs/{upload_id}.upload", f"blobs/{upload_id}.tail-1"}, 1)

    assert recorded_etag(server, upload_id) is None
    server.start()  # the startup sweep completes it, and records the object's ETag
    assert bucket_state(server, upload_id) == ({f"blobs/{upload_id}"}, 0)
    assert recorded_etag(server, upload_id) == object_etag(server, upload_id)
    assert download(server, upload_id).content == data


def test_the_sweep_aborts_uploads_and_tails_no_row_owns_and_keeps_those_that_one_does(server):
    s3, bucket = _s3(), server.blob_bucket
    orphan = "ab" * 16
    s3.create_multipart_upload(Bucket=bucket, Key=f"blobs/{orphan}")
    s3.put_object(Bucket=bucket, Key=f"blobs/{orphan}.tail-3", Body=b"tail bytes")
    s3.put_object(Bucket=bucket, Key=f"blobs/{orphan}.upload", Body=b"{}")
    data = pattern(2 * MiB, seed=83)
    url = create(server, len(data), "kept.log")
    kept = url.rsplit("/", 1)[1]
    assert patch(server, url, 0, data[:MiB + 5]).status_code == 204

    server.stop()
    server.start()
    assert bucket_state(server, orphan) == (set(), 0)
    assert bucket_state(server, kept) == ({f"blobs/{kept}.upload", f"blobs/{kept}.tail-1"}, 1)
    assert patch(server, url, MiB + 5, data[MiB + 5:]).status_code == 204
    assert download(server, kept).content == data
