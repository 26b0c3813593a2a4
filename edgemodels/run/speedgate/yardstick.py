"""The yardstick: a small committed .tflite that every throughput case is timed against, round by round.

Never rebuilt (scripts/make-yardstick records how it was made): no change to this repository's code can make it
faster or slower, so a case's speed relative to it moves when the case's file, the runtime or the machine's
kernels change, not when the neighbours on the machine do. Its sha256 is pinned and checked at every load; a
digest records it, and a comparison against a baseline timed with another yardstick is refused.

Its shape: MiniLM-L6's encoder at batch 1 and 128 tokens (hidden 384, 12 heads, feed-forward 1,536), one layer's
weights applied six times (the file stays ~2 MB), dynamic-range quantized per tensor (FULLY_CONNECTED v9: the
kernels of the suite's drq models, and loadable by a Pi 3's tflite-runtime 2.14).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgemodels.errors import EdgeModelsError

PATH = Path(__file__).with_name("yardstick.tflite")
SHA256 = "06c2c5cd4b408cb5ac877d18f5025c3c350e598adac878e08d541c14e267a234"


class YardstickChanged(EdgeModelsError, RuntimeError):
    """The committed yardstick's bytes are not the pinned ones: every relative figure would be wrong."""


@dataclass(frozen=True)
class Yardstick:
    """One inference per call of `run`, on an interpreter with `threads` threads."""

    run: Callable[[], object]
    sha256: str
    threads: int | None
    runtime: str


def check(path: Path = PATH, sha256: str = SHA256) -> str:
    """The file's sha256, after checking it against the pin."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YardstickChanged(f"{path}: the throughput yardstick cannot be read ({exc.strerror}); restore it from "
                               "the repository (git checkout -- edgemodels/run/speedgate/yardstick.tflite)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise YardstickChanged(f"{path}: sha256 {digest[:16]}... is not the pinned {sha256[:16]}...; restore the "
                               "committed file (git checkout -- edgemodels/run/speedgate/yardstick.tflite): a new "
                               "yardstick needs a new pin in edgemodels/run/speedgate/yardstick.py and re-saved baselines")
    return digest


def load(*, num_threads: int | None, runtime: str | None = None, path: Path = PATH,
         sha256: str = SHA256) -> Yardstick:
    """Check the pin and load the yardstick with the case's runtime and thread count."""
    from edgemodels.run import runtime as rt

    digest = check(path, sha256)
    model = rt.load(path, runtime=runtime, num_threads=num_threads)
    feeds = model.dummy_feeds()
    model.run(feeds)  # the first invoke allocates: not a timed one
    return Yardstick(run=lambda: model.run(feeds), sha256=digest, threads=num_threads, runtime=model.runtime_name)
