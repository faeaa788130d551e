"""Issue #17: the creation quotas and the free-space reservations hold for creations at the same instant. The checks
run in the upload row's own write transaction, so N simultaneous creations are counted one after the other and
exactly as many as the limit allows get 201."""
import collections
import threading

import requests

from helpers import auth, b64
from test_bounds import restart, tmpfs_server  # noqa: F401 (a fixture)
from test_uploads import MiB

CREATIONS = 24


def simultaneous_creations(server, token: str, length: int, count: int = CREATIONS) -> collections.Counter:
    """`count` POSTs of an upload of `length` bytes, each on its own connection, released at once by a barrier."""
    barrier = threading.Barrier(count)
    statuses: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def create(index: int) -> None:
        with requests.Session() as session:
            session.get(f"{server.url}/healthz", timeout=10)  # the connection is open before the barrier
            barrier.wait(timeout=30)
            response = session.post(f"{server.url}/api/v1/cases/{server.case}/uploads", timeout=30, headers={
                **auth(token), "Upload-Length": str(length), "Upload-Metadata": f"filename {b64(f'race{index}.log')}"})
            with lock:
                statuses[(response.status_code, response.json()["error"] if response.status_code != 201 else "")] += 1

    threads = [threading.Thread(target=create, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_simultaneous_creations_never_exceed_the_per_user_quota(server):
    restart(server, "--max-unfinished-uploads-per-user", "3")
    statuses = simultaneous_creations(server, server.customer, 100)
    assert statuses == {(201, ""): 3, (429, "unfinished_uploads_per_user_quota"): CREATIONS - 3}, statuses
    unfinished = requests.get(f"{server.url}/api/v1/cases/{server.case}/attachments", headers=auth(server.engineer),
                              timeout=10).json()["uploads"]
    assert len(unfinished) == 3
    # No refused creation left a blob behind.
    assert len([p for p in (server.storage / "blobs").rglob("*") if p.is_file()]) == 3


def test_simultaneous_creations_never_promise_more_than_the_free_space(tmpfs_server):
    # 80 MiB of tmpfs, the reserve at 0: two uploads of 30 MiB fit, a third does not, whenever they arrive.
    statuses = simultaneous_creations(tmpfs_server, tmpfs_server.customer, 30 * MiB)
    assert statuses == {(201, ""): 2, (507, "insufficient_storage"): CREATIONS - 2}, statuses
