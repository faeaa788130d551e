"""The benchmark run behind Scripts/bench: every row measured in the same run, medians of several runs."""
import base64
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = sys.argv[1]
# `Scripts/bench --baseline OTHER_BINARY`: the chunk loops and the 10 GiB upload are also measured with another
# build (the parent commit's, say), interleaved with this one's in the same run, and the ratio reported.
BASELINE = sys.argv[sys.argv.index("--baseline") + 1] if "--baseline" in sys.argv else None
# `Scripts/bench --throttle-disk MBPS`: the whole run (dd, nginx, CaseFiles) in a cgroup-v1 blkio group whose writes
# to the storage device are throttled to MBPS (1e6 bytes/s): a slower disk on demand, to see whether the service
# keeps up with the disk it has (issue #16). Direct and synchronous writes are throttled; buffered writeback only
# partly (cgroup v1 charges it to the flusher), which is why the dd rows include oflag=direct.
THROTTLE = float(sys.argv[sys.argv.index("--throttle-disk") + 1]) if "--throttle-disk" in sys.argv else None
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
MiB = 1 << 20
GiB = 1 << 30
rows: list[dict] = []
notes: list[str] = []


def row(name, value, unit, detail=""):
    rows.append({"benchmark": name, "value": round(value, 2), "unit": unit, "detail": detail})
    print(f"  {name:<58} {value:>10.2f} {unit:<8} {detail}", flush=True)


LIMITS: dict[str, float] = {}  # the machine's own limits measured in this run: dd, direct, nginx (MB/s)


def ratio_row(name, value, limit, target, direction):
    """A ratio against a limit of this run, with the limits printed beside it (issue #16: keep the bench honest)."""
    met = value / limit >= target if direction == "at least" else value / limit <= target
    limits = ", ".join(f"{k} {v:.0f} MB/s" for k, v in LIMITS.items())
    row(name, value / limit, "x", f"target {direction} {target}: {'met' if met else 'NOT met'}; {value:.1f} against "
        f"{limit:.1f}; this run's limits: {limits}")


def cpu_bound_row(name, client_name, client_cpu, server_cpu, target_rate):
    """What client and server spend per GiB together (CPU s/GiB, both on this machine's cores), the rate that
    allows with every core busy all the time (MB/s), and the share of it the target asks for."""
    cpu_per_gib = client_cpu + server_cpu
    cap = os.cpu_count() / cpu_per_gib * GiB / 1e6
    row(f"{name}: {client_name} + server CPU s/GiB", cpu_per_gib, "s/GiB",
        f"{client_name} {client_cpu:.2f}, server {server_cpu:.2f}; {os.cpu_count()} cores cap the rate at {cap:.0f} MB/s; "
        f"the target ({target_rate:.0f} MB/s) is {target_rate / cap:.2f} of that cap")


