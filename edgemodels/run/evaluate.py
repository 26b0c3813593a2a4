"""Accuracy of a .tflite run through the interpreter (not of the TF model it came from).

Needs only numpy, `tokenizers` and a TFLite runtime, so the same code measures accuracy on a device.
A split is run one tweet at a time (batch 1, what the artifact was built for) on every core: one
interpreter per worker process over contiguous chunks, or one interpreter with several threads,
whichever `plan()` picks (a split too small to pay for starting processes runs in this one); each
tweet's output does not depend on the plan, so the result is a single interpreter's, tweet for tweet.
Dynamic-length artifacts see each tweet at its own length. Workers are spawned, never forked (the
caller may hold TensorFlow's threads) and never import TensorFlow (numpy and the runtime only).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from edgemodels import LABELS, progress
from edgemodels.build import data, models
from edgemodels.run import runtime
from edgemodels.build.convert import to_feeds
from edgemodels.build.data import Dataset
from edgemodels.errors import EdgeModelsError


class LabelMismatch(EdgeModelsError):
    """The model's classes are not the data's (e.g. a 3-class polarity model evaluated on a 2-class CSV)."""


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    macro_f1: float
    n: int
    majority_accuracy: float
    runtime: str
    runtime_version: str
    confusion: tuple[tuple[int, ...], ...]  # rows = true label, cols = predicted, in the order of `labels`
    # How it was run (absent in results memoised before these existed): processes x threads, wall seconds.
    workers: int | None = None
    threads: int | None = None
    seconds: float | None = None
    labels: tuple[str, ...] = LABELS  # the data's classes (results memoised before N classes: polarity)

    @property
    def tweets_per_s(self) -> float | None:
        return self.n / self.seconds if self.seconds else None

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n,
                "majority_accuracy": self.majority_accuracy,
                "runtime": f"{self.runtime} {self.runtime_version}",
                "labels": list(self.labels), "confusion": [list(r) for r in self.confusion],
                "workers": self.workers, "threads": self.threads, "seconds": self.seconds,
                "tweets_per_s": self.tweets_per_s}


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(LABELS)) -> tuple[float, float, np.ndarray]:
    """(accuracy, macro-F1 over the classes, confusion matrix). A class never predicted nor present scores 0."""
    k = n_classes
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(tp.sum() / max(cm.sum(), 1)), float(f1.mean()), cm


def encode_dataset(dataset: Dataset, tokenizer_dir: Path, max_length: int) -> list[list[int]]:
    return models.encode(models.load_tokenizer(tokenizer_dir), dataset.texts(), max_length)


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


LARGE_MODEL_BYTES = 200_000_000
"""Above this file size the default plan is one interpreter with every core as a thread (see `plan`)."""

RSS_PER_MODEL_BYTE = 2.5
"""A worker's resident memory per byte of .tflite (file pages + the runtime's packed weights + arena), with
headroom: with WORKER_BASE_BYTES, bounds how many interpreters fit in the memory available (a 1 GB Pi)."""

WORKER_BASE_BYTES = 100_000_000
"""A worker process before its model: Python, numpy, the runtime's shared library."""

STARTUP_S = 1.0
"""What starting the worker processes may cost (spawn, imports, model load), with room for larger models and a busy
machine (docs/measurements.md#evaluation-plan). A split whose remaining work would save less than this by running in
parallel runs here instead."""

PROBE_TWEETS = 32
"""Tweets run here first, spread over the split, to time one inference before deciding to start workers."""


@dataclass(frozen=True)
class Plan:
    """How a split is run: `workers` processes (1 = this one), each one interpreter with `threads` threads.

    `auto`: the process count was not asked for, so a split too small to pay for starting them runs here."""

    workers: int
    threads: int
    why: str
    auto: bool = True


