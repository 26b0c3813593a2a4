"""One interpreter interface over the TFLite runtimes a device may have.

ai-edge-litert (the successor, 64-bit devices and workstations), tflite-runtime (the last build a
32-bit Pi 3 can install) and tf.lite (TensorFlow itself). Only numpy and a runtime are imported, so
this module also runs on a device or inside an emulated ARM user-land.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping

import numpy as np

from edgemodels.quiet import native_stderr
from edgemodels.errors import EdgeModelsError

@dataclass(frozen=True)
class RuntimeRecord:
    """A TFLite runtime with the Interpreter API: adding one is one record in _MODULES (options, worker and targets
    read the table)."""

    module: str  # the module holding its Interpreter
    package: str  # the package whose version it reports
    install: str  # how a user installs it


_MODULES = {
    "ai-edge-litert": RuntimeRecord("ai_edge_litert.interpreter", "ai_edge_litert", "pip install ai-edge-litert"),
    "tflite-runtime": RuntimeRecord("tflite_runtime.interpreter", "tflite_runtime",
                                    "pip install tflite-runtime 'numpy<2'"),
    "tensorflow": RuntimeRecord("tensorflow.lite.python.interpreter", "tensorflow", "pip install tensorflow"),
}

RUNTIMES: tuple[str, ...] = tuple(_MODULES)
"""Preference order when no runtime is named."""


class RuntimeUnavailable(EdgeModelsError, RuntimeError):
    """The named runtime is not installed here."""


class ModelLoadError(EdgeModelsError, RuntimeError):
    """The runtime refused the file; the message quotes the runtime's own error."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str