def children_cpu_seconds():
    """CPU seconds (user + system) of this script's finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_minor_faults(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def thread_stats(pid):
    """Each thread of a process as (kind, its /proc stat fields after the name): the kind is the name without
    its number (NIO's event loops `NIO-SGLTN-1-#2` -> `NIO-SGLTN`, its thread pools `TP-#0` -> `TP`)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789#-")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        yield name, fields


def thread_cpu_seconds(pid):
    """CPU seconds of a process's threads by kind (`thread_stats`; utime + stime, fields 14 and 15)."""
    kinds: dict[str, float] = {}
    for name, fields in thread_stats(pid):
        kinds[name] = kinds.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return kinds


def event_loop_nice(pid):
    """The event loops' nice values (`--event-loop-nice`; field 19), as a note's text."""
    values = {int(fields[16]) for name, fields in thread_stats(pid) if name == "NIO-SGLTN"}
    return ", ".join(str(v) for v in sorted(values))


def machine_cpu_ticks():
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def machine_idle_share(before, after):
    spent = [b - a for a, b in zip(before, after)]
    return (spent[3] + spent[4]) / max(1, sum(spent))  # idle and iowait


def quiet_disk():
    """Flush every dirty page before a timed run, so no row pays for the write-back of the one before
    (nginx and tuspyserver leave their files dirty in the page cache)."""
    os.sync()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/", timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid):
    """Starts a new peak: VmHWM then covers what follows, not the whole life of the process."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def proc_peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class CaseFiles:
    def __init__(self, storage: Path, binary: str | None = None, extra_args=()):
        self.binary = binary or BINARY
        self.extra_args = list(extra_args)
        self.storage = storage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.token = self.cli("users", "create", f"bench{time.time_ns()}", "--role", "customer", "--account", "BENCH")
        self.case = self.cli("cases", "create", "--account", "BENCH", "--subject", "benchmark")

    def cli(self, *args):
        return subprocess.run([self.binary, *args, "--storage", str(self.storage)], check=True, capture_output=True,
                              text=True).stdout.strip()

    def start(self):
        self.started = time.monotonic()
        self.process = subprocess.Popen([self.binary, "serve", "--storage", str(self.storage), "--port", str(self.port),
                                         "--min-free-space", "0", "--log-level", "warning", *self.extra_args])
        wait_http(self.port, "/healthz")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)

    def headers(self):
        return {"Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0"}

    def auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    def create(self, length, sha256=None, path=None):
        meta = "filename " + base64.b64encode(b"bench.bin").decode()
        if sha256:
            meta += ",sha256 " + base64.b64encode(sha256.encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", self.port)
        c.request("POST", path or f"/api/v1/cases/{self.case}/uploads",
                  headers={**self.headers(), "Upload-Length": str(length), "Upload-Metadata": meta})
        r = c.getresponse()
        r.read()
        assert r.status == 201, r.status
        return self.url + r.getheader("Location")


def patch_args(url, chunk: Path, offset, checksum, headers, write_out):
    """curl arguments for one checksummed tus PATCH of a file (one transfer of a curl command line)."""
    args = ["-o", "/dev/null", "-w", write_out, "-X", "PATCH", url,
            "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Offset: {offset}",
            "-H", "Content-Type: application/offset+octet-stream", "-H", f"Upload-Checksum: sha256 {checksum}",
            "-H", "Expect:", "-T", str(chunk)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    return args


def curl_patch(url, chunk: Path, offset, checksum, headers):
    args = ["curl", "-sS", *patch_args(url, chunk, offset, checksum, headers, "%{http_code} %{time_total}")]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def split_chunks(source: Path, size: int, into: Path):
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["split", "-b", str(size), "-d", "-a", "4", str(source), str(into / "c")], check=True)
    chunks = sorted(into.iterdir())
    sums = [base64.b64encode(hashlib.sha256(p.read_bytes()).digest()).decode() for p in chunks]
    return list(zip(chunks, sums))


def chunk_loop(create_url, chunks, headers):
    """The same client for both tus servers: one curl process walking the chunks over one keep-alive
    connection (`--next` per chunk), each PATCH with Upload-Checksum: sha256, so neither process start-up
    nor a TCP handshake per chunk sits between the server and the disk."""
    url = create_url()
    args = ["curl", "-sS"]
    offset = 0
    for n, (path, checksum) in enumerate(chunks):
        if n:
            args.append("--next")
        args += patch_args(url, path, offset, checksum, headers, "%{http_code}\\n")
        offset += path.stat().st_size
    quiet_disk()
    started = time.monotonic()
    codes = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    elapsed = time.monotonic() - started
    assert codes == ["204"] * len(chunks), f"PATCH answered {codes}"
    return elapsed


def main():
    work = ROOT / ".bench" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "compression":
        print(f"CaseFiles benchmark, compressed uploads only, medians of {RUNS} runs")
        bench_compression(work)
        return finish(work, 0)
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "cluster":
        print("12. several nodes (issue #22): PostgreSQL, the object store, two nodes and nginx (Scripts/cluster)")
        bench_cluster(work)
        return finish(work, 0)
    if os.environ.get("BENCH_ONLY") == "bundles":
        print("11. support bundles read in place")
        bench_bundles(work)
        return finish(work, 0)
    free = shutil.disk_usage(work).free
    size = 2 * GiB
    if free < 10 * GiB:
        size = max(256 * MiB, (free - 2 * GiB) // 5 // (64 * MiB) * 64 * MiB)
        notes.append(f"only {free / GiB:.1f} GiB free: file size scaled down to {size / MiB:.0f} MiB")
    if THROTTLE:
        device = os.stat(work).st_dev
        group = Path("/sys/fs/cgroup/blkio/casefiles-bench")
        group.mkdir(exist_ok=True)
        (group / "blkio.throttle.write_bps_device").write_text(
            f"{os.major(device)}:{os.minor(device)} {int(THROTTLE * 1e6)}")
        (group / "cgroup.procs").write_text(str(os.getpid()))
        notes.append(f"writes to the storage device throttled to {THROTTLE:.0f} MB/s (blkio cgroup)")
    print(f"CaseFiles benchmark: {size / MiB:.0f} MiB file, medians of {RUNS} runs, storage {work}")
    source = work / "source.bin"
    with open(source, "wb") as f:
        block = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(block)
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()

    print("1. machine limits")
    out = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", str(MiB), "-seconds", "2"],
                         capture_output=True, text=True).stdout
    sha_rate = float(re.search(r"sha256\s+([\d.]+)k", out)[1]) * 1000 / 1e6
    row("openssl speed -evp sha256 (1 MiB blocks)", sha_rate, "MB/s")
    dd_rates = []
    for _ in range(RUNS):
        started = time.monotonic()
        subprocess.run(["dd", "if=/dev/zero", f"of={work / 'dd.bin'}", "bs=1M", f"count={size // MiB}",
                        "conv=fdatasync"], capture_output=True, check=True)
        dd_rates.append(size / (time.monotonic() - started) / 1e6)
        (work / "dd.bin").unlink()
    disk = statistics.median(dd_rates)
    row("dd conv=fdatasync to the storage filesystem", disk, "MB/s", "runs: " + ", ".join(f"{r:.0f}" for r in dd_rates))
    direct_rates = []
    for _ in range(RUNS):
        (work / "dd.bin").write_bytes(b"")
        started = time.monotonic()
        subprocess.run(["dd", "if=/dev/zero", f"of={work / 'dd.bin'}", "bs=1M", f"count={size // MiB}",
                        "oflag=direct", "conv=fdatasync"], capture_output=True, check=True)
        direct_rates.append(size / (time.monotonic() - started) / 1e6)
        (work / "dd.bin").unlink()
    row("dd oflag=direct bs=1M to the storage filesystem", statistics.median(direct_rates), "MB/s",
        "what CaseFiles' O_DIRECT writes can reach; runs: " + ", ".join(f"{r:.0f}" for r in direct_rates))
    LIMITS.update(dd=disk, direct=statistics.median(direct_rates))
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "concurrency":
        # `Scripts/bench --only concurrency`: section 6 alone, BENCH_RUNS times on a fresh server each (the
        # HEAD p99 ratio moves from run to run; issue #16), with the medians at the end.
        ratios: dict[str, list[float]] = {}
        for run in range(RUNS):
            print(f"6. concurrency and the HEAD probes, run {run + 1} of {RUNS}")
            casefiles = CaseFiles(work / f"concurrency-{run}")
            casefiles.start()
            for name, ratio in bench_concurrency(casefiles, source, work).items():
                ratios.setdefault(name, []).append(ratio)
            casefiles.stop()
            shutil.rmtree(casefiles.storage, ignore_errors=True)
        for name, values in ratios.items():
            row(f"median of {len(values)} runs: HEAD p99 during {name} / the second CaseFiles'",
                statistics.median(values), "x", "target at most 1.5; runs: " + ", ".join(f"{v:.2f}" for v in values))
        source.unlink()
        return finish(work, size)

    print("2. reference server: nginx WebDAV PUT (no hashing, no fsync)")
    nginx_rate = bench_nginx(work, source, size)
    LIMITS.update(nginx=nginx_rate)

    print("3./4. tus servers, same curl chunk loop, Upload-Checksum: sha256 on every PATCH")
    results = {}
    # `BENCH_TRACE=FILE Scripts/bench`: the main CaseFiles also writes its upload timeline (`--trace-uploads`); a
    # copy taken right after the 64 MiB loops, FILE.loops, holds the chunk loops (and the CLI's chunks, which group
    # under their own sizes but for its first two, 8 MiB each): `Scripts/upload-timeline FILE.loops`.
    trace = os.environ.get("BENCH_TRACE")
    casefiles = CaseFiles(work / "casefiles", extra_args=["--trace-uploads", trace] if trace else [])
    casefiles.start()
    baseline = None
    if BASELINE:
        baseline = CaseFiles(work / "baseline", BASELINE)
        baseline.start()
    tuspy_port = free_port()
    tuspy = start_tuspyserver(work, tuspy_port)
    for chunk_size in (8 * MiB, 64 * MiB):
        chunks = split_chunks(source, chunk_size, work / f"chunks-{chunk_size // MiB}")
        ours, cpu, curl_cpu, theirs, base, faults = [], [], [], [], [], []
        reset_peak_rss(casefiles.process.pid)
        for _ in range(RUNS):
            cpu_before = proc_cpu_seconds(casefiles.process.pid)
            faults_before = proc_minor_faults(casefiles.process.pid)
            children = children_cpu_seconds()
            ours.append(size / chunk_loop(lambda: casefiles.create(size, source_sha), chunks, casefiles.auth()) / 1e6)
            curl_cpu.append((children_cpu_seconds() - children) / (size / GiB))
            cpu.append((proc_cpu_seconds(casefiles.process.pid) - cpu_before) / (size / GiB))
            faults.append((proc_minor_faults(casefiles.process.pid) - faults_before) / (size / MiB))
            clear_blobs(casefiles.storage)
            if baseline:
                base.append(size / chunk_loop(lambda: baseline.create(size, source_sha), chunks, baseline.auth()) / 1e6)
                clear_blobs(baseline.storage)
            theirs.append(size / chunk_loop(lambda: create_tuspy(tuspy_port, size), chunks, {}) / 1e6)
            shutil.rmtree(work / "tuspy-files", ignore_errors=True)
            (work / "tuspy-files").mkdir()
        results[chunk_size] = (statistics.median(ours), statistics.median(theirs))
        row(f"CaseFiles, {chunk_size // MiB} MiB chunks (chunk + file SHA-256, fsync)", results[chunk_size][0], "MB/s",
            f"{statistics.median(cpu):.2f} CPU s/GiB; {statistics.median(faults):.1f} minor page faults per MiB; "
            f"runs: " + ", ".join(f"{r:.0f}" for r in ours))
        ratio_row(f"{chunk_size // MiB} MiB chunk loop / min(nginx, dd)", results[chunk_size][0],
                  min(nginx_rate, disk), 0.9 if chunk_size == 64 * MiB else 0.8, "at least")
        # curl and the server share the two cores; what they spend per GiB together bounds the loop's rate even
        # with no core ever idle (each tus PATCH also waits for its 204, two device flushes later, before the next).
        cpu_bound_row(f"{chunk_size // MiB} MiB chunk loop", "curl", statistics.median(curl_cpu), statistics.median(cpu),
                      min(nginx_rate, disk) * (0.9 if chunk_size == 64 * MiB else 0.8))
        if baseline:
            row(f"baseline build, {chunk_size // MiB} MiB chunks (same loop, interleaved)", statistics.median(base), "MB/s",
                f"this build / baseline: {results[chunk_size][0] / statistics.median(base):.2f}x")
        row(f"tuspyserver, {chunk_size // MiB} MiB chunks (ignores Upload-Checksum)", results[chunk_size][1], "MB/s",
            f"CaseFiles is {results[chunk_size][0] / results[chunk_size][1]:.1f}x")
        if chunk_size == 8 * MiB:
            client_rates, client_cpu, server_cpu = [], [], []
            for _ in range(RUNS):
                quiet_disk()
                children = children_cpu_seconds()
                server_before = proc_cpu_seconds(casefiles.process.pid)
                started = time.monotonic()
                subprocess.run([BINARY, "upload", "--server", casefiles.url, "--token", casefiles.token, "--case",
                                casefiles.case, "--quiet", str(source)],
                               check=True, capture_output=True, env={**os.environ, "XDG_STATE_HOME": str(work / "xdg")})
                client_rates.append(size / (time.monotonic() - started) / 1e6)
                client_cpu.append((children_cpu_seconds() - children) / (size / GiB))
                server_cpu.append((proc_cpu_seconds(casefiles.process.pid) - server_before) / (size / GiB))
                clear_blobs(casefiles.storage)
            row("casefiles upload, default settings (chunk size from the measured rate)", statistics.median(client_rates),
                "MB/s", f"curl 8 MiB loop: {results[chunk_size][0]:.0f} MB/s; runs: "
                + ", ".join(f"{r:.0f}" for r in client_rates))
            # The client hashes every byte twice (the chunk's Upload-Checksum, the whole file's SHA-256) and the
            # server twice more, on the same two cores: the CPU they need together bounds the rate.
            cpu_bound_row("casefiles upload", "client", statistics.median(client_cpu), statistics.median(server_cpu),
                          min(nginx_rate, disk) * 0.8)
            ratio_row("casefiles upload / min(nginx, dd)", statistics.median(client_rates), min(nginx_rate, disk), 0.8,
                      "at least")
        if chunk_size == 64 * MiB:
            peak = proc_peak_rss_mib(casefiles.process.pid)
            row("CaseFiles server peak RSS, 64 MiB chunk loops", peak, "MiB")
            if trace:
                shutil.copy(trace, trace + ".loops")
            bench_through_nginx(casefiles, work, chunks, size, source_sha, results[chunk_size][0])
        shutil.rmtree(work / f"chunks-{chunk_size // MiB}")
    tuspy.terminate()
    tuspy.wait(10)

    if baseline:
        baseline.stop()
        shutil.rmtree(baseline.storage, ignore_errors=True)

    print("5./6. concurrency and the resume probe")
    bench_concurrency(casefiles, source, work)
    casefiles.stop()

    print("7. restart and resume")
    bench_restart(work)

    print("8. one 10 GiB upload: peak RSS, CPU per GiB as the file grows")
    ours = bench_large(work)
    ratio_row("one large PATCH / dd", ours, LIMITS["dd"], 0.95, "at least")
    if BASELINE:
        theirs = bench_large(work, BASELINE, "baseline build: ")
        row("one large PATCH, this build / baseline", ours / theirs, "x")
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "uploads":
        # `Scripts/bench --only uploads`: sections 1 to 8, the upload-speed rows (issue #16), e.g. beside a
        # `--throttle-disk` run.
        source.unlink()
        return finish(work, size)

    print("9. compressed uploads of a text log through a 100 Mbit/s link")
    bench_compression(work)
    print("10. one upload over N streams (tus concatenation), loopback and a delaying proxy")
    bench_parallel(work / "parallel", size)

    print("11. support bundles read in place")
    bench_bundles(work)

    source.unlink()
    finish(work, size)


def finish(work: Path, size: int):
    shutil.rmtree(work, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "file_bytes": size, "runs": RUNS,
              "rows": rows, "notes": notes}
    out = ROOT / ".bench" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    for note in notes:
        print("note:", note)
    print(f"written to {out}")


def clear_blobs(storage: Path):
    # Benchmarks only: drop finished blobs between runs so the disk does not fill.
    for blob in (storage / "blobs").glob("*/*"):
        blob.unlink()


def start_nginx(work: Path, name: str, location: str):
    """One nginx worker on a free port serving `work/name-root` with `location`'s directives."""
    port = free_port()
    root = work / f"{name}-root"
    temp = work / f"{name}-tmp"
    root.mkdir(exist_ok=True)  # a section run again (`--only concurrency`) reuses it
    temp.mkdir(exist_ok=True)
    conf = work / f"{name}.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {temp};
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {root}; {location} }}
    }}
}}
""")
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)]), port, root


def bench_through_nginx(casefiles, work: Path, chunks, size: int, sha: str, direct: float):
    """The 64 MiB chunk loop through nginx configured by the committed template (Scripts/nginx), against the
    same loop straight to CaseFiles (issue #18: what the reverse proxy costs)."""
    port = free_port()
    template = (ROOT / "Scripts" / "nginx" / "casefiles.conf.template").read_text()
    site = template.replace("{{listen}}", f"127.0.0.1:{port}").replace("{{upstream}}", f"127.0.0.1:{casefiles.port}")
    (work / "proxy-tmp").mkdir(exist_ok=True)
    conf = work / "proxy.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/proxy.pid;
error_log {work}/proxy-error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {work}/proxy-tmp;
    {site}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])
    try:
        wait_http(port, "/healthz")
        proxied = casefiles.url.replace(f":{casefiles.port}", f":{port}")
        rates = []
        for _ in range(RUNS):
            def create_via_proxy():
                return proxied + casefiles.create(size, sha)[len(casefiles.url):]
            rates.append(size / chunk_loop(create_via_proxy, chunks, casefiles.auth()) / 1e6)
            clear_blobs(casefiles.storage)
        rate = statistics.median(rates)
        row("64 MiB chunk loop through nginx (Scripts/nginx template)", rate, "MB/s",
            f"straight to CaseFiles: {direct:.0f} MB/s ({rate / direct:.2f}x); runs: " + ", ".join(f"{r:.0f}" for r in rates))
    finally:
        nginx.terminate()
        nginx.wait(10)


