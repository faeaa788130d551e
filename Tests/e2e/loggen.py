"""A support log of a given size from a fixed seed: the same bytes on every run and machine (Python's
Mersenne Twister is specified), shaped like the logs support cases carry (a dialer/telephony service):
timestamps, levels, threads, components, call ids, SIP-ish lines, the odd stack trace. It compresses about
as real logs do (`gzip -1`: ~7-9x), so compressed-upload tests and the bench measure something real.

    python3 Tests/e2e/loggen.py OUT_FILE SIZE_BYTES [SEED]
"""
import random
import sys
from datetime import datetime, timedelta

LEVELS = ["INFO"] * 70 + ["DEBUG"] * 20 + ["WARN"] * 7 + ["ERROR"] * 3
COMPONENTS = ["dialer.Campaign", "dialer.Pacing", "sip.Transaction", "sip.Registrar", "media.RtpSession",
              "db.ConnectionPool", "api.RestHandler", "agent.StateMachine", "queue.Router", "cdr.Writer"]
AGENTS = [f"agent{n:04d}" for n in range(1, 240)]
CAMPAIGNS = ["RENEWALS-Q3", "COLLECTIONS-EU", "WINBACK", "SURVEY-NPS", "OUTBOUND-SALES-2"]
STATES = ["READY", "TALKING", "WRAPUP", "PAUSED", "LOGGED_OUT"]
CAUSES = ["NORMAL_CLEARING", "USER_BUSY", "NO_ANSWER", "CALL_REJECTED", "RECOVERY_ON_TIMER_EXPIRE"]


def lines(rng: random.Random):
    now = datetime(2024, 3, 11, 2, 0, 0)
    call = 7_340_000
    while True:
        now += timedelta(microseconds=rng.randint(50, 40_000))
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}"
        level = rng.choice(LEVELS)
        thread = f"pool-{rng.randint(1, 4)}-thread-{rng.randint(1, 32)}"
        component = rng.choice(COMPONENTS)
        kind = rng.random()
        if kind < 0.35:
            call += 1
            number = "+49" + "".join(rng.choice("0123456789") for _ in range(10))
            text = (f"call {call} campaign={rng.choice(CAMPAIGNS)} to={number} agent={rng.choice(AGENTS)} "
                    f"state={rng.choice(STATES)} ringMs={rng.randint(0, 30000)}")
        elif kind < 0.55:
            text = (f"SIP/2.0 {rng.choice(['100 Trying', '180 Ringing', '200 OK', '486 Busy Here', '487 Request Terminated'])}"
                    f" Call-ID: {rng.getrandbits(64):016x}@10.20.{rng.randint(0, 255)}.{rng.randint(1, 254)} "
                    f"CSeq: {rng.randint(1, 9)} INVITE cause={rng.choice(CAUSES)}")
        elif kind < 0.70:
            text = (f"pacing ratio={rng.uniform(1.0, 3.5):.2f} abandon={rng.uniform(0, 5):.2f}% "
                    f"available={rng.randint(0, 120)} lines={rng.randint(0, 400)}")
        elif kind < 0.82:
            text = (f"pool active={rng.randint(0, 50)} idle={rng.randint(0, 50)} waiting={rng.randint(0, 9)} "
                    f"query took {rng.randint(1, 2500)} ms: SELECT * FROM contact WHERE campaign_id = ? AND status = ?")
        elif kind < 0.97:
            text = (f"GET /api/v2/agents/{rng.choice(AGENTS)}/status 200 {rng.randint(1, 900)}ms "
                    f"bytes={rng.randint(100, 90000)} client=10.1.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        else:
            level = "ERROR"
            text = ("unexpected failure in call handling\n"
                    "java.lang.IllegalStateException: channel closed while bridging\n"
                    "\tat com.vendor.media.Bridge.connect(Bridge.java:412)\n"
                    "\tat com.vendor.dialer.CallFlow.answer(CallFlow.java:198)\n"
                    "\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)")
        yield f"{stamp} {level:<5} [{thread}] {component} - {text}\n"


def generate(path: str, size: int, seed: int = 20) -> None:
    rng = random.Random(seed)
    written = 0
    with open(path, "wb") as out:
        batch = []
        for line in lines(rng):
            data = line.encode()
            if written + len(data) >= size:
                batch.append(data[: size - written])
                written = size
                break
            batch.append(data)
            written += len(data)
            if len(batch) >= 4096:
                out.write(b"".join(batch))
                batch = []
        out.write(b"".join(batch))


if __name__ == "__main__":
    generate(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20)
