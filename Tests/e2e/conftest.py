"""Fixtures that run the real `casefiles` binary on a temporary storage root, on loopback.

With `CASEFILES_TEST_DATABASE=postgres://…` (what `Scripts/postgres start` prints: the one switch the Swift tests
read too) every server and CLI command runs with `--database`, on a database of its own made on that PostgreSQL
server per `Server`; tests of the SQLite file itself (`@pytest.mark.sqlite_only`) are skipped then."""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CASEFILES_BIN", ROOT / ".build" / "debug" / "casefiles"))
TEST_DATABASE = os.environ.get("CASEFILES_TEST_DATABASE") or None


# psql's session time zone: UTC, so dates written without a zone mean what SQLite's stored text means.
_PSQL_ENV = {**os.environ, "PGTZ": "UTC"}


def fresh_database() -> str | None:
    """A new, empty PostgreSQL database on CASEFILES_TEST_DATABASE's server, as a URL; None when testing on SQLite."""
    if TEST_DATABASE is None:
        return None
    name = "casefiles_e2e_" + uuid.uuid4().hex
    subprocess.run(["psql", TEST_DATABASE, "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True, timeout=60)
    url = urlsplit(TEST_DATABASE)
    return urlunsplit(url._replace(path="/" + name))


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: tests the SQLite file itself; skipped on PostgreSQL")


def pytest_collection_modifyitems(config, items):
    if TEST_DATABASE is None:
        return
    skip = pytest.mark.skip(reason="tests the SQLite file itself (CASEFILES_TEST_DATABASE is set)")
    for item in items:
        if "sqlite_only" in item.keywords:
            item.add_marker(skip)


_RATE_LIMIT_FLAG: bool | None = None


def rate_limit_off() -> list[str]:
    """`--rate-limit 0` for every server the suite starts, unless a test sets a limit: the suite makes hundreds of
    state-changing requests a minute as one user, far past the default 60. Asked of the binary once, so an older
    binary without the flag (the parent commit's, to see a new test fail) still runs the suite."""
    global _RATE_LIMIT_FLAG
    if _RATE_LIMIT_FLAG is None:
        help_text = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
        _RATE_LIMIT_FLAG = "--rate-limit" in help_text
    return ["--rate-limit", "0"] if _RATE_LIMIT_FLAG else []


# Every credential the suite makes or is handed, and every server log it writes (issue #18: no bearer token,
# signed-link signature or drop credential may appear in any log line). `test_zz_log_secrets.py` runs last and
# greps every log of the run for every one of them.
SECRETS: set[str] = set()
LOGS: list[Path] = []
_LINK_SIGNATURE = __import__("re").compile(r"[?&]sig=([0-9a-f]{64})")


@pytest.fixture(autouse=True, scope="session")
def _collect_link_signatures():
    """Records the signature of every signed link a response of the run hands out (from any JSON body)."""
    original = requests.Session.request

    def request(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        if "json" in response.headers.get("Content-Type", "") and len(response.content) < 1 << 20:
            SECRETS.update(_LINK_SIGNATURE.findall(response.text))
        return response

    requests.Session.request = request
    yield
    requests.Session.request = original


def blob_store_environment() -> tuple[str | None, dict[str, str]]:
    """`CASEFILES_TEST_BLOB_STORE=s3`: a server keeps its blobs in the object store that `Scripts/objectstore start`
    started (its CASEFILES_TEST_S3_* variables), in a bucket of its own made here (so no server's orphan sweep sees
    another's blobs), instead of under its storage root. The bucket, and the variables to add to the environment of
    its `serve` and CLI commands: `serve`'s own (the secret never on a command line). Tests look at blobs through
    `blobstore.py`."""
    if os.environ.get("CASEFILES_TEST_BLOB_STORE", "files") != "s3":
        return None, {}
    from blobstore import create_bucket
    try:
        bucket = create_bucket()
        return bucket, {
            "CASEFILES_BLOB_STORE": "s3://" + bucket,
            "CASEFILES_S3_ENDPOINT": os.environ["CASEFILES_TEST_S3_ENDPOINT"],
            "CASEFILES_S3_REGION": os.environ["CASEFILES_TEST_S3_REGION"],
            "CASEFILES_S3_ACCESS_KEY_ID": os.environ["CASEFILES_TEST_S3_ACCESS_KEY_ID"],
            "CASEFILES_S3_SECRET_ACCESS_KEY": os.environ["CASEFILES_TEST_S3_SECRET_ACCESS_KEY"],
        }
    except KeyError as missing:
        raise RuntimeError(f"CASEFILES_TEST_BLOB_STORE=s3 needs {missing}: run "
                           "`eval \"$(Scripts/objectstore start | sed 's/^/export /')\"` first") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `CASEFILES_TEST_NODES=2` (with CASEFILES_TEST_DATABASE and CASEFILES_TEST_BLOB_STORE=s3): every `Server` is two
# `serve` nodes on its database and bucket behind nginx (round robin, the committed template), and tests talk to
# nginx: the core files run against a cluster (issue #22; README, "Several nodes").
NODES = int(os.environ.get("CASEFILES_TEST_NODES", "1"))
# Then nginx stands between the tests and CaseFiles: it answers `Expect: 100-continue` itself, reads a response
# ahead of a client, and turns an upstream that closed mid-request into a 502. The few assertions about those
# wire details hold for CaseFiles alone and are skipped or widened there (each says so).
BEHIND_PROXY = NODES > 1


class Server:
    """One `casefiles serve` process (or `NODES` behind nginx); can be SIGKILLed and restarted on the same storage
    and port."""

    def __init__(self, storage: Path):
        self.storage = storage
        self.database = fresh_database()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        # With several nodes: the others (each on a root of its own beside `storage`), and nginx in front.
        self.node_ports = [free_port() for _ in range(NODES)] if NODES > 1 else [self.port]
        self.other_nodes: list[subprocess.Popen] = []
        self.nginx = None
        self.log = open(storage.parent / "server.log", "ab")
        LOGS.append(storage.parent / "server.log")
        self.blob_bucket, self.blob_store_variables = blob_store_environment()

    @property
    def environment(self) -> dict[str, str]:
        """What `serve` and CLI commands run with: this process's environment as it is now (a test may set
        CASEFILES_FAILPOINTS), and the object store's settings if the suite uses one."""
        return {**os.environ, **self.blob_store_variables}

    def storage_args(self) -> list[str]:
        """Where a server-side command finds the data: `--storage`, and `--database` on PostgreSQL."""
        return ["--storage", str(self.storage), *(["--database", self.database] if self.database else [])]

    def cli(self, *args: str) -> str:
        result = subprocess.run([str(BINARY), *args, *self.storage_args()],
                                check=True, capture_output=True, text=True, timeout=60, env=self.environment)
        if args[:2] == ("users", "create") and result.stdout.strip():
            SECRETS.add(result.stdout.strip())
        if args[:1] == ("keys",):
            # What an operator of several nodes does after a rotation: the same key file on every node.
            for index in range(2, len(self.node_ports) + 1):
                shutil.copy2(self.storage / "link-signing.key", self.storage.parent / f"node{index}" / "link-signing.key")
        return result.stdout.strip()

    def query(self, sql: str) -> list[tuple]:
        """Rows of a read-only query on the metadata (SQLite's file, or the PostgreSQL database), each value as
        text. Write SQL both dialects take: quote "user" and "offset"."""
        if self.database is None:
            import sqlite3
            with sqlite3.connect(f"file:{self.storage / 'casefiles.sqlite'}?mode=ro", uri=True) as database:
                return [tuple(None if v is None else str(v) for v in row) for row in database.execute(sql).fetchall()]
        out = subprocess.run(["psql", self.database, "-X", "-A", "-t", "-F", "\t", "-P", "null=\\N", "-v", "ON_ERROR_STOP=1",
                              "-c", sql], check=True, capture_output=True, text=True, timeout=60, env=_PSQL_ENV).stdout
        return [tuple(None if v == "\\N" else v for v in line.split("\t")) for line in out.splitlines() if line]

    def execute(self, sql: str) -> None:
        """One write on the metadata, to arrange a state no request can make (an expired credential, a crashed
        backup's lease). SQL both dialects take; a date without a zone is UTC on both (SQLite's stored text)."""
        if self.database is None:
            import sqlite3
            with sqlite3.connect(self.storage / "casefiles.sqlite", timeout=10) as database:
                database.execute(sql)
            return
        subprocess.run(["psql", self.database, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       check=True, capture_output=True, text=True, timeout=60, env=_PSQL_ENV)

    def start(self, *extra: str, nofile: int | None = None, wrapper: tuple[str, ...] = ()) -> None:
        """Starts `serve`; `nofile` sets its open-files limit, soft and hard (as `ulimit -n` would); `wrapper` is a
        command that runs it (`setpriv` dropping a capability). With several
        nodes the whole cluster starts again: a node a test did not stop (it stopped or killed the first) is stopped
        first, so no node of the last start keeps running, or answers on the port a new one is meant to take."""
        for process in self.other_nodes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        def limit_descriptors():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        def node(storage_args: list[str], port: int) -> subprocess.Popen:
            process = subprocess.Popen(
                [*wrapper, str(BINARY), "serve", *storage_args, "--port", str(port),
                 "--min-free-space", "0", *([] if "--rate-limit" in extra else rate_limit_off()), *extra],
                stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=limit_descriptors, env=self.environment)
            wait_healthy(f"http://127.0.0.1:{port}")
            return process
        self.process = node(self.storage_args(), self.node_ports[0])
        self.other_nodes = []
        for index, port in enumerate(self.node_ports[1:], start=2):
            # Each node its own root, with the first node's link-signing key (one key for the cluster).
            root = self.storage.parent / f"node{index}"
            root.mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(self.storage / "link-signing.key", root / "link-signing.key")
            self.other_nodes.append(node(["--storage", str(root), "--database", self.database], port))
        if NODES > 1 and (self.nginx is None or self.nginx.poll() is not None):
            self.nginx = start_nginx_in_front(self.storage.parent / "nginx", self.port, self.node_ports)

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [p for p in [self.process, *self.other_nodes] if p is not None]

    def kill(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            process.wait(timeout=20)
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.wait(timeout=10)
            self.nginx = None

    def proc_status(self, field: str) -> int:
        """A kB figure from /proc/PID/status, such as VmHWM (peak RSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def proc_io(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("server did not start; see server.log")


def start_nginx_in_front(folder: Path, port: int, node_ports: list[int]) -> subprocess.Popen:
    """Debian's nginx in the foreground on `port`, the committed server block with one upstream line per node."""
    folder.mkdir(exist_ok=True)
    template = (ROOT / "Scripts" / "nginx" / "casefiles.conf.template").read_text()
    upstream_line = next(line for line in template.splitlines() if line.strip().startswith("server {{upstream}}"))
    servers = "\n".join(upstream_line.replace("{{upstream}}", f"127.0.0.1:{p}") for p in node_ports)
    site = template.replace("{{listen}}", f"127.0.0.1:{port}").replace(upstream_line, servers)
    (folder / "nginx.conf").write_text(f"""daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
{site}
}}
""")
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(folder / "nginx.conf"),
                              "-p", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_healthy(f"http://127.0.0.1:{port}")
    return nginx


def pytest_terminal_summary(terminalreporter):
    """The fault suite's figures for this run, also kept in Tests/artifacts/suite-summary.json."""
    from helpers import SUMMARY
    if not SUMMARY:
        return
    terminalreporter.section("fault suite summary")
    for name, value in sorted(SUMMARY.items()):
        terminalreporter.write_line(f"{value:>14,}  {name}")
    artifacts = ROOT / "Tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "suite-summary.json").write_text(json.dumps(dict(sorted(SUMMARY.items())), indent=2) + "\n")


@pytest.fixture
def server(tmp_path):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: build with `swift build` first")
    srv = Server(tmp_path / "Storage")
    srv.customer = srv.cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    srv.engineer = srv.cli("users", "create", "erin", "--role", "engineer")
    srv.admin = srv.cli("users", "create", "adam", "--role", "admin")
    srv.case = srv.cli("cases", "create", "--account", "ACME", "--subject", "Nightly batch crashes",
                       "--number", "1413", "--priority", "High")
    srv.start()
    yield srv
    srv.stop()
