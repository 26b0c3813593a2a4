"""The one completion rule of every cache entry, and the cache root it lives in.

Every kind of entry (artifacts, memoised results, the ARM user-lands of edgemodels.run.rootfs, the unpacked
weights of edgemodels.build.models) follows ONE completion rule, `locked_build`: build in a private
``.<name>.building.*`` directory under the key's file lock, write the entry marker last, rename into
place. So parallel pytest workers build each entry once, an interrupted build is never served, and
`cache clear` can tell what is ours: only directories with a valid entry marker (and our own
``.building.*`` leftovers) are ever deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from edgemodels.errors import EdgeModelsError
from edgemodels.store.files import atomic_write_text, disk_full, failed_path, held_lock, sha256_file

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


def default_root() -> Path:
    """$EDGEMODELS_CACHE, else the user cache dir (e.g. ~/.cache/edgemodels)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("edgemodels")


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


def _locked(path: Path, root: Path, timeout: float = -1) -> contextlib.AbstractContextManager[None]:
    """Hold the file lock at `path`; Timeout if `timeout` >= 0 runs out; CacheError on a read-only cache."""
    return held_lock(path, timeout, lambda exc: _write_error(exc, path, root))


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

