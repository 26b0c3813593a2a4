"""The data set a loader returns: labelled examples with provenance, what was skipped, and a content fingerprint.

Why the fingerprint lives with the examples: caches key on it, so it hashes exactly what a model sees (labels and
texts, in order) plus the split settings, and any subset (`Dataset.sample`) gets its own. Stratified picking is here
too, shared by sampling and by the train/validation split (edgemodels.build.data.splits).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from edgemodels import LABELS
from edgemodels.errors import EdgeModelsError

# Bump when the fingerprint recipe changes, so old cache entries stop matching.
_FP_VERSION = b"edgemodels.data.fingerprint/1"


class DataError(EdgeModelsError, ValueError):
    """Bad or unusable input data; the message names the file, row/field and how to fix it."""


@dataclass(frozen=True)
class Example:
    """One labelled text with its provenance (``source``) and split group (RepLab entity)."""

    text: str
    label: str
    source: str
    group: str = ""


@dataclass(frozen=True)
class Dataset:
    """An immutable, ordered set of examples plus what was skipped and a content fingerprint.

    ``labels``: the class names in the order of a classifier's outputs (default: the polarity task's)."""

    name: str
    examples: tuple[Example, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    labels: tuple[str, ...] = LABELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "skipped", MappingProxyType(dict(self.skipped)))
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise DataError(f"{self.name}: needs at least 2 distinct classes, got {self.labels}")
        bad = next((e for e in self.examples if e.label not in self.labels), None)
        if bad is not None:
            raise DataError(f"{self.name}: example {bad.source} has label {bad.label!r}; expected one of {self.labels}")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self.examples, _with_labels({"name": self.name},
                                                                                              self.labels)))

    def __hash__(self) -> int:  # `skipped` is a mapping proxy (unhashable); the fingerprint identifies content
        return hash((self.name, self.fingerprint))

    def __len__(self) -> int:
        return len(self.examples)

    def label_counts(self) -> dict[str, int]:
        counts = Counter(e.label for e in self.examples)
        return {label: counts.get(label, 0) for label in self.labels}

    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    def label_ids(self) -> np.ndarray:
        return _label_ids(self.examples, self.labels)

    def majority_accuracy(self) -> float:
        """Accuracy of always predicting the most frequent class: the floor any model must beat."""
        if not self.examples:
            raise DataError(f"{self.name}: empty data set has no majority class")
        return max(self.label_counts().values()) / len(self.examples)

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """Seeded stratified subsample of ``n`` examples (original order kept); ``self`` if n >= len."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"{self.name}: sample size must be a positive integer, got {n!r}")
        if n >= len(self.examples):
            return self
        picked = _stratified_pick(self.label_ids(), int(n), seed, len(self.labels))
        examples = tuple(self.examples[i] for i in picked)
        params = {"parent": self.fingerprint, "sample": int(n), "sample_seed": int(seed)}
        return Dataset(f"{self.name}[sample n={n} seed={seed}]", examples, self.skipped, _fingerprint(examples, params),
                       self.labels)


@dataclass(frozen=True)
class _Parsed:
    """Examples read from one source (file or RepLab split folder), before train/val splitting."""

    where: str
    examples: tuple[Example, ...]
    skipped: Mapping[str, int]
    raw_labels: frozenset[str] = frozenset()  # the label column's values as written (stripped): csv: files


def _label_ids(examples: Sequence[Example], labels: Sequence[str] = LABELS) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.fromiter((index[e.label] for e in examples), dtype=np.int64, count=len(examples))


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split n draws over classes in proportion to counts (largest remainder, ties by class index).

    Classes with at least 2 members get at least one draw when n allows, so small classes are
    represented in a validation split or sample instead of vanishing to rounding.
    """
    counts = counts.astype(np.int64)
    exact = counts * (n / counts.sum())
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -(exact - quota)))
    quota[order[: n - int(quota.sum())]] += 1
    for k in np.flatnonzero((counts >= 2) & (quota == 0)):
        donor = int(np.argmax(quota))
        if quota[donor] <= 1:
            break
        quota[donor] -= 1
        quota[k] += 1
    return np.minimum(quota, counts)


def _stratified_pick(label_ids: np.ndarray, n: int, seed: int, n_classes: int = len(LABELS)) -> np.ndarray:
    """Indices of a seeded stratified subset of size n, sorted (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    quota = _allocate(np.bincount(label_ids, minlength=n_classes), n)
    chosen = [rng.permutation(np.flatnonzero(label_ids == k))[: quota[k]] for k in range(n_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _with_labels(params: dict[str, object], labels: Sequence[str]) -> dict[str, object]:
    """`params` plus the class names where they are not the polarity task's: fingerprints (and so the cache
    keys) of every 3-class data set stay what they were before other class sets existed."""
    return params if tuple(labels) == LABELS else {**params, "labels": list(labels)}


def _fingerprint(examples: Sequence[Example], params: Mapping[str, object]) -> str:
    """sha256 over (label, text) in order plus split parameters; length-prefixed so it is unambiguous."""
    h = hashlib.sha256(_FP_VERSION)
    for ex in examples:
        for part in (ex.label, ex.text):
            raw = part.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
    h.update(b"\x00params")
    h.update(json.dumps(dict(params), sort_keys=True).encode())
    return h.hexdigest()

