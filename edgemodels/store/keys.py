"""What a memoised result's cache key holds besides its inputs: the code that computed it, and the exact feeds.

A warm cache once kept a mutated evaluate() reporting the old accuracy: results are keyed by a digest of the source
of the modules that decide them, so a result computed by other code is never served. Artifact keys do not include
code (retraining costs minutes; their inputs are in their keys).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

ACCURACY_CODE = ("edgemodels.run.evaluate", "edgemodels.run.runtime", "edgemodels.build.convert",
                 "edgemodels.build.models", "edgemodels.build.data", "edgemodels.quiet", "edgemodels.progress")
"""Modules whose code decides an accuracy figure: interpreter binding, feeds, tokenizing, the evaluation split."""

EMULATION_CODE = ("edgemodels.run.qemu", "edgemodels.run.worker", "edgemodels.run.runtime", "edgemodels.run.targets",
                  "edgemodels.quiet")
"""Modules whose code decides an emulated run's verdict and outputs (the feeds are keyed by their content)."""


@lru_cache(maxsize=None)
def code_identity(*modules: str) -> dict[str, str]:
    """The package version and a digest of the named modules' source (read without importing them: the worker's
    modules run on ARM)."""
    import edgemodels

    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(f"{name}\0".encode())
        h.update(module_source(name))
    return {"edgemodels": edgemodels.__version__, "source": h.hexdigest()}


def module_source(name: str) -> bytes:
    """The source file of module `name`, read without importing it; for a package, every module in it (each
    prefixed by its path in the package, in path order), so that code moved into a submodule still counts."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"code_identity: no module {name}")
    if not spec.submodule_search_locations:
        return Path(spec.origin).read_bytes()
    root = Path(spec.origin).parent
    return b"".join(f"{p.relative_to(root).as_posix()}\0".encode() + p.read_bytes()
                    for p in sorted(root.rglob("*.py")))


def feeds_digest(feeds: list[dict]) -> str:
    """sha256 over the feeds' names, dtypes, shapes and bytes: what the interpreter is given, exactly."""
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}\0".encode())
            h.update(a.tobytes())
    return h.hexdigest()