def bench_nginx(work: Path, source: Path, size: int):
    nginx, port, root = start_nginx(work, "nginx",
                                    "dav_methods PUT; create_full_put_path on; client_body_buffer_size 1m;")
    wait_http(port)
    rates = []
    for n in range(RUNS):
        quiet_disk()
        started = time.monotonic()
        subprocess.run(["curl", "-sS", "-f", "-T", str(source), f"http://127.0.0.1:{port}/put-{n}.bin"], check=True)
        rates.append(size / (time.monotonic() - started) / 1e6)
        (root / f"put-{n}.bin").unlink()
    nginx.terminate()
    nginx.wait(10)
    rate = statistics.median(rates)
    row("nginx WebDAV PUT, curl -T", rate, "MB/s")
    return rate


def start_tuspyserver(work: Path, port: int):
    files = work / "tuspy-files"
    files.mkdir()
    app = work / "tuspy_app.py"
    app.write_text(f"""
from fastapi import FastAPI
from tuspyserver import create_tus_router
app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir="{files}"))
""")
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "tuspy_app:app", "--port", str(port), "--log-level",
                                "warning"], cwd=work)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("tuspyserver did not start")


def create_tuspy(port, size):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                          "Upload-Metadata": "filename " + base64.b64encode(b"bench.bin").decode()})
    r = c.getresponse()
    r.read()
    location = r.getheader("Location")
    return location if location.startswith("http") else f"http://127.0.0.1:{port}{location}"


