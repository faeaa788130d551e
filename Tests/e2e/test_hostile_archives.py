"""Hostile archives are ordinary input (issue #21), table by table: each archive is made here with tarfile,
zipfile and gzip, uploaded to the real server, and its index and entries checked exactly. Nothing in an archive
is ever extracted, followed or expanded: afterwards no file exists outside the storage root."""
import gzip
import hashlib
import io
import lzma
import random
import tarfile
import zipfile

import pytest

from bundle_helpers import all_entries, entry, upload_archive, wait_indexed
from test_uploads import MiB

ESCAPE = "cf-bundle-escape-7f3a"


def tar_bytes(members, compress=False) -> bytes:
    """members: (name, data or None for a directory, extra TarInfo fields)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, fields in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1751846400
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_paths_that_climb_or_are_absolute_are_listed_as_they_are_and_flagged(server, tmp_path):
    archive = tar_bytes([(f"../../tmp/{ESCAPE}", b"climb", {}), (f"/tmp/{ESCAPE}-abs", b"absolute", {}),
                         ("ok/fine.log", b"fine", {})], compress=True)
    attachment = upload_archive(server, archive, "paths.tar.gz")
    assert wait_indexed(server, attachment)["state"] == "ready"
    listed = [(e["path"], e["flags"], e.get("sha256")) for e in all_entries(server, attachment)]
    assert listed == [(f"../../tmp/{ESCAPE}", ["parent_path"], sha(b"climb")),
                      (f"/tmp/{ESCAPE}-abs", ["absolute_path"], sha(b"absolute")),
                      ("ok/fine.log", [], sha(b"fine"))]
    climbing = entry(server, attachment, f"../../tmp/{ESCAPE}")
    assert (climbing.status_code, climbing.content) == (200, b"climb")
    assert climbing.headers["Content-Disposition"].startswith(f'attachment; filename="{ESCAPE}"')
    assert not list(tmp_path.parent.rglob(f"{ESCAPE}*")) and not list(__import__("pathlib").Path("/tmp").glob(f"{ESCAPE}*"))


def test_symlinks_are_listed_with_their_target_and_never_followed(server):
    archive = tar_bytes([("etc-passwd", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
                         ("up", None, {"type": tarfile.SYMTYPE, "linkname": "../../.."}),
                         ("hard", None, {"type": tarfile.LNKTYPE, "linkname": "etc-passwd"})])
    attachment = upload_archive(server, archive, "links.tar")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["format"]) == ("ready", "tar")
    assert [(e["path"], e["type"], e["linkTarget"], e["readable"]) for e in all_entries(server, attachment)] == [
        ("etc-passwd", "symlink", "/etc/passwd", False), ("up", "symlink", "../../..", False),
        ("hard", "hardlink", "etc-passwd", False)]
    refused = entry(server, attachment, "etc-passwd")
    assert refused.status_code == 409
    assert refused.json()["error"] == "entry_not_readable"
    assert "/etc/passwd" in refused.json()["message"] and b"root:" not in refused.content


def test_duplicate_names_answer_409_with_their_numbers_and_n_picks_one(server):
    archive = tar_bytes([("a.txt", b"first", {}), ("b.txt", b"other", {}), ("a.txt", b"second", {})], compress=True)
    attachment = upload_archive(server, archive, "dups.tgz")
    wait_indexed(server, attachment)
    assert [(e["number"], e["path"], e["flags"]) for e in all_entries(server, attachment)] == [
        (1, "a.txt", ["duplicate_path"]), (2, "b.txt", []), (3, "a.txt", ["duplicate_path"])]
    ambiguous = entry(server, attachment, "a.txt")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["error"] == "ambiguous_entry"
    assert "numbers 1, 3" in ambiguous.json()["message"]
    assert entry(server, attachment, "a.txt", n=3).content == b"second"
    assert entry(server, attachment, "a.txt", n=1).content == b"first"
    assert entry(server, attachment, "a.txt", n=2).status_code == 404


def test_a_flood_of_empty_entries_stops_at_the_cap_and_is_marked_truncated(server):
    server.stop()
    server.start("--bundle-max-entries", "1000")
    archive = tar_bytes([(f"empty/{n:05d}", b"", {}) for n in range(3000)], compress=True)
    attachment = upload_archive(server, archive, "flood.tar.gz")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["entryCount"], page["truncated"]) == ("ready", 1000, True)
    assert page["reason"] == "more than 1000 entries: the index stops at its cap"
    listed = all_entries(server, attachment)
    assert [e["path"] for e in listed] == [f"empty/{n:05d}" for n in range(1000)]
    assert {e.get("sha256") for e in listed} == {sha(b"")}


def test_a_nested_archive_is_listed_not_expanded(server):
    inner = tar_bytes([("inner.log", b"x" * 5000, {})], compress=True)
    attachment = upload_archive(server, tar_bytes([("nested/inner.tar.gz", inner, {})]), "outer.tar")
    page = wait_indexed(server, attachment)
    assert page["entryCount"] == 1
    assert [(e["path"], e["size"], e.get("sha256")) for e in all_entries(server, attachment)] == [
        ("nested/inner.tar.gz", len(inner), sha(inner))]
    assert entry(server, attachment, "nested/inner.tar.gz").content == inner


def test_a_zip_bomb_entry_is_reported_and_never_inflated(server):
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.bin", b"\0" * (256 * MiB))
        archive.writestr("note.txt", b"fine")
    attachment = upload_archive(server, raw.getvalue(), "bomb.zip")
    assert wait_indexed(server, attachment)["truncated"] is False
    bomb, note = all_entries(server, attachment)
    assert (bomb["path"], bomb["size"], bomb.get("sha256"), bomb["readable"]) == ("bomb.bin", 256 * MiB, None, False)
    assert bomb["problem"].startswith("declared to expand more than 200:1")
    assert (note["path"], note.get("sha256")) == ("note.txt", sha(b"fine"))
    refused = entry(server, attachment, "bomb.bin")
    assert (refused.status_code, refused.json()["error"]) == (409, "entry_not_readable")


def test_a_gzip_bomb_stops_at_the_expansion_bound(server):
    bomb = gzip.compress(b"\0" * (256 * MiB), compresslevel=9, mtime=0)
    attachment = upload_archive(server, bomb, "zeros.bin.gz")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["format"], page["truncated"]) == ("ready", "gzip", True)
    assert page["reason"].startswith("the gzip data expands more than 200:1")
    (only,) = page["entries"]
    assert (only["path"], only.get("sha256"), only["readable"]) == ("zeros.bin", None, False)
    assert only["size"] < 256 * MiB and only["size"] <= len(bomb) * 200 + MiB + 256 * 1024


def test_a_truncated_tar_gz_keeps_what_was_readable(server):
    rng = random.Random(21)
    first, second = rng.randbytes(64 * 1024), rng.randbytes(MiB)  # random: no bomb-like ratio
    whole = tar_bytes([("first.bin", first, {}), ("second.log", second, {})], compress=True)
    cut = whole[: len(whole) * 3 // 5]
    attachment = upload_archive(server, cut, "cut.tar.gz")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["truncated"]) == ("ready", True)
    assert page["reason"].startswith("the gzip data ends early (truncated)")
    listed = all_entries(server, attachment)
    assert listed[0]["path"] == "first.bin" and listed[0].get("sha256") == sha(first) and listed[0]["readable"]
    assert entry(server, attachment, "first.bin").content == first
    if len(listed) > 1:
        assert listed[1].get("sha256") is None and not listed[1]["readable"]


def test_a_zip_cut_before_its_central_directory_lists_what_its_local_headers_reach(server):
    rng = random.Random(22)
    first, second = rng.randbytes(10_000), rng.randbytes(MiB)
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.log", first)
        archive.writestr("b.bin", second)
        archive.writestr("c.log", b"never reached")
    cut = raw.getvalue()[: len(raw.getvalue()) * 3 // 5]
    attachment = upload_archive(server, cut, "cut.zip")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["format"], page["truncated"]) == ("ready", "zip", True)
    assert page["reason"] == "the zip ends inside entry 2 (truncated)"
    a, b = all_entries(server, attachment)
    assert (a["path"], a.get("sha256"), a["readable"]) == ("a.log", sha(first), True)
    assert (b["path"], b.get("sha256"), b["readable"], b["problem"]) == (
        "b.bin", None, False, "the archive ends inside this entry (truncated)")
    assert entry(server, attachment, "a.log").content == first


def test_a_corrupt_tar_header_stops_the_index_there(server):
    good = tar_bytes([("one.log", b"1" * 700, {}), ("two.log", b"2" * 10, {})])
    damaged = bytearray(good)
    # The second member's header follows one.log's header (512) and its data padded to 512 (1024).
    second = 512 + 1024
    damaged[second:second + 100] = b"\xff" * 100
    attachment = upload_archive(server, bytes(damaged), "damaged.tar")
    page = wait_indexed(server, attachment)
    assert (page["state"], page["truncated"], page["stoppedAt"]) == ("ready", True, second)
    assert page["reason"] == f"not a tar header at offset {second} (bad checksum): the archive is corrupt from here"
    assert [(e["path"], e.get("sha256")) for e in all_entries(server, attachment)] == [("one.log", sha(b"1" * 700))]


@pytest.mark.parametrize("name,data,state,reason", [
    ("logs.tar.xz", lzma.compress(b"\0" * 10240), "unreadable",
     "xz compression is not indexed; only zip, tar, tar.gz and gzip are"),
    ("notes.txt", b"just text, not an archive\n" * 100, "not_an_archive", None),
])
def test_what_is_not_indexed_says_so(server, name, data, state, reason):
    attachment = upload_archive(server, data, name)
    page = wait_indexed(server, attachment)
    assert (page["state"], page.get("reason"), page["entries"]) == (state, reason, [])
    refused = entry(server, attachment, "anything")
    assert refused.status_code == 409
    assert refused.json()["error"] == ("archive_unreadable" if state == "unreadable" else "not_an_archive")
