import base64
import collections
import hashlib

# What the suite proved, added up across tests and printed at the end of the run (conftest.py).
SUMMARY: collections.Counter = collections.Counter()

TUS = {"Tus-Resumable": "1.0.0"}


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", **TUS}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(filename: str, sha256: str | None = None) -> str:
    pairs = [f"filename {b64(filename)}"]
    if sha256:
        pairs.append(f"sha256 {b64(sha256)}")
    return ",".join(pairs)


def sha256_header(chunk: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode()


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-enough test data."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += counter.to_bytes(8, "little") + block[8:]
        counter += 1
    return bytes(out[:size])
