"""Content-addressed artifact cache.

An entry's directory name is a digest of everything that changes its bytes (the caller passes those
parts). An entry is built in a private temp directory and renamed into place only after its
`manifest.json` — which lists every file with size and sha256 — is written, under a per-key file lock,
so parallel pytest workers build each artifact once and an interrupted build is never served. A
committed entry whose files no longer match the manifest is treated as corrupt and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock

CACHE_ENV = "EDGEMODELS_CACHE"
MANIFEST = "manifest.json"
SCHEMA = 1


def default_root() -> Path:
    """$EDGEMODELS_CACHE, else the user cache dir (e.g. ~/.cache/edgemodels)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("edgemodels")


def digest(parts: Mapping[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports and baselines are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class Key:
    kind: str  # e.g. "trained", "tflite"
    name: str  # readable prefix, e.g. "minilm-l6-drq-128"
    parts: Mapping[str, Any]

    @property
    def digest(self) -> str:
        return digest({"kind": self.kind, "schema": SCHEMA, **self.parts})

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.digest[:16]}"


@dataclass(frozen=True)
class Entry:
    path: Path
    manifest: dict[str, Any]
    cache_hit: bool

    def file(self, name: str) -> Path:
        return self.path / name


class CorruptEntry(RuntimeError):
    pass


class ArtifactCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        # Entries this instance has hashed, with the (size, mtime) of each file then: a later hit whose files
        # are unchanged skips the re-hash (1-2 s for BERT-Large's 1.3 GB). Another process hashes again.
        self._hashed: dict[Path, tuple] = {}

    def path_for(self, key: Key) -> Path:
        return self.root / key.kind / key.dirname

    def _lock(self, key: Key) -> FileLock:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{key.digest[:24]}.lock"))

    def verify(self, path: Path) -> dict[str, Any]:
        """The manifest of a complete, intact entry; CorruptEntry otherwise (with what is wrong)."""
        mf = path / MANIFEST
        if not mf.is_file():
            raise CorruptEntry(f"{path}: no {MANIFEST} (an interrupted build)")
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptEntry(f"{mf}: unreadable manifest: {exc}") from exc
        files = manifest.get("files", {})
        stats = {}
        for rel, meta in files.items():
            f = path / rel
            if not f.is_file():
                raise CorruptEntry(f"{f}: listed in the manifest but missing")
            st = f.stat()
            if st.st_size != meta["size"]:
                raise CorruptEntry(f"{f}: size {st.st_size} != {meta['size']} in the manifest")
            stats[rel] = (st.st_size, st.st_mtime_ns)
        signature = (mf.stat().st_mtime_ns, tuple(sorted(stats.items())))
        if self._hashed.get(path) == signature:
            return manifest
        for rel, meta in files.items():
            if sha256_file(path / rel) != meta["sha256"]:
                raise CorruptEntry(f"{path / rel}: sha256 differs from the manifest")
        self._hashed[path] = signature
        return manifest

    def get(self, key: Key) -> Entry | None:
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            return Entry(path, self.verify(path), cache_hit=True)
        except CorruptEntry:
            return None

    def get_or_build(self, key: Key, build: Callable[[Path], dict[str, Any]]) -> Entry:
        """`build(tmpdir)` writes the files and returns manifest fields; it runs at most once per key."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock(key):
            hit = self.get(key)  # another worker may have built it while we waited
            if hit is not None:
                return hit
            final = self.path_for(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            for stale in final.parent.glob(f".{final.name}.building.*"):  # a killed build's leftovers;
                shutil.rmtree(stale, ignore_errors=True)  # we hold the key's lock, so nobody is using them
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building."))
            try:
                start = time.perf_counter()
                fields = dict(build(tmp))
                files = {
                    str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                    for p in sorted(tmp.rglob("*")) if p.is_file()
                }
                manifest = {
                    **fields,
                    "key": {"kind": key.kind, "digest": key.digest, "parts": key.parts},
                    "build_seconds": round(time.perf_counter() - start, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": files,
                }
                atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, default=str))
                if final.exists():  # a corrupt or interrupted entry: replace it
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return Entry(final, manifest, cache_hit=False)

    def entries(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """Every committed entry with its manifest (None = corrupt: it will be rebuilt)."""
        out = []
        if not self.root.exists():
            return out
        for kind in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "locks"):
            for d in sorted(p for p in kind.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    out.append((d, self.verify(d)))
                except CorruptEntry:
                    out.append((d, None))
        return out

    def clear(self) -> int:
        """Remove every committed entry, each under its build lock (builds in progress are left alone)."""
        n = 0
        for path, manifest in self.entries():
            digest_ = (manifest or {}).get("key", {}).get("digest")
            lock = FileLock(str(self.root / "locks" / f"{digest_[:24]}.lock")) if digest_ else None
            if lock is not None:
                with lock:
                    shutil.rmtree(path, ignore_errors=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            n += 1
        return n

    def memo_json(self, key: Key, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """A deterministic result (accuracy of an artifact on a data set, an emulated run) computed once.

        Only for results that depend on nothing but the key's parts: never for timings or memory.
        """
        def build(tmp: Path) -> dict[str, Any]:
            atomic_write_text(tmp / "result.json", json.dumps(compute(), default=str))
            return {"result_of": key.name}

        entry = self.get_or_build(key, build)
        return json.loads(entry.file("result.json").read_text(encoding="utf-8")), entry.cache_hit
