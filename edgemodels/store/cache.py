"""Content-addressed artifact cache.

An entry's directory name is a digest of everything that changes its bytes (the caller passes those
parts). Entries are completed by the one rule of edgemodels.store.entries (`locked_build`: a locked temp dir,
the entry marker last, a rename). An artifact's `manifest.json` lists every file with size
and sha256; the directory listing is checked against it and the marker holds the manifest's digest,
so neither a damaged file nor a damaged manifest is served. A hit re-hashes only files whose modification time
differs from the one the build recorded (as rsync's quick check does); `cache verify` re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import Timeout

from edgemodels.store.entries import (BUILDING, CACHE_ENV, ENTRY_MARKER, MANIFEST, ROOT_MARKER, SCHEMA, CacheError,
                                      _locked, _mkdirs, _remove, _walk_files, check_root, default_root, ensure_root,
                                      entry_marker, lock_path, locked_build)
from edgemodels.store.files import atomic_write_text, digest, sha256_file

SETTLED_NS = 1_000_000_000
"""A file's modification time is recorded in the manifest (and trusted on later hits) only when it was at least this
old once hashed: a file written again within the filesystem's timestamp tick of its recording could keep the same
mtime (git's "racy clean" problem). Small files are the ones left unrecorded, and they are cheap to hash."""


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


def _file_meta(path: Path) -> dict[str, Any]:
    """A built file's manifest record: size, sha256, and its mtime where it had settled (SETTLED_NS) once hashed."""
    before = path.stat()
    meta: dict[str, Any] = {"size": before.st_size, "sha256": sha256_file(path)}
    after = path.stat()
    if (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size) \
            and time.time_ns() - after.st_mtime_ns >= SETTLED_NS:
        meta["mtime_ns"] = after.st_mtime_ns
    return meta


@dataclass(frozen=True)
class Listed:
    """One directory in the cache as `cache ls` shows it, judged without hashing."""

    path: Path
    kind: str
    state: str  # complete | corrupt (will rebuild) | building (a build's temp dir) | unrecognised (not ours)
    size_bytes: int
    manifest: dict[str, Any] | None = None
    why: str = ""


@dataclass
class Cleared:
    removed: list[Path] = field(default_factory=list)  # entries
    leftovers: list[Path] = field(default_factory=list)  # .building.* dirs of killed builds
    busy: list[Path] = field(default_factory=list)  # locked by a build in progress: left alone
    kept: list[Path] = field(default_factory=list)  # not ours (no valid marker): never deleted


def _cpu_seconds() -> float:
    """User + system CPU of this process (all threads) and of its waited-for children."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class ArtifactCache:
    def __init__(self, root: Path | None = None):
        self.root = check_root(Path(root) if root is not None else default_root())
        # Entries this instance has hashed, with the (size, mtime) of each file then: a later hit whose files
        # are unchanged skips the re-hash (1-2 s for BERT-Large's 1.3 GB). Another process hashes again.
        self._hashed: dict[Path, tuple] = {}

    def path_for(self, key: Key) -> Path:
        return self.root / key.kind / key.dirname

    def _legacy_lock(self, digest_: str) -> Path:
        """The per-key lock builds by earlier edgemodels versions take (held too, so old and new agree)."""
        return self.root / "locks" / f"{digest_[:24]}.lock"

    def verify(self, path: Path, key: Key | None = None, *, deep: bool = True,
               rehash: bool = False) -> dict[str, Any]:
        """The manifest of a complete, intact entry; CorruptEntry otherwise (with what is wrong).

        Checks the marker, the manifest against the marker's digest (and the key), the directory's own
        listing against the manifest, sizes, and (deep) the sha256 of every file whose modification time is not the
        one the build recorded; `rehash` hashes every file. Hashing all of them on every hit cost each bench process
        ~9 s of CPU per 9 GB of cache (BERT-Large's files; 2-core Xeon, 2026-12-02), three times in a CI run.
        """
        marker = entry_marker(path)
        if marker is None:
            raise CorruptEntry(f"{path}: no valid {ENTRY_MARKER} (an interrupted or foreign build)")
        mf = path / MANIFEST
        try:
            raw = mf.read_bytes()
        except FileNotFoundError:
            raise CorruptEntry(f"{mf}: missing (removed after the build)") from None
        except OSError as exc:
            raise CorruptEntry(f"{mf}: unreadable ({exc.strerror or exc})") from exc
        if marker.get("manifest_sha256") and hashlib.sha256(raw).hexdigest() != marker["manifest_sha256"]:
            raise CorruptEntry(f"{mf}: does not match the digest in {ENTRY_MARKER} (changed after the build)")
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptEntry(f"{mf}: unreadable manifest: {exc}") from exc
        digest_ = manifest.get("key", {}).get("digest") if isinstance(manifest, dict) else None
        if not isinstance(digest_, str) or not path.name.endswith("-" + digest_[:16]):
            raise CorruptEntry(f"{mf}: its key digest does not name this directory")
        if key is not None and digest_ != key.digest:
            raise CorruptEntry(f"{mf}: built for key {digest_[:16]}, not {key.digest[:16]}")
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise CorruptEntry(f"{mf}: no 'files' table")
        on_disk = _walk_files(path)
        on_disk.pop(MANIFEST, None)
        on_disk.pop(ENTRY_MARKER, None)
        for rel in sorted(set(files) ^ set(on_disk)):
            why = "listed in the manifest but missing" if rel in files else "present but not in the manifest"
            raise CorruptEntry(f"{path / rel}: {why}")
        for rel, meta in files.items():
            if not isinstance(meta, dict) or on_disk[rel] != meta.get("size"):
                raise CorruptEntry(f"{path / rel}: size {on_disk[rel]} != {meta.get('size') if isinstance(meta, dict) else meta} in the manifest")
        if not deep:
            return manifest
        stats = {rel: (size, (path / rel).stat().st_mtime_ns) for rel, size in on_disk.items()}
        signature = (mf.stat().st_mtime_ns, tuple(sorted(stats.items())))
        if not rehash and self._hashed.get(path) == signature:
            return manifest
        for rel, meta in files.items():
            if not rehash and meta.get("mtime_ns") is not None and meta["mtime_ns"] == stats[rel][1]:
                continue  # unchanged since the build hashed it (recorded only once settled: SETTLED_NS)
            if sha256_file(path / rel) != meta.get("sha256"):
                raise CorruptEntry(f"{path / rel}: sha256 differs from the manifest")
        self._hashed[path] = signature
        return manifest

    def get(self, key: Key) -> Entry | None:
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            return Entry(path, self.verify(path, key), cache_hit=True)
        except CorruptEntry:
            return None

    def _usable(self, path: Path, key: Key) -> bool:
        try:
            self.verify(path, key)
            return True
        except CorruptEntry:
            return False

    def get_or_build(self, key: Key, build: Callable[[Path], dict[str, Any]]) -> Entry:
        """`build(tmpdir)` writes the files and returns manifest fields; it runs at most once per key."""
        hit = self.get(key)
        if hit is not None:
            return hit
        built: dict[str, Any] = {}

        def build_with_manifest(tmp: Path) -> None:
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            fields = dict(build(tmp))
            files = {str(p.relative_to(tmp)): _file_meta(p)
                     for p in sorted(tmp.rglob("*")) if p.is_file() and not p.is_symlink()}
            built.update({
                **fields,
                "key": {"kind": key.kind, "digest": key.digest, "parts": key.parts},
                "build_seconds": round(time.perf_counter() - start, 2),
                # CPU of this process and its finished children: what a build costs on a shared machine, where
                # its wall time mostly says what else ran (issue 13's "where the time goes")
                "build_cpu_seconds": round(_cpu_seconds() - cpu_start, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files,
            })
            atomic_write_text(tmp / MANIFEST, json.dumps(built, indent=2, default=str))

        ensure_root(self.root)
        _mkdirs(self.root / "locks", self.root)
        with _locked(self._legacy_lock(key.digest), self.root):
            path, fresh = locked_build(self.root, key.kind, key.dirname, build_with_manifest,
                                       complete=lambda p: self._usable(p, key))
        if fresh:
            return Entry(path, built, cache_hit=False)
        hit = self.get(key)  # built by another worker while we waited (hashes memoised: cheap)
        if hit is None:
            raise CorruptEntry(f"{path}: changed while being read; run again")
        return hit

    def listing(self) -> list[Listed]:
        """Every directory in the cache's kind folders, judged without hashing (fast on a 12 GB cache)."""
        try:
            return self._listing()
        except OSError as exc:  # an unreadable folder (another user's, /proc): a one-line error, not a traceback
            raise CacheError(f"{exc.filename or self.root}: cannot read it ({exc.strerror or exc}); is --cache / "
                             f"${CACHE_ENV} the edgemodels cache you meant?") from None

    def _listing(self) -> list[Listed]:
        out: list[Listed] = []
        if not self.root.is_dir():
            return out
        for kind in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "locks"
                           and not p.name.startswith(".")):
            for d in sorted(p for p in kind.iterdir() if p.is_dir() and not p.is_symlink()):
                if d.name.startswith("."):
                    if BUILDING in d.name:
                        out.append(Listed(d, kind.name, "building", sum(_walk_files(d).values()),
                                          why="a build's temp dir: in progress, or left by a killed build"))
                    continue
                marker = entry_marker(d)
                if marker is None:
                    out.append(Listed(d, kind.name, "unrecognised", 0, why=f"no valid {ENTRY_MARKER}: not ours"))
                    continue
                manifest = None
                # An entry built with a manifest (its marker holds the digest) must still have it: a deleted
                # manifest.json is damage, not an entry of the kinds that have none (ARM user-lands, weights).
                if marker.get("manifest_sha256") or (d / MANIFEST).exists() or marker.get("legacy") == MANIFEST:
                    try:
                        manifest = self.verify(d, deep=False)
                    except CorruptEntry as exc:
                        out.append(Listed(d, kind.name, "corrupt", int(marker.get("size_bytes") or 0), why=str(exc)))
                        continue
                size = marker.get("size_bytes")
                if size is None:
                    size = (sum(f["size"] for f in manifest["files"].values()) if manifest
                            else sum(_walk_files(d).values()))
                out.append(Listed(d, kind.name, "complete", int(size), manifest))
        return out

    def entries(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """Every entry directory with its manifest (None = corrupt or not ours); temp dirs left out."""
        return [(e.path, e.manifest if e.state == "complete" else None)
                for e in self.listing() if e.state != "building"]

    def is_cache(self) -> bool:
        """Whether the root is an edgemodels cache: it has ROOT_MARKER, or (older caches) a valid entry."""
        if (self.root / ROOT_MARKER).is_file():
            return True
        return any(e.state in ("complete", "corrupt") for e in self.listing())

    def require_cache(self, action: str) -> None:
        """CacheError unless the root is an edgemodels cache: `clear` must not delete, `verify` must not bless,
        a folder that is something else."""
        if not self.is_cache():
            raise CacheError(
                f"{self.root}: not an edgemodels cache (no {ROOT_MARKER} and no cache entries in it); refusing "
                f"to {action} it: check --cache / ${CACHE_ENV}")

    def clear(self) -> Cleared:
        """Remove every entry that carries our marker, and killed builds' leftovers, each under its lock.

        A directory that is not an edgemodels cache is refused; builds in progress and anything without a
        valid marker are left alone (and reported).
        """
        result = Cleared()
        if not self.root.exists():
            return result
        self.require_cache("clear")
        for e in self.listing():
            if e.state == "unrecognised":
                result.kept.append(e.path)
                continue
            name = e.path.name
            if e.state == "building":
                name = name[1:name.index(BUILDING)]
            try:
                with _locked(lock_path(e.path.parent / name), self.root, timeout=0):
                    _remove(e.path, self.root)
            except Timeout:
                result.busy.append(e.path)
                continue
            (result.leftovers if e.state == "building" else result.removed).append(e.path)
        return result

    def memo_json(self, key: Key, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """A deterministic result (accuracy of an artifact on a data set, an emulated run) computed once.

        Only for results that depend on nothing but the key's parts: never for timings or memory.
        """
        def build(tmp: Path) -> dict[str, Any]:
            atomic_write_text(tmp / "result.json", json.dumps(compute(), default=str))
            return {"result_of": key.name}

        entry = self.get_or_build(key, build)
        return json.loads(entry.file("result.json").read_text(encoding="utf-8")), entry.cache_hit
