"""edgemodels.cache: keys, hits, misses, corruption, interrupted and concurrent builds, listing, clearing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from edgemodels import cache
from edgemodels.cache import ArtifactCache, Entry, Key


def _builder(calls: list, payload: bytes = b"payload", **fields):
    """A build function that records each call and writes one file plus a nested one."""

    def build(tmp: Path) -> dict:
        calls.append(tmp)
        (tmp / "blob.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "note.txt").write_text("nested")
        return {"answer": 42, **fields}

    return build


KEY = Key("test", "thing", {"a": 1, "b": "x"})


# ---------------------------------------------------------------- keys


def test_key_digest_ignores_part_order_and_includes_kind():
    same = Key("test", "thing", {"b": "x", "a": 1})
    assert same.digest == KEY.digest
    assert Key("other", "thing", {"a": 1, "b": "x"}).digest != KEY.digest
    assert KEY.dirname.startswith("thing-") and KEY.dirname.endswith(KEY.digest[:16])


@pytest.mark.parametrize("parts", [{"a": 2, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "x", "c": None},
                                   {"a": 1}])
def test_different_key_parts_give_different_entries(tmp_path, parts):
    store = ArtifactCache(tmp_path)
    calls: list = []
    first = store.get_or_build(KEY, _builder(calls))
    other = store.get_or_build(Key("test", "thing", parts), _builder(calls))
    assert other.path != first.path
    assert len(calls) == 2 and not other.cache_hit


def test_default_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.default_root() == tmp_path / "c"
    assert ArtifactCache().root == tmp_path / "c"


# ---------------------------------------------------------------- hit / miss


def test_miss_builds_then_hit_serves_without_building(tmp_path):
    store = ArtifactCache(tmp_path)
    calls: list = []
    assert store.get(KEY) is None
    built = store.get_or_build(KEY, _builder(calls))
    assert isinstance(built, Entry) and built.cache_hit is False
    assert built.path == store.path_for(KEY) == tmp_path / "test" / KEY.dirname
    assert built.file("blob.bin").read_bytes() == b"payload"
    hit = store.get_or_build(KEY, _builder(calls))
    assert hit.cache_hit is True and hit.path == built.path and len(calls) == 1
    assert hit.manifest == built.manifest


def test_manifest_lists_every_file_with_size_and_sha(tmp_path):
    e = ArtifactCache(tmp_path).get_or_build(KEY, _builder([]))
    mf = json.loads((e.path / cache.MANIFEST).read_text())
    assert mf == e.manifest
    assert mf["answer"] == 42
    assert set(mf["files"]) == {"blob.bin", str(Path("sub") / "note.txt")}
    assert mf["files"]["blob.bin"] == {"size": 7, "sha256": cache.sha256_file(e.file("blob.bin"))}
    assert mf["key"] == {"kind": "test", "digest": KEY.digest, "parts": {"a": 1, "b": "x"}}
    # the build happened in a private temp dir that is gone now
    assert not [p for p in e.path.parent.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- corruption


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest-garbage", "manifest-missing"])
def test_corrupted_committed_entry_is_detected_and_rebuilt(tmp_path, damage):
    store = ArtifactCache(tmp_path)
    calls: list = []
    e = store.get_or_build(KEY, _builder(calls))
    blob = e.file("blob.bin")
    if damage == "truncate":
        blob.write_bytes(b"pay")
    elif damage == "flip":  # same size, different content: only the sha catches it
        blob.write_bytes(b"PAYLOAD")
    elif damage == "delete":
        blob.unlink()
    elif damage == "manifest-garbage":
        (e.path / cache.MANIFEST).write_text("{not json")
    else:
        (e.path / cache.MANIFEST).unlink()
    with pytest.raises(cache.CorruptEntry, match=str(e.path)):
        store.verify(e.path)
    assert store.get(KEY) is None
    again = store.get_or_build(KEY, _builder(calls))
    assert len(calls) == 2 and again.cache_hit is False and again.path == e.path
    assert again.file("blob.bin").read_bytes() == b"payload"
    assert store.verify(again.path)["answer"] == 42


# ---------------------------------------------------------------- interrupted builds


def test_builder_that_raises_leaves_no_entry_and_no_temp_dir(tmp_path):
    store = ArtifactCache(tmp_path)

    def broken(tmp: Path) -> dict:
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.get_or_build(KEY, broken)
    assert store.get(KEY) is None
    assert list((tmp_path / "test").iterdir()) == []  # temp dir removed
    calls: list = []
    assert store.get_or_build(KEY, _builder(calls)).cache_hit is False and len(calls) == 1


_WORKER = r"""
import json, os, sys, time
from pathlib import Path
from edgemodels.cache import ArtifactCache, Key

root, counter, ready, me, peers, mode = sys.argv[1:7]
Path(ready, me).touch()
deadline = time.time() + 30
while len(os.listdir(ready)) < int(peers) and time.time() < deadline:
    time.sleep(0.01)

def build(tmp):
    with open(counter, "a") as fh:
        fh.write(me + "\n")
    (tmp / "blob.bin").write_bytes(b"x" * 1000)
    time.sleep(1.0)
    if mode == "die":
        os._exit(3)  # killed mid-build: no cleanup, no manifest
    return {"builder": me}

