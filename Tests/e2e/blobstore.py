"""The blobs a test's server stored, wherever it keeps them: files under its storage root, or, with
CASEFILES_TEST_BLOB_STORE=s3 (conftest.py), objects and multipart uploads under `blobs/` in the server's own
bucket of the object store, read with botocore (a real S3 client, the same store)."""
import os
import secrets
from functools import lru_cache


def on_object_store() -> bool:
    return os.environ.get("CASEFILES_TEST_BLOB_STORE", "files") == "s3"


@lru_cache(maxsize=1)
def _s3():
    import botocore.config
    import botocore.session
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ["CASEFILES_TEST_S3_ENDPOINT"], region_name=os.environ["CASEFILES_TEST_S3_REGION"],
        aws_access_key_id=os.environ["CASEFILES_TEST_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["CASEFILES_TEST_S3_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(s3={"addressing_style": "path"}))


def create_bucket() -> str:
    """A new, empty bucket (one per test server)."""
    bucket = "casefiles-" + secrets.token_hex(8)
    _s3().create_bucket(Bucket=bucket)
    return bucket


def blob_bytes(server, upload_id: str) -> bytes:
    """A finished blob's bytes. Raises FileNotFoundError if there is none."""
    if not on_object_store():
        return (server.storage / "blobs" / upload_id[:2] / upload_id).read_bytes()
    try:
        return _s3().get_object(Bucket=server.blob_bucket, Key=f"blobs/{upload_id}")["Body"].read()
    except _s3().exceptions.NoSuchKey:
        raise FileNotFoundError(f"blobs/{upload_id}") from None


def stored_length(server, upload_id: str) -> int:
    """How many of an upload's bytes the store holds: the blob file's size; in the object store the finished
    object's size, or else the unfinished multipart upload's parts (ListParts) plus its newest tail object (the
    part not yet whole). S3 has no way to read an unfinished upload's parts back, only to list them."""
    if not on_object_store():
        return (server.storage / "blobs" / upload_id[:2] / upload_id).stat().st_size
    s3, key = _s3(), f"blobs/{upload_id}"
    try:
        return s3.head_object(Bucket=server.blob_bucket, Key=key)["ContentLength"]
    except s3.exceptions.ClientError:
        pass
    uploads = [u for u in s3.list_multipart_uploads(Bucket=server.blob_bucket, Prefix=key).get("Uploads", [])
               if u["Key"] == key]
    parts = sum(part["Size"] for upload in uploads
                for part in s3.list_parts(Bucket=server.blob_bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", []))
    tails = s3.list_objects_v2(Bucket=server.blob_bucket, Prefix=key + ".tail-").get("Contents", [])
    newest = max(tails, key=lambda item: int(item["Key"].rsplit("-", 1)[1]), default=None)
    return parts + (newest["Size"] if newest else 0)


def stored_blob_ids(server) -> set[str]:
    """Every blob id the store holds anything of: a file; or an object, tail, upload record or multipart upload."""
    if not on_object_store():
        return {p.name for p in (server.storage / "blobs").glob("*/*") if p.is_file()}
    s3, ids = _s3(), set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=server.blob_bucket, Prefix="blobs/"):
        ids |= {item["Key"][len("blobs/"):].split(".")[0] for item in page.get("Contents", [])}
    uploads = s3.list_multipart_uploads(Bucket=server.blob_bucket, Prefix="blobs/").get("Uploads", [])
    ids |= {upload["Key"][len("blobs/"):] for upload in uploads}
    return ids


def blob_exists(server, upload_id: str) -> bool:
    return upload_id in stored_blob_ids(server)