def _import(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown runtime {name!r}; valid: {', '.join(RUNTIMES)}")
    rec = _MODULES[name]
    interp_mod, pkg = rec.module, rec.package
    try:
        with native_stderr():  # importing tensorflow's interpreter prints TensorFlow's start-up lines
            mod = importlib.import_module(interp_mod)
        version = getattr(importlib.import_module(pkg), "__version__", "")
    except ImportError as exc:
        hint = rec.install
        raise RuntimeUnavailable(f"runtime {name!r} is not installed ({exc}); install it: {hint}") from exc
    if not version:
        from importlib import metadata

        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "unknown"
    return mod, RuntimeInfo(name, version)


def available() -> list[RuntimeInfo]:
    """Runtimes installed here, in preference order, found without importing them (TF costs 500 MB)."""
    from importlib import metadata
    from importlib.util import find_spec

    found = []
    for name in RUNTIMES:
        pkg = _MODULES[name].package
        if find_spec(pkg) is None:
            continue
        try:
            found.append(RuntimeInfo(name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append(RuntimeInfo(name, "unknown"))
    return found


def _check_flatbuffer(path: Path) -> None:
    """Catch a missing, truncated or non-TFLite file before the runtime gives a cryptic error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelLoadError(
            f"{path}: not a TFLite FlatBuffer (no 'TFL3' identifier at byte 4); "
            "rebuild it with `python -m edgemodels build` or pass a .tflite file"
        )


class TFLiteModel:
    """A loaded classifier: inputs bound by name, dynamic sequence length resized per call."""

    def __init__(self, path: Path, interpreter, info: RuntimeInfo, num_threads: int | None):
        self.path = path
        self.runtime_name = info.name
        self.runtime_version = info.version
        self.num_threads = num_threads
        self._interp = interpreter
        sigs = interpreter.get_signature_list()
        self._signature = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
        if self._signature is None:
            # A model without signatures: fall back to tensor names.
            self._inputs = {d["name"]: d for d in interpreter.get_input_details()}
            self._output_index = interpreter.get_output_details()[0]["index"]
        else:
            self._runner = interpreter.get_signature_runner(self._signature)
            self._inputs = self._runner.get_input_details()
            self._output_name = sorted(self._runner.get_output_details())[0]
        self.input_names: tuple[str, ...] = tuple(sorted(self._inputs))

    @property
    def info(self) -> RuntimeInfo:
        return RuntimeInfo(self.runtime_name, self.runtime_version)

    def input_shape(self, name: str) -> tuple[int, ...]:
        d = self._inputs[name]
        sig = d.get("shape_signature")
        return tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"]))

    def input_dtype(self, name: str):
        return self._inputs[name]["dtype"]

    @cached_property  # read inside the timed loop: the signature does not change after load
    def fixed_length(self) -> int | None:
        """The compiled sequence length, or None for a dynamic-length model."""
        shape = self.input_shape(self.input_names[0])
        return None if shape[-1] == -1 else shape[-1]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise KeyError(f"{self.path}: inputs missing: {sorted(missing)} (model takes {self.input_names})")
        cast = {k: np.asarray(feeds[k], dtype=self.input_dtype(k)) for k in self.input_names}
        fixed = self.fixed_length
        for name, arr in cast.items():
            if fixed is not None and (arr.ndim < 1 or arr.shape[-1] != fixed):
                raise ValueError(f"{self.path}: input {name!r} has shape {arr.shape}, but the model was built for "
                                 f"length {fixed}; pad or truncate to {fixed} (edgemodels.build.convert.to_feeds)")
        if self._signature is not None:
            out = self._runner(**cast)
            return np.asarray(out[self._output_name])
        interp = self._interp
        if any(tuple(self._inputs[n]["shape"]) != a.shape for n, a in cast.items()):
            for name, arr in cast.items():  # resize every input, then allocate once
                interp.resize_tensor_input(self._inputs[name]["index"], arr.shape)
            interp.allocate_tensors()
            self._inputs = {x["name"]: x for x in interp.get_input_details()}
        for name, arr in cast.items():
            interp.set_tensor(self._inputs[name]["index"], arr)
        interp.invoke()
        return np.asarray(interp.get_tensor(self._output_index))

    def dummy_feeds(self, seq_len: int | None = None) -> dict[str, np.ndarray]:
        """All-ones inputs of the model's length (or seq_len for a dynamic model): for timing and memory."""
        length = self.fixed_length or seq_len or 128
        return {n: np.ones((1, length), dtype=self.input_dtype(n)) for n in self.input_names}


def load(path: str | Path, *, runtime: str | None = None, num_threads: int | None = None) -> TFLiteModel:
    """Load with the named runtime, or the first available one (see RUNTIMES)."""
    path = Path(path)
    _check_flatbuffer(path)
    if runtime is not None:
        return _load_with(path, runtime, num_threads)
    found = available()
    if not found:
        raise RuntimeUnavailable(
            "no TFLite runtime installed; install one of: ai-edge-litert, tflite-runtime, tensorflow"
        )
    failures = []
    for info in found:  # an installed runtime can still fail to import (e.g. a numpy ABI mismatch)
        try:
            return _load_with(path, info.name, num_threads)
        except RuntimeUnavailable as exc:
            failures.append(str(exc))
    raise RuntimeUnavailable("no installed TFLite runtime could be imported: " + "; ".join(failures))


def _load_with(path: Path, runtime: str, num_threads: int | None) -> TFLiteModel:
    mod, info = _import(runtime)
    try:
        # The runtime's C++ start-up lines ("INFO: Created TensorFlow Lite XNNPACK delegate") go to fd 2
        # on every load; hidden when quiet (the CLI without -v, the bench plugin), see edgemodels.quiet.
        with native_stderr():
            if info.name == "tensorflow":
                # tf.lite skips FlatBuffer verification for model_path (a truncated file can segfault);
                # model_content is verified.
                interp = mod.Interpreter(model_content=path.read_bytes(), num_threads=num_threads)
            else:
                interp = mod.Interpreter(model_path=str(path), num_threads=num_threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: {info.name} {info.version} cannot load this model: {exc}") from exc
    return TFLiteModel(path, interp, info, num_threads)
