"""File-level helpers every layer writes and checks files with: atomic writes, sha256 of a file, a digest of key
parts, and telling a full disk from other errors.

Why atomic writes everywhere (reports, baselines, manifests, exports): a reader, or a run killed half-way, sees the
old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from filelock import FileLock, Timeout

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


@contextlib.contextmanager
def held_lock(path: Path, timeout: float, user_error: Callable[[OSError], Exception | None]) -> Iterator[None]:
    """Hold the file lock at `path` (Timeout once `timeout` >= 0 runs out); an OSError taking it (read-only
    directory, full disk) becomes the caller's one-line error where `user_error` returns one."""
    try:
        lock = FileLock(str(path), timeout=timeout)
        lock.acquire()
    except Timeout:
        raise
    except OSError as exc:
        if (err := user_error(exc)) is not None:
            raise err from exc
        raise
    try:
        yield
    finally:
        lock.release()
