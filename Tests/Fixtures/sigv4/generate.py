#!/usr/bin/env python3
"""Generates vectors.json: AWS Signature Version 4 for S3 as botocore computes it, for SigV4Tests.swift.

Run from the repository root with botocore installed (`.venv/bin/pip install botocore`):
    .venv/bin/python Tests/Fixtures/sigv4/generate.py > Tests/Fixtures/sigv4/vectors.json

The signer is botocore's S3SigV4Auth, the SigV4Auth that boto3 uses for S3: it differs from the generic
SigV4Auth only in that the path is signed as sent (S3 does not normalise `.`/`..` or re-encode `%`), which is
what S3 servers (and OpenStack Swift's s3api) check. Each object key becomes a path the way botocore's S3
serializer makes one (percent_encode with `/` and `~` left alone); query parameters go in decoded and
botocore encodes and sorts them. The clock is fixed so the output is reproducible.
"""
import datetime
import hashlib
import json
import sys
from unittest import mock

import botocore
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing/+secret=="
FIXED_NOW = datetime.datetime(2026, 11, 29, 15, 4, 5)


class RecordingS3SigV4Auth(botocore.auth.S3SigV4Auth):
    """Keeps the canonical request and the string to sign it computed, so the Swift test checks each step."""

    def canonical_request(self, request):
        self.recorded_canonical_request = super().canonical_request(request)
        return self.recorded_canonical_request

    def string_to_sign(self, request, canonical_request):
        self.recorded_string_to_sign = super().string_to_sign(request, canonical_request)
        return self.recorded_string_to_sign


def vector(name, method, key, query=(), body=b"", unsigned=False, endpoint="http://127.0.0.1:8080",
           bucket="casefiles", region="us-east-1", headers=None):
    path = "/" + bucket + ("/" + percent_encode(key, safe="/~") if key is not None else "")
    request = AWSRequest(method=method, url=endpoint + path, data=body, params=list(query), headers=dict(headers or {}))
    if unsigned:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    auth = RecordingS3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED_NOW):
        auth.add_auth(request)
    return {
        "name": name,
        "method": method,
        "endpoint": endpoint,
        "bucket": bucket,
        "key": key,
        "query": [[k, v] for k, v in query],
        "headers": [[k, v] for k, v in (headers or {}).items()],
        "region": region,
        "accessKeyID": ACCESS_KEY,
        "secretAccessKey": SECRET_KEY,
        "date": FIXED_NOW.strftime("%Y%m%dT%H%M%SZ"),
        "payloadHash": request.headers["X-Amz-Content-SHA256"],
        "bodySHA256": hashlib.sha256(body).hexdigest(),
        "expected": {
            "path": path,
            "canonicalRequest": auth.recorded_canonical_request,
            "stringToSign": auth.recorded_string_to_sign,
            "authorization": request.headers["Authorization"],
        },
    }


def main():
    upload_id = "2~AbCd-ef_GH.ij/kl+mn="
    vectors = [
        vector("get object", "GET", "uploads/0123abcd"),
        vector("get object on a default port", "GET", "plain", endpoint="http://s3.example.test"),
        vector("get object on https with another region", "GET", "a/b/c", endpoint="https://s3.example.test:8443",
               region="eu-central-1"),
        vector("put object, small body signed", "PUT", "uploads/0123abcd.tail", body=b"hello, world\n"),
        vector("put object, unsigned payload", "PUT", "uploads/big", body=b"x" * 1000, unsigned=True,
               endpoint="https://s3.example.test"),
        vector("head object", "HEAD", "uploads/0123abcd"),
        vector("delete object", "DELETE", "uploads/0123abcd"),
        vector("key with spaces", "GET", "with space/and  two"),
        vector("key with unicode", "PUT", "dossier/résumé-日本.txt", body=b"\x00\x01\x02"),
        vector("key with tilde and plus", "GET", "a~b+c=d&e?f#g"),
        vector("key with percent and reserved", "DELETE", "100%/x;y,z:@!$'()*"),
        vector("key with dot segments (not normalised)", "GET", "a/./b/../c//d"),
        vector("create multipart upload", "POST", "uploads/0123abcd", query=[("uploads", "")]),
        vector("upload part", "PUT", "uploads/0123abcd", query=[("partNumber", "3"), ("uploadId", upload_id)],
               body=b"p" * 100),
        vector("upload part unsigned", "PUT", "uploads/0123abcd", query=[("uploadId", upload_id), ("partNumber", "10")],
               body=b"q" * 100, unsigned=True, endpoint="https://s3.example.test"),
        vector("complete multipart upload", "POST", "uploads/0123abcd", query=[("uploadId", upload_id)],
               body=b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"abc\"</ETag></Part>"
                    b"</CompleteMultipartUpload>", headers={"Content-Type": "application/xml"}),
        vector("abort multipart upload", "DELETE", "uploads/0123abcd", query=[("uploadId", upload_id)]),
        vector("list parts", "GET", "uploads/0123abcd", query=[("uploadId", upload_id), ("part-number-marker", "1000"),
                                                              ("max-parts", "1000")]),
        vector("list multipart uploads", "GET", None, query=[("uploads", ""), ("prefix", "uploads/"),
                                                             ("key-marker", "uploads/0 1"),
                                                             ("upload-id-marker", upload_id)]),
        vector("list objects v2", "GET", None, query=[("list-type", "2"), ("prefix", "uploads/ä b~c+d"),
                                                      ("max-keys", "1000")]),
        vector("list objects v2 continued", "GET", None, query=[("list-type", "2"), ("prefix", ""),
                                                                ("continuation-token", "1/Zm9vYmFy+/=="),
                                                                ("max-keys", "1000")]),
        vector("range get", "GET", "uploads/0123abcd", headers={"Range": "bytes=5-1048580"}),
        vector("header values trimmed", "PUT", "k", body=b"", headers={"X-Amz-Meta-Note": "  two   spaces  here "}),
        vector("create bucket", "PUT", None),
    ]
    json.dump({"generator": "botocore " + botocore.__version__ + " S3SigV4Auth", "vectors": vectors},
              sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


main()
