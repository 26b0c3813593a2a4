"""Content-addressed artifact cache.

An entry's directory name is a digest of everything that changes its bytes (the caller passes those
parts). Every kind of entry (artifacts, memoised results, the ARM user-lands of emulation.py, the
unpacked weights of models.py) follows ONE completion rule, `locked_build`: build in a private
``.<name>.building.*`` directory under the key's file lock, write the entry marker last, rename into
place. So parallel pytest workers build each entry once, an interrupted build is never served, and
`cache clear` can tell what is ours: only directories with a valid entry marker (and our own
``.building.*`` leftovers) are ever deleted. An artifact's `manifest.json` lists every file with size
and sha256; the directory listing is checked against it and the marker holds the manifest's digest,
so neither a damaged file nor a damaged manifest is served. A hit re-hashes only files whose modification time
differs from the one the build recorded (as rsync's quick check does); `cache verify` re-hashes everything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from filelock import FileLock, Timeout

from edgemodels.errors import EdgeModelsError

CACHE_ENV = "EDGEMODELS_CACHE"
MANIFEST = "manifest.json"
ROOT_MARKER = ".edgemodels-cache"
"""Written into the cache root when this code creates it: `cache clear` refuses a directory without it
(unless it already holds valid entries: a cache made before the marker existed)."""
ENTRY_MARKER = ".edgemodels-entry.json"
"""Written last into every entry: {"entry": its directory name, "manifest_sha256", "files", "size_bytes"}."""
BUILDING = ".building."
SCHEMA = 1
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
SETTLED_NS = 1_000_000_000
"""A file's modification time is recorded in the manifest (and trusted on later hits) only when it was at least this
old once hashed: a file written again within the filesystem's timestamp tick of its recording could keep the same
mtime (git's "racy clean" problem). Small files are the ones left unrecorded, and they are cheap to hash."""


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


def disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from, is a full disk or quota: an OSError's errno, or, where a
    library re-raises it as its own type (TensorFlow's ResourceExhaustedError), the C library's text for it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if any(os.strerror(e) in str(exc) for e in _DISK_FULL):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def failed_path(exc: BaseException | None) -> str | None:
    """The file an OSError in `exc`'s chain names, the destination of a copy or rename (None where none does)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.filename2 or exc.filename):
            return os.fsdecode(exc.filename2 or exc.filename)
        exc = exc.__cause__ or exc.__context__
    return None


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


class CacheError(EdgeModelsError):
    """The cache directory cannot be used as asked (a file, read-only, not an edgemodels cache, in the way)."""


def _cache_hint(root: Path) -> str:
    return f"choose another directory with --cache / --edge-cache / ${CACHE_ENV} (now {root})"


def _not_writable(exc: OSError, path: Path, root: Path) -> CacheError:
    return CacheError(f"{path}: cannot write to the cache ({exc.strerror or exc}); make it writable or "
                      + _cache_hint(root))


def _write_error(exc: OSError, path: Path, root: Path) -> CacheError | None:
    """The one-line CacheError for a write the cache's filesystem refused (read-only, no permission, full), or None."""
    if exc.errno in _NOT_WRITABLE:
        return _not_writable(exc, path, root)
    if disk_full(exc):
        return _full(exc, path, root)
    return None


def _full(exc: BaseException, path: Path, root: Path) -> CacheError:
    """A full disk while writing `path` in the cache; where the error names a file outside the cache (a library's
    temp dir), that file's filesystem is the one to free."""
    elsewhere = failed_path(exc)
    if elsewhere and not os.path.abspath(elsewhere).startswith(os.path.abspath(root) + os.sep):
        return CacheError(f"{elsewhere}: no space left on device (while building {path}); nothing was cached: "
                          "free space on that filesystem (or point TMPDIR elsewhere) and run again")
    return CacheError(f"{path}: no space left on device; nothing half-built was kept: free space on that filesystem "
                      "or " + _cache_hint(root))


def check_root(root: Path) -> Path:
    """`root` if it is a directory or absent; a CacheError (not NotADirectoryError later) if it is a file."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CacheError(f"{root}: is a file, not a directory; the artifact cache must be a directory: "
                         + _cache_hint(root))
    return root


def ensure_root(root: Path) -> Path:
    """Create the cache root, with its marker when this call creates it (or finds it empty)."""
    root = check_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ROOT_MARKER).exists() and not any(root.iterdir()):
            atomic_write_text(root / ROOT_MARKER, json.dumps({"edgemodels_cache": SCHEMA}) + "\n")
    except OSError as exc:
        if (err := _write_error(exc, root, root)) is not None:
            raise err from exc
        raise
    return root


def lock_path(final: Path) -> Path:
    """The file lock guarding one entry's build (and its removal): <root>/locks/<kind>/<name>.lock."""
    return final.parent.parent / "locks" / final.parent.name / f"{final.name}.lock"


@contextlib.contextmanager
def _locked(path: Path, root: Path, timeout: float = -1) -> Iterator[None]:
    """Hold the file lock at `path`; Timeout if `timeout` >= 0 runs out; CacheError on a read-only cache."""
    try:
        lock = FileLock(str(path), timeout=timeout)
        lock.acquire()
    except OSError as exc:
        if (err := _write_error(exc, path, root)) is not None:
            raise err from exc
        raise
    try:
        yield
    finally:
        lock.release()


def _file_meta(path: Path) -> dict[str, Any]:
    """A built file's manifest record: size, sha256, and its mtime where it had settled (SETTLED_NS) once hashed."""
    before = path.stat()
    meta: dict[str, Any] = {"size": before.st_size, "sha256": sha256_file(path)}
    after = path.stat()
    if (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size) \
            and time.time_ns() - after.st_mtime_ns >= SETTLED_NS:
        meta["mtime_ns"] = after.st_mtime_ns
    return meta


def _walk_files(path: Path) -> dict[str, int]:
    """Relative path -> size of every regular file under `path` (symlinks not followed), by stat only."""
    out: dict[str, int] = {}
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not os.path.islink(full):
                out[os.path.relpath(full, path)] = st.st_size
    return out


def _legacy_marker(path: Path) -> dict[str, Any] | None:
    """Entries completed before ENTRY_MARKER existed, each by the marker its builder wrote last."""
    suffix = path.name.rsplit("-", 1)[-1]
    for name, field_ in ((MANIFEST, "key"), ("complete.json", "recipe_hash")):
        try:
            obj = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(obj, dict):
            return None
        value = obj.get(field_)
        value = value.get("digest") if isinstance(value, dict) else value
        if isinstance(value, str) and len(suffix) >= 12 and value.startswith(suffix):
            return {"entry": path.name, "legacy": name}
        return None
    if path.parent.name == "weights" and (path / ".complete").is_file():  # models.py's split-zip unpack
        return {"entry": path.name, "legacy": ".complete"}
    return None


def entry_marker(path: Path) -> dict[str, Any] | None:
    """THE completion rule, for every kind: the marker of a finished entry directory, else None.

    Cheap (reads one small file): `cache ls` and `cache clear` rely on it; contents are checked on use.
    """
    path = Path(path)
    try:
        marker = json.loads((path / ENTRY_MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _legacy_marker(path) if path.is_dir() else None
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("entry") == path.name else None


def _mkdirs(path: Path, root: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if (err := _write_error(exc, path, root)) is not None:
            raise err from exc
        raise


def _remove(path: Path, root: Path) -> None:
    """rmtree, entries first renamed to a `.building.` leftover: a removal that fails half-way is never
    mistaken for an entry, and the next `cache clear` (or build of that key) finishes it."""
    try:
        if BUILDING not in path.name:
            doomed = path.with_name(f".{path.name}{BUILDING}removing-{os.getpid()}-{time.monotonic_ns()}")
            os.rename(path, doomed)
            path = doomed
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE:
            raise CacheError(f"{path}: cannot remove it ({exc.strerror}); make the cache writable or "
                             + _cache_hint(root)) from exc
        raise


def locked_build(
    root: Path,
    kind: str,
    name: str,
    build: Callable[[Path], Mapping[str, Any] | None],
    *,
    complete: Callable[[Path], bool] | None = None,
) -> tuple[Path, bool]:
    """Build `<root>/<kind>/<name>` once: (path, True) if this call built it, (path, False) if it was there.

    Under the entry's lock: sweep this name's `.building.*` leftovers, `build(tmp)` in a fresh
    `.<name>.building.*` directory, write ENTRY_MARKER last, rename into place. `complete(path)` says whether
    an existing entry is usable (default: it has a valid marker); one that has our marker but is not
    usable is replaced, anything else in the way is an error, never deleted.
    """
    complete = complete or (lambda p: entry_marker(p) is not None)
    final = Path(root) / kind / name
    if complete(final):
        return final, False
    ensure_root(root)
    _mkdirs(final.parent, Path(root))
    _mkdirs(lock_path(final).parent, Path(root))
    with _locked(lock_path(final), Path(root)):
        if complete(final):
            return final, False
        if (final.exists() or final.is_symlink()) and entry_marker(final) is None:
            raise CacheError(f"{final}: in the way of a cache entry but not one (no valid {ENTRY_MARKER}); "
                             "it was not made by edgemodels, so it is left alone: move or delete it")
        for stale in final.parent.glob(f".{name}{BUILDING}*"):  # a killed build's leftovers; we hold the lock
            _remove(stale, Path(root))
        try:
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}{BUILDING}"))
        except OSError as exc:
            if (err := _write_error(exc, final.parent, Path(root))) is not None:
                raise err from exc
            raise
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from its other users
            build(tmp)
            files = _walk_files(tmp)
            mf = tmp / MANIFEST
            marker = {"entry": name, "kind": kind, "files": len(files), "size_bytes": sum(files.values()),
                      "manifest_sha256": sha256_file(mf) if mf.is_file() else None,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_text(tmp / ENTRY_MARKER, json.dumps(marker, indent=2) + "\n")
            if final.exists() or final.is_symlink():  # ours (it has our marker) but unusable: replace it
                if final.is_symlink():
                    final.unlink()
                else:
                    _remove(final, Path(root))
            os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Exception) and not isinstance(exc, EdgeModelsError) and disk_full(exc):
                raise _full(exc, final, Path(root)) from exc  # the data was safe: one line, not a traceback
            raise
    return final, True


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