e = ArtifactCache(Path(root)).get_or_build(Key("test", "shared", {"v": 1}), build)
print(json.dumps({"path": str(e.path), "hit": e.cache_hit, "builder": e.manifest["builder"]}))
"""


def _spawn(tmp_path: Path, me: str, peers: int, mode: str = "ok") -> subprocess.Popen:
    ready = tmp_path / "ready"
    ready.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(tmp_path / "cache"), str(tmp_path / "counter.txt"), str(ready),
         me, str(peers), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_two_concurrent_processes_build_once(tmp_path):
    procs = [_spawn(tmp_path, name, 2) for name in ("p1", "p2")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert (tmp_path / "counter.txt").read_text().split() in (["p1"], ["p2"])  # built exactly once
    assert results[0]["path"] == results[1]["path"]
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["builder"] == results[1]["builder"]


def test_process_killed_mid_build_is_never_served_and_next_call_rebuilds(tmp_path):
    p = _spawn(tmp_path, "dies", 1, mode="die")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    store = ArtifactCache(tmp_path / "cache")
    key = Key("test", "shared", {"v": 1})
    assert store.get(key) is None
    assert not store.path_for(key).exists()
    leftovers = [d for d in (tmp_path / "cache" / "test").iterdir()]
    assert leftovers and all(d.name.startswith(".") for d in leftovers)  # only the abandoned temp dir
    assert store.entries() == []  # temp dirs are not listed as entries
    calls: list = []
    e = store.get_or_build(key, _builder(calls))  # the dead process's lock was released by the OS
    assert len(calls) == 1 and e.cache_hit is False and e.file("blob.bin").read_bytes() == b"payload"
    assert [d.name for d in (tmp_path / "cache" / "test").iterdir()] == [e.path.name]  # leftovers swept


# ---------------------------------------------------------------- entries / clear


def test_entries_lists_complete_and_incomplete(tmp_path):
    store = ArtifactCache(tmp_path)
    assert ArtifactCache(tmp_path / "absent").entries() == []
    a = store.get_or_build(KEY, _builder([]))
    b = store.get_or_build(Key("tflite", "other", {"z": 1}), _builder([]))
    stray = tmp_path / "test" / "stray-0000"  # a committed-looking dir without manifest
    stray.mkdir()
    (tmp_path / "test" / ".x.building.abc").mkdir()  # an in-progress build: not an entry
    listed = dict(store.entries())
    assert set(listed) == {a.path, b.path, stray}
    assert listed[a.path]["answer"] == 42 and listed[stray] is None


def test_clear_removes_entries_and_keeps_working(tmp_path):
    store = ArtifactCache(tmp_path)
    assert ArtifactCache(tmp_path / "absent").clear() == 0
    store.get_or_build(KEY, _builder([]))
    store.get_or_build(Key("tflite", "other", {"z": 1}), _builder([]))
    assert store.clear() == 2
    assert store.entries() == [] and store.get(KEY) is None
    calls: list = []
    assert store.get_or_build(KEY, _builder(calls)).cache_hit is False and len(calls) == 1


def test_clear_during_a_build_does_not_break_the_build(tmp_path):
    store = ArtifactCache(tmp_path)
    started, proceed = threading.Event(), threading.Event()
    errors: list = []

    def slow(tmp: Path) -> dict:
        started.set()
        proceed.wait(10)
        (tmp / "blob.bin").write_bytes(b"late")
        return {}

    def build():
        try:
            store.get_or_build(KEY, slow)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=build)
    t.start()
    assert started.wait(10)
    cleared: list[int] = []
    c = threading.Thread(target=lambda: cleared.append(store.clear()))  # skips the uncommitted temp dir
    c.start()
    time.sleep(0.3)
    proceed.set()
    t.join(10)
    c.join(10)
    assert not t.is_alive() and not c.is_alive()
    assert errors == []
    hit = store.get(KEY)
    assert len(cleared) == 1 and (hit is not None) == (cleared[0] == 0)  # cleared before or after the commit
    if hit is not None:
        assert hit.file("blob.bin").read_bytes() == b"late"


def test_memo_json_computes_once(tmp_path):
    store = ArtifactCache(tmp_path)
    calls: list = []

    def compute() -> dict:
        calls.append(1)
        return {"accuracy": 0.5, "path": tmp_path}  # non-JSON types are stored as strings

    first = store.memo_json(KEY, compute)
    again = store.memo_json(KEY, compute)
    assert first == ({"accuracy": 0.5, "path": str(tmp_path)}, False)
    assert again == (first[0], True) and len(calls) == 1


def test_atomic_write_text_leaves_no_temp_files(tmp_path):
    target = tmp_path / "d" / "f.json"
    cache.atomic_write_text(target, "one")
    cache.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    with pytest.raises((TypeError, AttributeError)):
        cache.atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "two"


def test_atomic_write_failing_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "d" / "f.json"
    cache.atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "fsync", disk_full)  # after the temp file holds the new bytes
    with pytest.raises(OSError, match="No space"):
        cache.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_hits_hash_once_per_instance_and_still_catch_a_rewrite(tmp_path, monkeypatch):
    """Why: re-hashing BERT-Large's 1.3 GB on every hit cost seconds per test; a rewrite must still be caught."""
    store = ArtifactCache(tmp_path)
    e = store.get_or_build(KEY, _builder([]))
    hashed: list[Path] = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert store.get(KEY) is not None
    first = len(hashed)
    assert first == len(e.manifest["files"])
    assert store.get(KEY) is not None
    assert len(hashed) == first, "the second hit re-hashed unchanged files"
    blob = e.file("blob.bin")
    stat = blob.stat()
    blob.write_bytes(b"PAYLOAD")  # same size, new content
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert store.get(KEY) is None
    assert ArtifactCache(tmp_path).get(KEY) is None  # a fresh instance (another process) hashes too
