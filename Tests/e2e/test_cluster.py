"""End-to-end: several nodes (issue #22). `Scripts/cluster start` runs PostgreSQL, the object store (OpenStack
Swift with s3api), two `casefiles serve` nodes on them and nginx in front (round robin); these tests talk to
nginx as customers would and to each node directly where a test needs one node. Runs when CASEFILES_TEST_CLUSTER
is set (Scripts/test's last pass; README, "Several nodes"); CASEFILES_CLUSTER_UPLOAD_MIB sets the failover upload's
size (2048)."""
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import BINARY, ROOT, SECRETS
from helpers import auth

pytestmark = pytest.mark.skipif(not os.environ.get("CASEFILES_TEST_CLUSTER"),
                                reason="needs CASEFILES_TEST_CLUSTER=1 (README, 'Several nodes': Scripts/cluster)")

MiB = 1024 * 1024
UPLOAD_MIB = int(os.environ.get("CASEFILES_CLUSTER_UPLOAD_MIB", "2048"))
# `PostgresNodeCoordination.onceOnlyKey` as pg_locks shows a bigint advisory key: (classid, objid) = (high, low).
ONCE_ONLY_LOCK = (0x43617365, 0x46696C65)


class Cluster:
    def __init__(self, settings: dict[str, str]):
        self.settings = settings
        self.url = settings["CASEFILES_CLUSTER_URL"]
        self.nodes = [settings["CASEFILES_CLUSTER_NODE1"], settings["CASEFILES_CLUSTER_NODE2"]]
        self.storages = [settings["CASEFILES_CLUSTER_NODE1_STORAGE"], settings["CASEFILES_CLUSTER_NODE2_STORAGE"]]
        self.pids = [int(settings["CASEFILES_CLUSTER_NODE1_PID"]), int(settings["CASEFILES_CLUSTER_NODE2_PID"])]

    def cli(self, *args: str, node: int = 0) -> str:
        """A server-side command on the cluster's data: `--storage` (the node's root, for its link key) and
        `--database`; the blob store from the environment, as a node's settings (CASEFILES_BLOB_STORE, CASEFILES_S3_*)."""
        env = {**os.environ, **{k: v for k, v in self.settings.items()
                                if k.startswith(("CASEFILES_BLOB_STORE", "CASEFILES_S3_"))}}
        result = subprocess.run([str(BINARY), *args, "--storage", self.storages[node],
                                 "--database", self.settings["CASEFILES_DATABASE"]],
                                check=True, capture_output=True, text=True, timeout=300, env=env)
        if args[:2] == ("users", "create"):
            SECRETS.add(result.stdout.strip())
        return result.stdout.strip()

    def sql(self, query: str) -> list[list[str]]:
        out = subprocess.run(["psql", self.settings["CASEFILES_DATABASE"], "-X", "-A", "-t", "-F", "\t",
                              "-v", "ON_ERROR_STOP=1", "-c", query],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def node_log(self, node: int) -> str:
        return (ROOT / ".cluster" / f"node{node + 1}.log").read_text(errors="replace")

    def s3(self):
        """A botocore client on the cluster's object store (a real S3 client, not ours), and the bucket."""
        import botocore.config
        import botocore.session
        s = self.settings
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=s["CASEFILES_S3_ENDPOINT"], region_name=s["CASEFILES_S3_REGION"],
            aws_access_key_id=s["CASEFILES_S3_ACCESS_KEY_ID"], aws_secret_access_key=s["CASEFILES_S3_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(s3={"addressing_style": "path"}))
        return client, s["CASEFILES_BLOB_STORE"].removeprefix("s3://")

    def multipart_uploads(self) -> list[str]:
        """The bucket's unfinished multipart uploads (ListMultipartUploads)."""
        s3, bucket = self.s3()
        return [upload["UploadId"] for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def object_etag(self, upload_id: str) -> str:
        """The finished object's ETag as the bucket reports it (HeadObject)."""
        s3, bucket = self.s3()
        return s3.head_object(Bucket=bucket, Key=f"blobs/{upload_id}")["ETag"]


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, "CASEFILES_BIN": str(BINARY)}
    started = subprocess.run([str(ROOT / "Scripts" / "cluster"), "start"], capture_output=True, text=True,
                             timeout=600, env=env)
    if started.returncode != 0:
        subprocess.run([str(ROOT / "Scripts" / "cluster"), "stop"], timeout=120)
        pytest.fail(f"Scripts/cluster start failed:\n{started.stdout}\n{started.stderr}")
    settings = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    SECRETS.add(settings["CASEFILES_S3_SECRET_ACCESS_KEY"])
    cluster = Cluster(settings)
    cluster.customer = cluster.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    cluster.engineer = cluster.cli("users", "create", "erin", "--role", "engineer")
    cluster.case = cluster.cli("cases", "create", "--account", "ACME", "--subject", "Cluster", "--number", "1413")
    yield cluster
    subprocess.run([str(ROOT / "Scripts" / "cluster"), "stop"], timeout=120)


def upload_small(cluster, base: str, data: bytes, name: str) -> str:
    """One tus upload of `data` in a single creation-with-upload request; the attachment's id."""
    from helpers import metadata
    response = requests.post(
        f"{base}/api/v1/cases/{cluster.case}/uploads",
        headers={**auth(cluster.customer), "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream",
                 "Upload-Metadata": metadata(name, hashlib.sha256(data).hexdigest())},
        data=data, timeout=60)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def test_every_node_serves_what_another_stored_and_honours_its_links_and_drop_credentials(cluster):
    one, two = cluster.nodes
    data = os.urandom(3 * MiB + 5)
    attachment = upload_small(cluster, one, data, "from-node-1.bin")
    # Read from the other node: the row is in PostgreSQL, the bytes in the object store.
    got = requests.get(f"{two}/api/v1/attachments/{attachment}/content", headers=auth(cluster.engineer), timeout=60)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
    ranged = requests.get(f"{two}/api/v1/attachments/{attachment}/content",
                          headers={**auth(cluster.engineer), "Range": "bytes=1048570-1048589"}, timeout=60)
    assert ranged.status_code == 206 and ranged.content == data[1048570:1048590]
    # A link signed by node 1 is good on node 2 (one link-signing key for the cluster).
    link = requests.post(f"{one}/api/v1/attachments/{attachment}/link", headers=auth(cluster.engineer), timeout=10)
    assert link.status_code == 200, link.text
    fetched = requests.get(two + link.json()["url"], timeout=60)
    assert fetched.status_code == 200 and fetched.content == data
    # A drop credential made on node 1 uploads through node 2, and the result reads back through nginx.
    drop = requests.post(f"{one}/api/v1/cases/{cluster.case}/drop-tokens",
                         headers={"Authorization": f"Bearer {cluster.engineer}"}, json={"expiresInSeconds": 600},
                         timeout=10)
    assert drop.status_code == 201, drop.text
    SECRETS.add(drop.json()["token"])
    body = os.urandom(2 * MiB)
    put = requests.put(f"{two}/api/v1/cases/{cluster.case}/files/dropped.bin", data=body,
                       headers={"Authorization": f"Bearer {drop.json()['token']}", "Accept": "application/json"},
                       timeout=60)
    assert put.status_code in (200, 201), put.text
    listing = requests.get(f"{cluster.url}/api/v1/cases/{cluster.case}/attachments", headers=auth(cluster.engineer),
                           timeout=10).json()["attachments"]
    dropped = [a for a in listing if a["filename"] == "dropped.bin"]
    assert len(dropped) == 1 and dropped[0]["sha256"] == hashlib.sha256(body).hexdigest()


def test_one_node_runs_the_once_only_jobs(cluster):
    holders = cluster.sql(f"""SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                              WHERE l.locktype = 'advisory' AND l.granted
                              AND l.classid = {ONCE_ONLY_LOCK[0]} AND l.objid = {ONCE_ONLY_LOCK[1]}""")
    assert len(holders) == 1, holders
    pid = int(holders[0][0].split(":")[1])
    assert pid in cluster.pids
    said = [node for node in range(2) if "now runs the once-only jobs" in cluster.node_log(node)]
    assert said == [cluster.pids.index(pid)]


def test_a_node_killed_mid_upload_the_other_node_finishes_it(cluster, tmp_path):
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        block = os.urandom(MiB)
        for i in range(UPLOAD_MIB):
            chunk = i.to_bytes(8, "little") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    expected = digest.hexdigest()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    client = subprocess.Popen([str(BINARY), "upload", "--server", cluster.url, "--token", cluster.customer,
                               "--case", cluster.case, str(source)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(client.stdout), daemon=True)
    reader.start()
    # At half the file, find the node writing it: the one whose session holds the upload's advisory lock
    # (`application_name` is "casefiles HOST:PID:…"), and kill it as a crash would.
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and client.poll() is None, "".join(lines)
        offsets = cluster.sql("""SELECT "offset" FROM upload WHERE filename = 'big.bin'""")
        if offsets and int(offsets[0][0]) >= UPLOAD_MIB * MiB // 2:
            writers = cluster.sql(f"""SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                                      WHERE l.locktype = 'advisory' AND l.granted
                                      AND NOT (l.classid = {ONCE_ONLY_LOCK[0]} AND l.objid = {ONCE_ONLY_LOCK[1]})""")
            if writers:
                victim = int(writers[0][0].split(":")[1])
                break
        time.sleep(0.05)
    assert victim in cluster.pids
    os.kill(victim, signal.SIGKILL)
    assert client.wait(timeout=900) == 0, "".join(lines)
    reader.join(10)
    output = "".join(lines)
    assert expected in output, output
    # The client's log: each retried request is a "retrying" line naming its byte range; at most one chunk
    # was sent again (the one cut by the kill), however many attempts it took to reach the other node.
    retried = set(re.findall(r"sending bytes (\d+-\d+): .*retrying", output))
    assert len(retried) <= 1, output
    [row] = cluster.sql("""SELECT id, state, sha256, objectETag FROM upload WHERE filename = 'big.bin'""")
    assert row[1] == "verified" and row[2] == expected
    # Recorded with the row: which object in the bucket that SHA-256 was verified for.
    assert row[3] == cluster.object_etag(row[0])
    # The stored object is the file: read back through nginx (the surviving node).
    downloaded = hashlib.sha256()
    with requests.get(f"{cluster.url}/api/v1/attachments/{row[0]}/content", headers=auth(cluster.engineer),
                      stream=True, timeout=600) as response:
        assert response.status_code == 200
        for part in response.iter_content(4 * MiB):
            downloaded.update(part)
    assert downloaded.hexdigest() == expected
    # Nothing is left behind in the bucket: no multipart upload, after the sweep (`casefiles purge` runs it).
    survivor = 1 - cluster.pids.index(victim)
    cluster.cli("purge", node=survivor)
    assert cluster.multipart_uploads() == []
