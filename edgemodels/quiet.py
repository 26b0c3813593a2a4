"""Keep third-party start-up noise off the user's terminal unless they ask for it (`-v` / EDGEMODELS_QUIET=0).

Why a file descriptor and not `sys.stderr`: TensorFlow's absl lines written before absl::InitializeLog
(oneDNN, CUDA probes: TF_CPP_MIN_LOG_LEVEL does not reach them) and the TFLite runtimes' "INFO: Created
TensorFlow Lite XNNPACK delegate" are written by C++ straight to fd 2. Why an environment variable: the
choice must reach worker processes (evaluate's process pool, the peak-RSS child) without plumbing.
Unset means verbose, so a library user (and the emulated ARM worker, whose XNNPACK line is checked) sees
everything; the CLI and the bench plugin set it. Only the standard library is imported: this module also
runs on a device and inside an emulated ARM user-land.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

ENV = "EDGEMODELS_QUIET"


def quiet() -> bool:
    """Whether native start-up lines are hidden in this process (and the processes it starts)."""
    return os.environ.get(ENV, "0").strip() not in ("", "0", "false", "no")


def set_quiet(on: bool) -> None:
    """Hide (True) or show (False) native start-up lines here and in every child started after this."""
    os.environ[ENV] = "1" if on else "0"


@contextlib.contextmanager
def native_stderr(log: list[str] | None = None) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block when quiet; its text is appended to `log`.

    If the block raises, the captured text is written back to stderr: it may explain the failure.
    """
    if not quiet():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (closed, or a replaced sys.stderr): leave it be
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            if log is not None:
                log.append(text)
            if failed and text:
                sys.stderr.write(text)