def head_latencies(port, path, headers, count):
    """`count` HEAD requests on one new connection, each timed from request to response."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        c.request("HEAD", path, headers=headers)
        c.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
    c.close()
    return latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def bench_concurrency(casefiles, source, work):
    chunk = work / "chunk-64"
    with open(source, "rb") as f:
        chunk.write_bytes(f.read(64 * MiB))
    checksum = base64.b64encode(hashlib.sha256(chunk.read_bytes()).digest()).decode()
    # A desk's usual burst: 4 uploads at once, each of 4 x 64 MiB chunks (medians of RUNS).
    burst = []
    for _ in range(RUNS):
        burst_urls = [casefiles.create(4 * 64 * MiB) for _ in range(4)]
        quiet_disk()
        started = time.monotonic()

        def four_chunks(url):
            return [curl_patch(url, chunk, k * 64 * MiB, checksum, casefiles.auth()) for k in range(4)]

        with ThreadPoolExecutor(4) as pool:
            outcomes = [status for result in pool.map(four_chunks, burst_urls) for status, _ in result]
        burst.append(16 * 64 * MiB / (time.monotonic() - started) / 1e6)
        assert all(status == 204 for status in outcomes), outcomes
        clear_blobs(casefiles.storage)
    row("4 concurrent uploads of 256 MiB (64 MiB chunks), aggregate", statistics.median(burst), "MB/s",
        "a desk's usual burst")

    probe = casefiles.create(1 * GiB)[len(casefiles.url):]
    idle = head_latencies(casefiles.port, probe, casefiles.headers(), 1000)
    row("1,000 HEAD (idle server) p50", percentile(idle, 50), "ms")
    row("1,000 HEAD (idle server) p99", percentile(idle, 99), "ms")

    # The same probes, in turn, to an nginx serving a static file (what this client and this machine
    # under the same load add to any server's answer) and to a second CaseFiles with no uploads of its
    # own (what this stack adds when it shares the CPUs but not the work).
    nginx, nginx_port, nginx_root = start_nginx(work, "static", "")
    (nginx_root / "probe").write_bytes(b"probe")
    wait_http(nginx_port, "/probe")
    bystander = CaseFiles(work / "bystander")
    bystander.start()
    bystander_probe = bystander.create(1 * GiB)[len(bystander.url):]
    priorities = (f"section 6: event loops at nice {event_loop_nice(casefiles.process.pid)} (busy server), "
                  f"{event_loop_nice(bystander.process.pid)} (the second CaseFiles); -10 unless refused (no CAP_SYS_NICE)")
    if priorities not in notes:
        notes.append(priorities)
    # 32 uploads of 256 MiB, each as 4 PATCHes of 64 MiB (one curl each, as a chunking client sends them),
    # so the probes see the uploads starting together, their steady state and their commits; the probes run
    # while the uploads do (bounded: at most 50,000 of each kind). Each batch of 10 probes is stamped with its
    # start, for the first-3-s window.
    # 32 x 256 MiB is 8 GiB on the storage filesystem: 64 MiB uploads (one chunk each) when there is less room.
    per_upload = 4 if shutil.disk_usage(casefiles.storage).free > 12 * GiB else 1
    if per_upload == 1:
        notes.append("section 6: under 12 GiB free, the 32 concurrent uploads are of 64 MiB (one chunk each)")
    urls = [casefiles.create(per_upload * 64 * MiB) for _ in range(32)]
    busy: list[tuple[float, float]] = []  # (seconds since the load started, latency ms)
    opening: list[float] = []  # the first probe on each connection, which also pays for setting it up
    floor: list[float] = []
    unloaded: list[tuple[float, float]] = []
    stop = threading.Event()

    def probe_loop():
        while not stop.is_set() and len(busy) < 50_000:
            at = time.monotonic() - started
            latencies = head_latencies(casefiles.port, probe, casefiles.headers(), 10)
            busy.extend((at, ms) for ms in latencies)
            opening.append(latencies[0])
            floor.extend(head_latencies(nginx_port, "/probe", {}, 10))
            at = time.monotonic() - started
            unloaded.extend((at, ms) for ms in head_latencies(bystander.port, bystander_probe, bystander.headers(), 10))

    def upload_chunks(url):
        return [curl_patch(url, chunk, k * 64 * MiB, checksum, casefiles.auth()) for k in range(per_upload)]

    prober = threading.Thread(target=probe_loop)
    quiet_disk()
    threads_before = thread_cpu_seconds(casefiles.process.pid)
    machine_before = machine_cpu_ticks()
    started = time.monotonic()
    prober.start()
    with ThreadPoolExecutor(32) as pool:
        results = [result for results in pool.map(upload_chunks, urls) for result in results]
    elapsed = time.monotonic() - started
    threads_after = thread_cpu_seconds(casefiles.process.pid)
    machine_after = machine_cpu_ticks()
    stop.set()
    prober.join()
    nginx.terminate()
    nginx.wait(10)
    bystander.stop()
    shutil.rmtree(bystander.storage)
    latencies = [seconds * 1000 for status, seconds in results]
    assert all(status == 204 for status, _ in results), results
    aggregate = 32 * per_upload * 64 * MiB / elapsed / 1e6
    row(f"32 concurrent uploads of {per_upload * 64} MiB (64 MiB chunks), aggregate", aggregate, "MB/s")
    ratio_row("32 concurrent uploads / dd", aggregate, LIMITS["dd"], 0.9, "at least")
    row("32 concurrent uploads: PATCH latency p50", percentile(latencies, 50), "ms")
    row("32 concurrent uploads: PATCH latency p99", percentile(latencies, 99), "ms")
    # Where the CPU went meanwhile: the machine's idle share, and the busy server's threads by kind.
    idle = machine_idle_share(machine_before, machine_after)
    spent = {kind: threads_after.get(kind, 0) - threads_before.get(kind, 0) for kind in threads_after}
    row("32 concurrent uploads: machine idle", idle * 100, "%", "0: the cores are saturated")
    row("32 concurrent uploads: server CPU in event loops", spent.get("NIO-SGLTN", 0) / elapsed, "cores",
        "reading sockets, parsing, handlers")
    row("32 concurrent uploads: server CPU in thread pools", spent.get("TP", 0) / elapsed, "cores",
        "NIO thread pools: BulkWork's hashing and staging copies (nice 10), device writes, fdatasync, blocking calls")
    ratios: dict[str, float] = {}
    if busy:
        for name, window in (("the whole load", lambda at: True), ("its first 3 s (the uploads starting)", lambda at: at < 3)):
            ours = [ms for at, ms in busy if window(at)]
            idle_server = [ms for at, ms in unloaded if window(at)]
            if not ours or not idle_server:
                continue
            row(f"HEAD during {name} ({len(ours)} probes) p50", percentile(ours, 50), "ms")
            row(f"HEAD during {name} ({len(ours)} probes) p99", percentile(ours, 99), "ms")
            row(f"  a second CaseFiles without uploads, same load ({len(idle_server)}) p99",
                percentile(idle_server, 99), "ms", "the stack's own floor on shared CPUs")
            ratio_row(f"HEAD p99 during {name} / the second CaseFiles' p99 ({len(ours)} / {len(idle_server)})", percentile(ours, 99),
                      percentile(idle_server, 99), 1.5, "at most")
            ratios[name] = percentile(ours, 99) / percentile(idle_server, 99)
        row(f"  of which first on a new connection ({len(opening)}) p99", percentile(opening, 99), "ms",
            "connection set-up included")
        row(f"HEAD to nginx, static file, same load ({len(floor)} probes) p50", percentile(floor, 50), "ms")
        row(f"HEAD to nginx, static file, same load ({len(floor)} probes) p99", percentile(floor, 99), "ms",
            "the floor this client and machine set")
    clear_blobs(casefiles.storage)
    chunk.unlink()
    return ratios


def stream_patch(casefiles, url, offset, length):
    c = http.client.HTTPConnection("127.0.0.1", casefiles.port, timeout=600)
    c.putrequest("PATCH", url[len(casefiles.url):])
    for name, value in {**casefiles.headers(), "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream", "Content-Length": str(length)}.items():
        c.putheader(name, value)
    c.endheaders()
    block = b"\x5a" * MiB
    for _ in range(length // MiB):
        c.send(block)
    r = c.getresponse()
    r.read()
    assert r.status == 204, r.status


def bench_restart(work):
    free = shutil.disk_usage(work).free
    total = 4 * GiB if free > 8 * GiB else max(512 * MiB, free // 3 // GiB * GiB)
    for done_fraction in (0.25, 0.75):
        casefiles = CaseFiles(work / f"restart-{done_fraction}")
        casefiles.start()
        url = casefiles.create(total)
        done = int(total * done_fraction) // MiB * MiB
        stream_patch(casefiles, url, 0, done)
        casefiles.stop(signal.SIGKILL)
        started = time.monotonic()
        casefiles.start()
        c = http.client.HTTPConnection("127.0.0.1", casefiles.port)
        c.request("HEAD", url[len(casefiles.url):], headers=casefiles.headers())
        r = c.getresponse()
        r.read()
        offset = int(r.getheader("Upload-Offset"))
        stream_patch(casefiles, url, offset, MiB)
        elapsed = (time.monotonic() - started) * 1000
        row(f"restart → first accepted byte, {done / GiB:.2f} of {total / GiB:.0f} GiB uploaded", elapsed, "ms",
            "includes process start")
        casefiles.stop()
        shutil.rmtree(casefiles.storage)


def bench_large(work, binary=None, label=""):
    """One large PATCH; returns its MB/s."""
    free = shutil.disk_usage(work).free
    total = 10 * GiB if free > 12 * GiB else max(GiB, (free - 2 * GiB) // GiB * GiB)
    if total < 10 * GiB:
        notes.append(f"only {free / GiB:.1f} GiB free: the large upload was {total / GiB:.0f} GiB, not 10")
    casefiles = CaseFiles(work / "large", binary)
    casefiles.start()
    url = casefiles.create(total)
    upload_id = url.rsplit("/", 1)[1]
    blob = casefiles.storage / "blobs" / upload_id[:2] / upload_id
    pid = casefiles.process.pid
    sender = threading.Thread(target=stream_patch, args=(casefiles, url, 0, total))
    quiet_disk()
    started = time.monotonic()
    sender.start()
    samples = []  # (bytes on disk, server CPU seconds)
    while sender.is_alive():
        size = blob.stat().st_size if blob.exists() else 0
        samples.append((size, proc_cpu_seconds(pid)))
        time.sleep(0.25)
    sender.join()
    elapsed = time.monotonic() - started
    samples.append((total, proc_cpu_seconds(pid)))
    row(f"{label}one {total / GiB:.0f} GiB PATCH (Content-Length, no chunk checksum)", total / elapsed / 1e6, "MB/s")
    row(f"{label}server peak RSS during the {total / GiB:.0f} GiB upload", proc_peak_rss_mib(pid), "MiB", "target < 64")
    fifths = []
    for k in range(5):
        low = min(samples, key=lambda s: abs(s[0] - total * k / 5))
        high = min(samples, key=lambda s: abs(s[0] - total * (k + 1) / 5))
        if high[0] > low[0]:
            fifths.append((high[1] - low[1]) / ((high[0] - low[0]) / GiB))
    row(f"{label}server CPU s/GiB, first fifth of the file", fifths[0], "s/GiB")
    row(f"{label}server CPU s/GiB, last fifth of the file", fifths[-1], "s/GiB",
        "by fifths: " + ", ".join(f"{f:.2f}" for f in fifths))
    casefiles.stop()
    shutil.rmtree(casefiles.storage)
    return total / elapsed / 1e6


class DelayingProxy:
    """A TCP proxy of the bench's own, since this kernel has no netem: it emulates a long, slightly lossy link
    (50 ms round trip, 0.5% loss) between the client and the server.

    What it emulates: latency (each direction delivers what it read 25 ms later); a bounded TCP window per
    connection and direction (`window` bytes in flight, so one connection moves at most window / RTT, as a real
    one does); and loss as a retransmission timeout: with probability `loss` per 64 KiB segment read, that
    direction of that connection stalls for 200 ms (an RTO), delaying everything behind it (head-of-line blocking).
    What it does not: real segment loss and retransmission, congestion-window growth and halving (slow start,
    Reno/CUBIC), reordering, a bandwidth cap shared by the connections, or loss at a finer grain than 64 KiB."""

    def __init__(self, upstream_port, delay=0.025, loss=0.005, stall=0.2, window=1 << 20, seed=1):
        import asyncio
        import random
        self.asyncio, self.random = asyncio, random.Random(seed)
        self.upstream_port, self.delay, self.loss, self.stall, self.window = upstream_port, delay, loss, stall, window
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stalls = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready):
        asyncio = self.asyncio
        asyncio.set_event_loop(self.loop)

        async def pump(reader, writer):
            queue = asyncio.Queue()
            room = asyncio.Condition()
            in_flight = 0
            stalled_until = 0.0

            async def deliver():
                nonlocal in_flight
                while True:
                    due, data = await queue.get()
                    if data is None:
                        break
                    wait = due - self.loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()
                    async with room:
                        in_flight -= len(data)
                        room.notify_all()
                try:
                    writer.close()
                except OSError:
                    pass

            sender = asyncio.ensure_future(deliver())
            try:
                while True:
                    data = await reader.read(64 * 1024)
                    if not data:
                        break
                    now = self.loop.time()
                    if self.random.random() < self.loss:
                        stalled_until = max(stalled_until, now) + self.stall
                        self.stalls += 1
                    async with room:
                        await room.wait_for(lambda: in_flight < self.window)
                        in_flight += len(data)
                    queue.put_nowait((max(now + self.delay, stalled_until), data))
            except OSError:
                pass
            queue.put_nowait((0, None))
            await sender

        async def handle(client_reader, client_writer):
            try:
                server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer),
                                 return_exceptions=True)

        async def serve():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            await self.server.serve_forever()

        try:
            self.loop.run_until_complete(serve())
        except BaseException:
            pass

    def close(self):
        self.loop.call_soon_threadsafe(lambda: [task.cancel() for task in self.asyncio.all_tasks(self.loop)])


def bench_parallel(work, size=None, streams=(1, 4, 8)):
    """`casefiles upload --parallel N` (tus concatenation) against one stream: on loopback, and through the
    `DelayingProxy` (50 ms round trip, 0.5% loss). The time runs from the command's start to its end: parts sent,
    final created, the server's verification waited for."""
    size = size or int(os.environ.get("BENCH_PARALLEL_SIZE", 2 * GiB))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "parallel.bin"
    with open(source, "wb") as f:
        block = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(block)
    casefiles = CaseFiles(work / "parallel-storage")
    casefiles.start()
    proxy = DelayingProxy(casefiles.port)
    results = {}
    try:
        for link, url in (("loopback", casefiles.url), ("50 ms RTT, 0.5% loss", proxy.url)):
            for n in streams:
                state = work / f"state-{n}-{time.time_ns()}"
                env = {**os.environ, "CASEFILES_TOKEN": casefiles.token, "CASEFILES_SERVER": url, "XDG_STATE_HOME": str(state)}
                quiet_disk()
                started = time.monotonic()
                subprocess.run([casefiles.binary, "upload", "--case", casefiles.case, "--parallel", str(n), "--quiet",
                                str(source)], check=True, capture_output=True, env=env)
                elapsed = time.monotonic() - started
                results[(link, n)] = size / elapsed / 1e6
                row(f"upload --parallel {n}, {size / MiB:.0f} MiB, {link}", results[(link, n)], "MB/s",
                    f"{elapsed:.1f} s" + (f", ratio to 1 stream {results[(link, n)] / results[(link, 1)]:.2f}" if n > 1 else ""))
        notes.append(f"parallel: the delaying proxy stalled {proxy.stalls} times (emulated RTOs)")
    finally:
        proxy.close()
        casefiles.stop()
        shutil.rmtree(casefiles.storage, ignore_errors=True)
        source.unlink(missing_ok=True)
    return results


