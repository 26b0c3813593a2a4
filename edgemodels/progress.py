"""Progress bars (tqdm, with rate and ETA) for long steps, silent where nobody is watching.

A bar is drawn only on an interactive terminal: never under `--json` (a script reads the output),
never with CI set (a CI log would fill with carriage-return frames), never when stderr is a file or pipe.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from tqdm import tqdm

_FALSE = ("", "0", "false", "no", "off")


def enabled(stream: IO | None = None, *, quiet: bool = False) -> bool:
    """Whether a bar would be drawn on `stream` (default stderr)."""
    if quiet or os.environ.get("CI", "").strip().lower() not in _FALSE:
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
