"""A real small (or read-only) filesystem for the disk-full and read-only cases: a tmpfs mounted for one test.

Why real: a patched `write` would test the patch; ENOSPC and EROFS come back from the kernel here exactly as on a
full or read-only disk (root ignores file modes, a read-only mount it cannot). Mounting needs root: elsewhere
the test skips, and fails under CI (conftest.missing), where setup runs as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from conftest import missing


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        missing(f"cannot mount a tmpfs for a disk-full/read-only test: {proc.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", *, read_only: bool = False, inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (created) for the with-block, unmounted after. `read_only`: mounted read-only,
    empty; to have something in it, write it first and then call `remount_read_only`. `inodes`: at most this many
    files and directories (the root is one), so creating one more fails with ENOSPC naming it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        missing("mounting a tmpfs for a disk-full/read-only test needs root")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "") + (f",nr_inodes={inodes}" if inodes else "")
    _mount("-t", "tmpfs", "-o", opts, "tmpfs", str(path))
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # busy (a killed child's open file): detach


def remount_read_only(path: Path) -> None:
    _mount("-o", "remount,ro", str(path))