class RateLimitedProxy:
    """The bench's own TCP proxy on loopback that holds the client-to-server direction to `rate` bytes/s (a token
    bucket refilled by the clock, 64 KiB reads), as a customer's uplink would; answers pass unthrottled. It counts
    the bytes it forwards upstream. Runs its asyncio loop in a thread of this process, so the server's CPU figures
    never include it."""

    def __init__(self, target_port: int, rate: float):
        import asyncio
        self.asyncio = asyncio
        self.target_port, self.rate, self.bytes_up = target_port, rate, 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self):
        self.asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self.asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, client_reader, client_writer):
        upstream_reader, upstream_writer = await self.asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(reader, writer, throttled):
            started, passed = time.monotonic(), 0
            try:
                while data := await reader.read(65536):
                    if throttled:
                        passed += len(data)
                        self.bytes_up += len(data)
                        ahead = passed / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            await self.asyncio.sleep(ahead)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await self.asyncio.gather(pump(client_reader, upstream_writer, True), pump(upstream_reader, client_writer, False))


def bench_compression(work: Path):
    """`casefiles upload --compress off|on` of the fixed-seed text log (Tests/e2e/loggen.py) through a 100 Mbit/s
    uplink: the effective rate in ORIGINAL bytes/s, the bytes on the wire, and the server's CPU per decoded GiB."""
    sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
    from loggen import generate
    size = int(os.environ.get("BENCH_LOG_MIB", "256")) * MiB
    log = work / "dialer.log"
    generate(str(log), size)
    gzip_bytes = len(subprocess.run(["gzip", "-1", "-c", str(log)], capture_output=True, check=True).stdout)
    casefiles = CaseFiles(work / "compression")
    casefiles.start()
    rate = 100e6 / 8  # 100 Mbit/s
    results = {}
    for mode in ("off", "on"):
        rates, cpus, sent = [], [], []
        for _ in range(RUNS):
            with RateLimitedProxy(casefiles.port, rate) as proxy:
                cpu_before = proc_cpu_seconds(casefiles.process.pid)
                started = time.monotonic()
                subprocess.run([BINARY, "upload", "--server", proxy.url, "--token", casefiles.token, "--case",
                                casefiles.case, "--compress", mode, "--quiet", str(log)],
                               check=True, capture_output=True, env={**os.environ, "XDG_STATE_HOME": str(work / "xdg")})
                rates.append(size / (time.monotonic() - started) / 1e6)
                cpus.append((proc_cpu_seconds(casefiles.process.pid) - cpu_before) / (size / GiB))
                sent.append(proxy.bytes_up)
            clear_blobs(casefiles.storage)
        results[mode] = (statistics.median(rates), statistics.median(cpus), statistics.median(sent))
        row(f"upload --compress {mode}, {size // MiB} MiB text log, 100 Mbit/s link", results[mode][0], "MB/s",
            f"original bytes/s; {results[mode][2] / MiB:.1f} MiB on the wire (gzip -1: {gzip_bytes / MiB:.1f} MiB)")
        row(f"server CPU per decoded GiB, --compress {mode}", results[mode][1], "CPU s/GiB")
    row("compressed / uncompressed effective rate, 100 Mbit/s", results["on"][0] / results["off"][0], "x",
        f"wire bytes / gzip -1: {results['on'][2] / gzip_bytes:.3f}")
    casefiles.stop()
    shutil.rmtree(casefiles.storage, ignore_errors=True)
    log.unlink()