def plan(size_bytes: int, *, workers: int | None = None, threads: int | None = None,
         n_cores: int | None = None, available_bytes: int | None = None) -> Plan:
    """Use every core: processes for compact models, threads for large ones, fewer processes where memory is short.

    Why: threads lose at batch 1 on compact models (a process per core ran the most tweets per second), while a large
    model's matrices keep every thread busy and a second process would pay a second load and twice the memory
    (docs/measurements.md#evaluation-plan). Predictions are the same under every plan (tests/test_evaluate.py).
    """
    for name, v in (("workers", workers), ("threads", threads)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be at least 1, not {v}")
    n_cores = n_cores or cores()
    if workers is not None:
        t = threads or max(1, n_cores // workers)
        return Plan(workers, t, f"{workers} process(es) x {t} thread(s) as asked", auto=False)
    if threads is not None:
        return Plan(max(1, n_cores // threads), threads, f"{threads} thread(s) as asked, a process per "
                    f"{threads} of {n_cores} cores")
    if size_bytes > LARGE_MODEL_BYTES:
        return Plan(1, n_cores, f"large model ({size_bytes / 1e6:.0f} MB): one interpreter, {n_cores} threads")
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    fit = max(1, int(available_bytes // (WORKER_BASE_BYTES + RSS_PER_MODEL_BYTE * size_bytes)))
    w = min(n_cores, fit)
    return Plan(w, max(1, n_cores // w), f"{w} process(es) x {max(1, n_cores // w)} thread(s) on {n_cores} cores"
                + (f" (memory for {fit} interpreter(s))" if w < n_cores else ""))


def logits(model: runtime.TFLiteModel, ids: list[list[int]], pad: int, on_done=None) -> np.ndarray:
    """One inference per tweet, in order: [n, classes]. Fixed-length models get padded feeds, dynamic ones
    each tweet at its own length. `on_done(k)` is told every 16 tweets (a progress bar)."""
    seq = model.fixed_length
    rows = []
    for i, x in enumerate(ids):
        rows.append(np.asarray(model.run(to_feeds(x, seq, pad))).reshape(-1))
        if on_done is not None and (i & 15) == 15:
            on_done(16)
    if on_done is not None and len(ids) & 15:
        on_done(len(ids) & 15)
    return np.stack(rows) if rows else np.empty((0, len(LABELS)), np.float32)


def predict(model: runtime.TFLiteModel, ids: list[list[int]], pad: int, on_done=None) -> np.ndarray:
    """Predicted label ids, in order (one interpreter, here)."""
    return logits(model, ids, pad, on_done).argmax(1).astype(np.int64)


_WORKER: dict = {}  # the worker process's interpreter, loaded once by _worker_init


@dataclass(frozen=True)
class Loaded:
    """A model a worker process loaded, described to the caller, who must not load it: TensorFlow is in this process,
    and the device's runtime never shares one with it (tflite-runtime 2.14 beside TensorFlow fails with
    "vector::reserve"). Every inference then runs in spawned workers (split_logits)."""

    path: Path
    runtime_name: str
    runtime_version: str
    num_threads: int
    fixed_length: int | None


def _isolate(runtime_name: str | None) -> bool:
    """Whether this process must not load a TFLite runtime itself: it holds TensorFlow (the bench, a build)."""
    return "tensorflow" in sys.modules and runtime_name != "tensorflow"


def _probe(path: str, runtime_name: str | None, threads: int) -> tuple[str, str, int | None]:
    model = runtime.load(path, runtime=runtime_name, num_threads=threads)
    return model.runtime_name, model.runtime_version, model.fixed_length


def _worker_init(path: str, runtime_name: str, threads: int, pad: int) -> None:
    _WORKER.update(model=runtime.load(path, runtime=runtime_name, num_threads=threads), pad=pad)


def _worker_logits(ids: list[list[int]]) -> np.ndarray:
    return logits(_WORKER["model"], ids, _WORKER["pad"])


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges: ~16 per worker (progress, balance), 8-256 tweets each."""
    size = max(8, min(256, -(-n // (workers * 16))))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _run_order(ids: list[list[int]], fixed_length: int | None) -> np.ndarray:
    """Length order for a dynamic-length model (the interpreter reallocates only when the length changes, which costs
    CPU per tweet: docs/measurements.md#evaluation-plan), the split's order for a fixed-length one."""
    if fixed_length is not None:
        return np.arange(len(ids))
    return np.argsort(np.array([len(x) for x in ids], dtype=np.int64), kind="stable")


def logits_parallel(path: Path, ids: list[list[int]], pad: int, *, runtime_name: str, fixed_length: int | None,
                    workers: int, threads: int, bar=None) -> np.ndarray:
    """logits() over `workers` spawned processes (no TensorFlow in them), rows in the order of `ids`.

    Contiguous chunks of the run order (`_run_order`), each sent to whichever worker is free; rows are put
    back in the split's order.
    """
    n = len(ids)
    order = _run_order(ids, fixed_length)
    ordered = [ids[i] for i in order]
    out: np.ndarray | None = None
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(str(path), runtime_name, threads, pad)) as pool:
        futures = {pool.submit(_worker_logits, ordered[a:b]): (a, b) for a, b in _chunks(n, workers)}
        for fut in as_completed(futures):
            a, b = futures[fut]
            part = fut.result()
            if out is None:
                out = np.empty((n, part.shape[1]), part.dtype)
            out[order[a:b]] = part
            if bar is not None:
                bar.update(b - a)
    return out if out is not None else np.empty((0, len(LABELS)), np.float32)


def split_logits(model: runtime.TFLiteModel, ids: list[list[int]], pad: int, *, workers: int, bar=None,
                 probe: bool = False) -> tuple[np.ndarray, int]:
    """(logits of every tweet in the split's order, processes used): run by `model` here, or by `workers`
    processes each loading `model`'s file with its runtime and thread count.

    probe: first run PROBE_TWEETS tweets here (spread over the run order) and start workers only if the rest
    would save more than STARTUP_S by it; a small split or a fast model runs here.
    """
    n = len(ids)
    order = _run_order(ids, model.fixed_length)
    update = None if bar is None else bar.update
    out: np.ndarray | None = None
    rest = order
    if isinstance(model, Loaded):  # loaded in a worker, never here: every tweet goes to spawned workers
        return logits_parallel(model.path, ids, pad, runtime_name=model.runtime_name, fixed_length=model.fixed_length,
                               workers=max(1, workers), threads=model.num_threads, bar=bar), max(1, workers)
    if workers > 1 and probe and n > PROBE_TWEETS:
        pos = np.unique(np.linspace(0, n - 1, PROBE_TWEETS).astype(np.int64))
        first = order[pos]
        t = time.perf_counter()
        ran = logits(model, [ids[i] for i in first], pad, on_done=update)
        per_tweet = (time.perf_counter() - t) / len(first)
        out = np.empty((n, ran.shape[1]), ran.dtype)
        out[first] = ran
        rest = np.delete(order, pos)
        if per_tweet * len(rest) * (1 - 1 / workers) <= STARTUP_S:
            workers = 1
    rest_ids = [ids[i] for i in rest]
    if workers == 1 or not rest_ids:
        workers = 1
        ran = logits(model, rest_ids, pad, on_done=update)
    else:
        ran = logits_parallel(model.path, rest_ids, pad, runtime_name=model.runtime_name,
                              fixed_length=model.fixed_length, workers=workers, threads=model.num_threads or 1,
                              bar=bar)
    if out is None:
        out = np.empty((n, ran.shape[1]), ran.dtype)
    out[rest] = ran
    return out, workers


def evaluation_set(data_spec: str, n: int | None) -> Dataset:
    """The evaluation split of `data_spec`, or its seeded stratified sample of `n` tweets (None/0: all of it).

    The one choice of tweets the bench's accuracy suite scores (plugin.BenchSession.eval_set) and an export
    pre-tokenizes (export.export), so a device scoring an export scores the workstation's tweets."""
    spec = data.parse_spec(data_spec)
    ds = data.load(spec, spec.evaluation_split)
    return ds.sample(n) if n and len(ds.examples) > n else ds


def load_planned(tflite: Path, *, runtime_name: str | None = None, threads: int | None = None,
                 workers: int | None = None) -> tuple[runtime.TFLiteModel | Loaded, Plan]:
    """(the interpreter, the plan): `plan()` for the file's size, the model loaded at the plan's thread count; where
    this process holds TensorFlow, loaded in a spawned worker instead and described (Loaded)."""
    how = plan(Path(tflite).stat().st_size, workers=workers, threads=threads)
    if _isolate(runtime_name):
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            name, version, fixed = pool.submit(_probe, str(tflite), runtime_name, how.threads).result()
        return Loaded(Path(tflite), name, version, how.threads, fixed), how
    return runtime.load(tflite, runtime=runtime_name, num_threads=how.threads), how


def evaluate_ids(model: runtime.TFLiteModel, how: Plan, ids: list[list[int]], y_true: np.ndarray, *, pad: int,
                 data_labels: tuple[str, ...] | list[str], majority_accuracy: float,
                 model_labels: tuple[str, ...] | list[str] | None = None, quiet: bool = False,
                 name: str | None = None, started: float | None = None) -> Accuracy:
    """Accuracy of already-tokenized `ids` (true class ids `y_true`, in `data_labels`' order) through `model`.

    The scoring both sides share: evaluate() after tokenizing, export.Export.accuracy on an export's ids (a
    device has no tokenizer). Predictions are mapped to the data's classes by name (to_data_ids); `started`:
    the perf_counter the caller's timing began at (default: now), so `seconds` covers its loading too."""
    start = time.perf_counter() if started is None else started
    with progress.bar(len(ids), f"evaluate {(name or model.path.parent.name)[:24]}", unit="tweet",
                      quiet=quiet) as bar:
        out, used = split_logits(model, ids, pad, workers=how.workers, bar=bar, probe=how.auto)
    data_labels = tuple(data_labels)
    pred = to_data_ids(out.argmax(1).astype(np.int64), model_labels, data_labels, out.shape[1], model.path)
    acc, f1, cm = scores(np.asarray(y_true, dtype=np.int64), pred, len(data_labels))
    return Accuracy(acc, f1, len(ids), float(majority_accuracy), model.runtime_name, model.runtime_version,
                    tuple(tuple(int(v) for v in r) for r in cm), workers=used, threads=how.threads,
                    seconds=time.perf_counter() - start, labels=data_labels)


def evaluate(
    tflite: Path,
    dataset: Dataset,
    *,
    tokenizer_dir: Path,
    max_length: int,
    pad: int,
    runtime_name: str | None = None,
    threads: int | None = None,
    workers: int | None = None,
    quiet: bool = False,
    labels: tuple[str, ...] | list[str] | None = None,
) -> Accuracy:
    """Accuracy of `tflite` on `dataset`; `workers`/`threads` default to `plan()`'s choice for this machine.

    `labels`: the model's class names in the order of its outputs (None: taken to be the data's). The model
    must know every class of the data; where the orders differ, predictions are mapped by name."""
    start = time.perf_counter()
    tflite = Path(tflite)
    model, how = load_planned(tflite, runtime_name=runtime_name, threads=threads, workers=workers)
    ids = encode_dataset(dataset, tokenizer_dir, model.fixed_length or max_length)
    return evaluate_ids(model, how, ids, dataset.label_ids(), pad=pad, data_labels=dataset.labels,
                        majority_accuracy=dataset.majority_accuracy(), model_labels=labels, quiet=quiet,
                        name=tflite.parent.name, started=start)


def check_labels(model_labels, data_labels, tflite: Path | str = "the model") -> None:
    """Raise LabelMismatch unless the model predicts exactly the data's classes (in any order)."""
    if model_labels is not None and set(model_labels) != set(data_labels):
        raise LabelMismatch(
            f"{tflite}: the model's classes ({', '.join(model_labels)}) are not the data's ({', '.join(data_labels)}); "
            "evaluate it on data with its classes, or build a model on this data (or pass --labels in the order of "
            "its outputs)")


def to_data_ids(pred: np.ndarray, model_labels, data_labels, n_outputs: int, tflite: Path | str) -> np.ndarray:
    """Model output indices -> the data's class indices (by name); checks the output count against the classes."""
    names = tuple(model_labels) if model_labels is not None else tuple(data_labels)
    if n_outputs and n_outputs != len(names):
        raise LabelMismatch(f"{tflite}: {n_outputs} outputs, but {len(names)} classes "
                            f"({', '.join(names)}); pass --labels with one name per output")
    check_labels(names, data_labels, tflite)
    if names == tuple(data_labels):
        return pred
    index = np.array([tuple(data_labels).index(n) for n in names], dtype=np.int64)
    return index[pred]
