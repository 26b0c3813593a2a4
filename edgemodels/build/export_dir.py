"""The directory an export is written to: what in it an earlier export wrote, and what killed exports left beside it.

Why: `export DIR` replaces an earlier export at DIR, and the user may have put things there since (notes, a bench
report). Only what an export wrote is ever replaced or deleted: the regular files its index.json lists, and that
index. Everything else in DIR is kept (moved into the new export before it is renamed into place) and named in one
line. A directory whose index does not list its files cannot be told apart from the user's: it is refused.

Each export of DIR holds a file lock beside it (`.DIR.export.lock`, filelock) from its first write to its last. So
while an export holds it, the temp (`.DIR.export-<hex>.tmp`) and replaced (`.DIR.old-<hex>`) directories beside DIR
have no live writer: they are what killed exports left, and it removes them (only what an export wrote, by the same
rule). A temp directory without an index is an export's own from its first file (the index is written before any of
the user's files are moved into it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from filelock import Timeout

from edgemodels.store.files import disk_full, held_lock
from edgemodels.errors import EdgeModelsError

FORMAT = "edgemodels-export/1"
INDEX = "index.json"
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_SHOWN = 5  # extras named in a message before "and N more"


class ExportError(EdgeModelsError):
    """An export directory that cannot be written, read, or trusted (one line naming the file and the fix)."""


Log = Callable[[str], None]


def read_index(root: Path) -> dict[str, Any] | None:
    """The index of an export directory, or None where `root` holds none (or another format)."""
    try:
        index = json.loads((Path(root) / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == FORMAT else None


def listed_files(index: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The files an export's index says it wrote (relative paths), or None where it lists none."""
    files = index.get("files") if isinstance(index, Mapping) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) for k in files):
        return None
    return frozenset(files)


def _ancestors(paths: frozenset[str]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}


def _scan(root: Path, owned: frozenset[str]) -> tuple[list[str], list[str]]:
    """(owned files present, the top-most other entries) under `root`, links never followed; a directory that
    holds no owned file is one entry ('name/')."""
    dirs = _ancestors(owned)
    present: list[str] = []
    others: list[str] = []

    def walk(d: str, rel: str) -> None:
        with os.scandir(d) as it:
            for e in sorted(it, key=lambda e: e.name):
                r = rel + e.name
                if e.is_dir(follow_symlinks=False):
                    if r in dirs:
                        walk(e.path, r + "/")
                    else:
                        others.append(r + "/")
                elif e.is_file(follow_symlinks=False) and r in owned:
                    present.append(r)
                else:
                    others.append(r)

    walk(str(root), "")
    return present, others