# `RUNS` PutObject calls of one file (argv[1]) to the cluster's bucket with botocore, each rate (MB/s) printed.
OBJECT_STORE_PUT = f"""
import os, sys, time, botocore.session
from botocore.config import Config
path = sys.argv[1]
client = botocore.session.get_session().create_client(
    "s3", endpoint_url=os.environ["CASEFILES_S3_ENDPOINT"], region_name=os.environ["CASEFILES_S3_REGION"],
    aws_access_key_id=os.environ["CASEFILES_S3_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["CASEFILES_S3_SECRET_ACCESS_KEY"],
    config=Config(s3={{"addressing_style": "path"}}, signature_version="s3v4"))
bucket = os.environ["CASEFILES_BLOB_STORE"].removeprefix("s3://")
for i in range({RUNS}):
    started = time.monotonic()
    with open(path, "rb") as body:
        client.put_object(Bucket=bucket, Key=f"bench-put-{{i}}", Body=body)
    print(os.path.getsize(path) / (time.monotonic() - started) / 1e6)
    client.delete_object(Bucket=bucket, Key=f"bench-put-{{i}}")
"""


def bench_cluster(work: Path):
    """Issue #22 (reported, no target: two nodes sharing 2 cores with PostgreSQL, Swift and nginx measure overhead,
    not scale). `Scripts/bench --only cluster` (BENCH_CLUSTER_MIB sets the single upload's size, 1024)."""
    mib = int(os.environ.get("BENCH_CLUSTER_MIB", "1024"))
    source = work / "cluster-source.bin"
    with open(source, "wb") as f:
        block = os.urandom(MiB)
        for i in range(mib):
            f.write(i.to_bytes(8, "little") + block[8:])
    env = {**os.environ, "CASEFILES_BIN": BINARY}
    out = subprocess.run([str(ROOT / "Scripts" / "cluster"), "start"], capture_output=True, text=True, check=True,
                         env=env, timeout=600).stdout
    settings = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    storage_env = {**os.environ, **{k: v for k, v in settings.items() if k.startswith(("CASEFILES_BLOB_STORE", "CASEFILES_S3_"))}}

    def cluster_cli(*args):
        return subprocess.run([BINARY, *args, "--storage", settings["CASEFILES_CLUSTER_NODE1_STORAGE"],
                               "--database", settings["CASEFILES_DATABASE"]], check=True, capture_output=True,
                              text=True, env=storage_env).stdout.strip()
    try:
        token = cluster_cli("users", "create", f"bench{time.time_ns()}", "--role", "customer", "--account", "BENCH")
        case = cluster_cli("cases", "create", "--account", "BENCH", "--subject", "cluster benchmark")

        def cli_upload(url, token, case):
            started = time.monotonic()
            subprocess.run([BINARY, "upload", "--server", url, "--token", token, "--case", case, "--quiet", str(source)],
                           check=True, capture_output=True, env={**os.environ, "XDG_STATE_HOME": str(work / f"xdg{time.time_ns()}")})
            return mib * MiB / (time.monotonic() - started) / 1e6

        # 1. One stream to one node: PostgreSQL + the object store against SQLite + local disk (same binary).
        on_cluster = statistics.median(cli_upload(settings["CASEFILES_CLUSTER_NODE1"], token, case) for _ in range(RUNS))
        local = CaseFiles(work / "cluster-local")
        local.start()
        on_local = statistics.median(cli_upload(local.url, local.token, local.case) for _ in range(RUNS))
        local.stop()
        row(f"casefiles upload {mib} MiB to one node, PostgreSQL + object store", on_cluster, "MB/s")
        row(f"casefiles upload {mib} MiB to one node, SQLite + local disk", on_local, "MB/s",
            f"the cluster's stores: {on_cluster / on_local:.2f}x")
        # The object store's own rate for the same bytes: one PutObject of the file by botocore (the test venv's;
        # curl's --aws-sigv4 cannot carry tempauth's "account:user" access key), no CaseFiles in the way.
        venv_python = ROOT / ".venv" / "bin" / "python"
        if venv_python.exists():
            put = subprocess.run([str(venv_python), "-c", OBJECT_STORE_PUT, str(source)], check=True, capture_output=True,
                                 text=True, env={**os.environ, **settings}).stdout.split()
            rates = [float(r) for r in put]
            row(f"the object store alone: botocore PutObject of the same {mib} MiB", statistics.median(rates), "MB/s",
                f"the node's upload reaches {on_cluster / statistics.median(rates):.2f}x of it; runs: "
                + ", ".join(f"{r:.0f}" for r in rates))
        else:
            notes.append("no .venv (Scripts/bootstrap --with-python): the object store's own PutObject row skipped")

        # 2. 16 uploads of 64 MiB at once (one PATCH each) through nginx: to two nodes, then to one.
        with open(source, "rb") as f:
            body = f.read(64 * MiB)
        def sixteen(url):
            def one(_):
                c = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=600)
                meta = "filename " + base64.b64encode(b"bench.bin").decode()
                c.request("POST", f"/api/v1/cases/{case}/uploads", headers={
                    "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", "Upload-Length": str(len(body)),
                    "Upload-Metadata": meta, "Content-Type": "application/offset+octet-stream"}, body=body)
                r = c.getresponse(); r.read()
                assert r.status == 201, r.status
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(one, range(16)))
            return 16 * len(body) / (time.monotonic() - started) / 1e6
        two = sixteen(settings["CASEFILES_CLUSTER_URL"])
        # One node: the second one stopped; nginx sends everything to the first.
        node2 = int(settings["CASEFILES_CLUSTER_NODE2_PID"])
        os.kill(node2, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(node2, 0); time.sleep(0.1)
            except ProcessLookupError:
                break
        # nginx keeps the stopped node in rotation (max_fails=0, the template says why): every other request is
        # refused there first and passed to node 1, as when a node dies in production; one warm-up round.
        sixteen(settings["CASEFILES_CLUSTER_URL"])
        one = sixteen(settings["CASEFILES_CLUSTER_URL"])
        row("16 concurrent 64 MiB uploads through nginx, two nodes", two, "MB/s")
        row("16 concurrent 64 MiB uploads through nginx, one node", one, "MB/s", f"two nodes: {two / one:.2f}x")

        # 3. Failover: the node writing an upload is SIGKILLed; the client's next PATCH through nginx goes to the
        #    other node, which must first see the dead node's lock go. Time from the kill to that PATCH's 204.
        node1 = int(settings["CASEFILES_CLUSTER_NODE1_PID"])
        # Node 2 is down (above): restart it is not needed for this row; node 1 takes the first half.
        c = http.client.HTTPConnection("127.0.0.1", int(settings["CASEFILES_CLUSTER_NODE1"].rsplit(":", 1)[1]))
        c.request("POST", f"/api/v1/cases/{case}/uploads", headers={
            "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", "Upload-Length": str(2 * len(body)),
            "Upload-Metadata": "filename " + base64.b64encode(b"failover.bin").decode()})
        r = c.getresponse(); r.read(); location = r.getheader("Location")
        c.request("PATCH", location, headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0",
                                              "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                  body=body)
        r = c.getresponse(); r.read()
        assert r.status == 204, r.status
        # A second node to take over: start one on node 2's storage (same settings as Scripts/cluster's).
        restarted = time.monotonic()
        replacement = subprocess.Popen(
            [BINARY, "serve", "--storage", settings["CASEFILES_CLUSTER_NODE2_STORAGE"], "--port",
             settings["CASEFILES_CLUSTER_NODE2"].rsplit(":", 1)[1], "--database", settings["CASEFILES_DATABASE"],
             "--trusted-proxy", "127.0.0.1/32", "--log-level", "warning"], env=storage_env)
        wait_http(int(settings["CASEFILES_CLUSTER_NODE2"].rsplit(":", 1)[1]), "/healthz")
        row("a node started on the cluster: process start to healthy", (time.monotonic() - restarted) * 1000, "ms")
        killed = time.monotonic()
        os.kill(node1, signal.SIGKILL)
        c2 = http.client.HTTPConnection("127.0.0.1", int(settings["CASEFILES_CLUSTER_NODE2"].rsplit(":", 1)[1]))
        c2.request("PATCH", location, headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0",
                                               "Upload-Offset": str(len(body)),
                                               "Content-Type": "application/offset+octet-stream"}, body=body[:MiB])
        r = c2.getresponse(); r.read()
        assert r.status == 204, r.status
        row("SIGKILL of the writing node to the first 1 MiB PATCH accepted by the other", (time.monotonic() - killed) * 1000,
            "ms", "the other node waits until PostgreSQL has dropped the dead node's lock")
        replacement.terminate(); replacement.wait(30)
    finally:
        subprocess.run([str(ROOT / "Scripts" / "cluster"), "stop"], timeout=120)
        source.unlink(missing_ok=True)


def bench_bundles(work):
    """Issue #21: a fixed-seed .tar.gz of logs (Scripts/make-log-bundle; BENCH_BUNDLE_MIB uncompressed, 4 GiB by
    default): the index build rate against `gzip -dc`, the first byte of a deep entry against downloading the
    whole archive, and the median of 10 first-page listings."""
    mib = int(os.environ.get("BENCH_BUNDLE_MIB", "4096"))
    tgz = work / "bundle.tar.gz"
    deep = subprocess.run([str(ROOT / "Scripts" / "make-log-bundle"), str(tgz), "--mib", str(mib)], check=True,
                          capture_output=True, text=True).stdout.strip()
    size = tgz.stat().st_size
    started = time.monotonic()
    subprocess.run(f"gzip -dc {tgz} > /dev/null", shell=True, check=True)
    gunzip = size / (time.monotonic() - started) / 1e6
    casefiles = CaseFiles(work / "bundles")
    casefiles.start()
    url = casefiles.create(size)
    attachment = url.rsplit("/", 1)[1]
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-X", "PATCH", "--data-binary", f"@{tgz}",
                    *[arg for k, v in {**casefiles.headers(), "Upload-Offset": "0",
                                       "Content-Type": "application/offset+octet-stream"}.items()
                      for arg in ("-H", f"{k}: {v}")], url], check=True)
    listing = f"/api/v1/attachments/{attachment}/entries"
    started = time.monotonic()
    while True:  # the indexer polls every second: up to 1 s of this is waiting for it to look
        c = http.client.HTTPConnection("127.0.0.1", casefiles.port)
        c.request("GET", listing + "?limit=1", headers=casefiles.auth())
        state = json.loads(c.getresponse().read())["state"]
        if state != "pending":
            break
        time.sleep(0.05)
    indexed = time.monotonic() - started
    row(f"bundle index build, {mib} MiB tar.gz of logs ({size / MiB:.0f} MiB)", size / indexed / 1e6, "MB/s",
        f"gzip -dc > /dev/null: {gunzip:.0f} MB/s; state {state}")

    def first_byte(path):
        c = http.client.HTTPConnection("127.0.0.1", casefiles.port)
        begun = time.monotonic()
        c.request("GET", path, headers=casefiles.auth())
        r = c.getresponse()
        r.read(1)
        first = (time.monotonic() - begun) * 1000
        while r.read(MiB):
            pass
        return first, (time.monotonic() - begun) * 1000
    deep_first, deep_all = first_byte(listing + "/" + deep.replace("/", "%2F"))
    _, whole = first_byte(f"/api/v1/attachments/{attachment}/content")
    row("bundle: first byte of a deep 1 MiB entry", deep_first, "ms", f"whole entry {deep_all:.0f} ms")
    row("bundle: download of the whole archive instead", whole, "ms")
    times = []
    for _ in range(10):
        begun = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", casefiles.port)
        c.request("GET", listing, headers=casefiles.auth())
        c.getresponse().read()
        times.append((time.monotonic() - begun) * 1000)
    row("bundle: first page of the listing (100 entries), median of 10", statistics.median(times), "ms", "target <= 100")
    casefiles.stop()


if __name__ == "__main__":
    if "--only" in sys.argv and sys.argv[sys.argv.index("--only") + 1] == "parallel":
        # `Scripts/bench --only parallel` (BENCH_PARALLEL_SIZE=268435456 for a quicker run).
        bench_parallel(ROOT / ".bench" / "parallel")
        for note in notes:
            print("  note:", note)
    else:
        main()
