"""Progress bars (tqdm, with rate and ETA) for long steps, silent where nobody is watching.

A bar is drawn only on an interactive terminal: never under `--json` (a script reads the output),
never with CI set (a CI log would fill with carriage-return frames), never when stderr is a file or pipe.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import IO, Iterator

from tqdm import tqdm

_FALSE = ("", "0", "false", "no", "off")
ENV = "EDGEMODELS_PROGRESS"  # "0": no bars in this process or its children


def enabled(stream: IO | None = None, *, quiet: bool = False) -> bool:
    """Whether a bar would be drawn on `stream` (default stderr)."""
    if quiet or os.environ.get("CI", "").strip().lower() not in _FALSE:
        return False
    if os.environ.get(ENV, "1").strip().lower() in _FALSE:  # the CLI's --json turns bars off for the whole run
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream (pytest's capture)
        return False


def bar(total: int, desc: str, *, unit: str = "it", quiet: bool = False, stream: IO | None = None) -> tqdm:
    """A tqdm bar on stderr showing count, rate and ETA; disabled (a no-op) unless `enabled()`."""
    stream = sys.stderr if stream is None else stream
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled(stream, quiet=quiet),
                mininterval=0.5, smoothing=0.1, dynamic_ncols=True, leave=False)


@contextlib.contextmanager
def stage(desc: str, *, quiet: bool = False, stream: IO | None = None) -> Iterator[None]:
    """An elapsed-time bar for a step with no measurable progress (a TFLite conversion, a SavedModel
    export): the user sees it is alive and how long it has run. Same rules as `bar()` for when it shows."""
    stream = sys.stderr if stream is None else stream
    if not enabled(stream, quiet=quiet):
        yield
        return
    done = threading.Event()
    with tqdm(total=None, desc=desc, file=stream, leave=False, bar_format="{desc}: {elapsed}",
              mininterval=0.5) as t:
        def tick() -> None:
            while not done.wait(0.5):
                t.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