def _named(items: list[str] | tuple[str, ...]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Target:
    """DIR as found: absent or empty (extras empty), or an earlier export with the user's `extras` in it."""

    path: Path
    extras: tuple[str, ...] = ()  # top-most entries no export wrote, relative ('dir/' for a directory)


def inspect(out: Path) -> Target:
    """What `out` holds; an ExportError (changing nothing) where it is not new, empty, or an earlier export."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        what = "a symbolic link" if out.is_symlink() else "a file"
        raise ExportError(f"{out}: is {what}; name a new or empty directory (or an earlier export to replace)")
    if not out.exists() or not any(out.iterdir()):
        return Target(out)
    index = read_index(out)
    if index is None:
        raise ExportError(f"{out}: not empty and not an earlier edgemodels export (no {INDEX}); name a new or "
                          "empty directory, so nothing of yours is overwritten")
    listed = listed_files(index)
    if listed is None:
        raise ExportError(f"{out}: its {INDEX} lists no files an export wrote, so nothing there can be told apart "
                          f"from yours and nothing is replaced: move what you want to keep out of {out} and remove "
                          "it, or export to another directory")
    return Target(out, tuple(_scan(out, listed | {INDEX})[1]))


def write_error(exc: BaseException, out: Path) -> ExportError | None:
    """The one-line ExportError for a write the filesystem refused (read-only, no permission, full), else None."""
    if isinstance(exc, EdgeModelsError):
        return None
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
        name = os.fsdecode(exc.filename) if exc.filename else None
        where = name if name and Path(name).parent not in (out.parent, out.parent.parent) else out.parent
        return ExportError(f"{where}: cannot write there ({exc.strerror}); an export is "
                           f"written beside {out.name} and renamed into place, so {out.parent} must be writable: "
                           "export to a directory you can write")
    if isinstance(exc, Exception) and disk_full(exc):
        return ExportError(f"{out.parent}: no space left on device while writing the export; {out} was not "
                           "changed and the partial copy was removed: free space there or export to a directory "
                           "on another filesystem")
    return None


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold `out`'s export lock (beside it); a second export of the same directory is refused, not queued."""
    lock_file = out.parent / f".{out.name}.export.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if (err := write_error(exc, out)) is not None:
            raise err from exc
        raise
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(held_lock(lock_file, 0, lambda exc: write_error(exc, out)))
        except Timeout:
            raise ExportError(f"{out}: another edgemodels export into it is running (it holds {lock_file}); "
                              "wait for it to finish, or export to another directory") from None
        yield


def new_temp(out: Path) -> Path:
    """A fresh temp directory beside `out` (the caller holds the lock)."""
    tmp = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir()
    except OSError as exc:
        if (err := write_error(exc, out)) is not None:
            raise err from exc
        raise
    return tmp


def discard(d: Path) -> list[str]:
    """Remove what an export wrote in `d`, a temp or replaced directory of ours; returns what was kept.

    With an index: the files it lists, then the directories they were in once empty, the index last (so a removal
    cut short can be finished). A temp directory without one is ours throughout; a replaced one without one keeps
    all but empty directories.
    """
    index = read_index(d)
    listed = listed_files(index)
    if listed is None and d.name.endswith(".tmp") and not (d / INDEX).exists():
        import shutil

        shutil.rmtree(d)
        return []
    owned = (listed or frozenset()) | ({INDEX} if listed is not None else set())
    present, others = _scan(d, frozenset(owned))
    for rel in sorted(present, key=lambda r: r == INDEX):
        (d / rel).unlink()
    for rel in sorted(_ancestors(frozenset(owned)), key=lambda r: -r.count("/")):
        with contextlib.suppress(FileNotFoundError, OSError):
            if (d / rel).is_dir() and not (d / rel).is_symlink():
                (d / rel).rmdir()  # only once empty: a user's file inside keeps it
    if not others:
        d.rmdir()
    return others


def sweep(out: Path, log: Log) -> None:
    """Under `out`'s lock: remove the temp and replaced directories killed exports of `out` left beside it."""
    mine = re.compile(re.escape(f".{out.name}.") + r"(export-[0-9a-f]{8}\.tmp|old-[0-9a-f]{8})")
    for p in sorted(out.parent.iterdir()):
        if not mine.fullmatch(p.name) or p.is_symlink() or not p.is_dir():
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        left = discard(p)
        if left:
            log(f"export: left {p} in place: it holds {len(left)} thing(s) no export is known to have written "
                f"({_named(left)}), from an export killed while replacing {out}: move them back into {out}, or "
                f"remove {p}")
        else:
            log(f"export: removed {p.name} ({size / 2**20:.1f} MiB) beside {out}: left by a killed export")


def _moves(out: Path, tmp: Path, extras: tuple[str, ...]) -> list[str]:
    """The entries to move from `out` into `tmp`: `extras`, a directory the new export also has by its contents.

    An ExportError (nothing moved yet) where one would land on something the new export wrote."""
    moves: list[str] = []
    for rel in extras:
        dest = tmp / rel.rstrip("/")
        if rel.endswith("/") and dest.is_dir() and not dest.is_symlink():
            inner = tuple(rel + e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
                          for e in sorted(os.scandir(out / rel), key=lambda e: e.name))
            moves += _moves(out, tmp, inner)
            continue
        parent = dest.parent
        while parent != tmp and not (parent.is_symlink() or (parent.exists() and not parent.is_dir())):
            parent = parent.parent
        if os.path.lexists(dest) or parent != tmp:
            raise ExportError(f"{out / rel.rstrip('/')}: not written by the earlier export, and the new one writes "
                              f"there; move it out of {out} and export again ({out} was not changed)")
        moves.append(rel)
    return moves


def place(tmp: Path, out: Path, log: Log) -> tuple[str, ...]:
    """Under `out`'s lock, with `tmp` holding the new export and its index: move what `out` holds that no export
    wrote into `tmp`, rename `tmp` into place, and remove the earlier export; returns what was kept.

    Refuses (changing nothing) where one of the user's entries sits where the new export writes.
    """
    target = inspect(out)  # again: something may have appeared while we built
    moves = _moves(out, tmp, target.extras)
    moved: list[str] = []
    old: Path | None = None
    try:
        for rel in moves:
            dest = tmp / rel.rstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(out / rel.rstrip("/"), dest)
            moved.append(rel)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):  # undo; what cannot be moved back stays in tmp, which keeps it
            if old is not None and old.exists() and not out.exists():
                os.rename(old, out)
            for rel in reversed(moved):
                os.rename(tmp / rel.rstrip("/"), out / rel.rstrip("/"))
        raise
    if old is not None:
        left = discard(old)
        if left:
            log(f"export: left {old} in place: {_named(left)} appeared in {out} while it was replaced")
    if target.extras:
        log(f"export: kept {len(target.extras)} thing(s) in {out} that no export wrote: {_named(target.extras)}")
    return target.extras
