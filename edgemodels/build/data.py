"""Labelled text data sets: built-in finance tweets, RepLab 2013 (both 3-class polarity), or a user CSV/TSV
with any number (>= 2) of classes.

Why this module exists: every later stage (training, evaluation, caching, reports) needs the same
examples in the same order, an honest account of what was left out, and a content fingerprint to key
caches on. So every loader returns a `Dataset` whose examples carry provenance, whose `skipped`
counts every dropped row by reason, and whose `fingerprint` hashes texts, labels and split settings.

Specs (strings users type, e.g. in ``--data`` or ``$EDGEMODELS_DATA``):

* ``builtin`` -- the MIT-licensed Twitter Financial News Sentiment set shipped in the package.
* ``replab:DIR`` -- the official RepLab 2013 package (DIR contains ``training/`` and maybe ``test/``),
  or DIR pointing straight at a ``training`` or ``test`` folder. Tweet texts are never shipped.
* ``csv:FILE`` -- a .csv/.tsv with ``text`` and ``label`` columns (optional ``group`` column). Labels
  are class names (any names, read lower-cased; at least 2 classes); numeric labels are never mapped by
  position (the built-in set codes 1 = positive, other sets 1 = neutral), so they need an explicit
  mapping: ``csv:FILE?labels=0:negative,1:neutral,2:positive``.

Classes: ``builtin`` and ``replab:`` are the 3-class polarity task (`edgemodels.LABELS`); a ``csv:`` file's
classes are the class names in its rows, sorted (so the order of the classifier's outputs does not depend
on the order of the rows). Every `Dataset` carries its class names in ``labels``.

Splits: ``train``/``validation`` are a seeded stratified split of the training material (or, with
``group_split=True``, whole groups -- RepLab entities -- go to validation); ``test`` is the separate
official test material where it exists. An evaluation example (validation, test) whose exact text is also in
what the model learns from is dropped and counted (`DUPLICATE_SKIP`): repeated tweets would inflate accuracy.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

import numpy as np

from edgemodels import LABELS
from edgemodels.errors import EdgeModelsError

__all__ = [
    "DATA_ENV",
    "DUPLICATE_SKIP",
    "SPLITS",
    "DataError",
    "DataSpec",
    "Dataset",
    "Example",
    "default_spec",
    "load",
    "check_loadable",
    "classes",
    "cross_split_duplicates",
    "load_all",
    "parse_spec",
]

DATA_ENV = "EDGEMODELS_DATA"
"""Environment variable holding the default data spec (else ``builtin``)."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")
KINDS: tuple[str, ...] = ("builtin", "replab", "csv")
SPEC_FORMS = (
    "'builtin' (shipped finance-tweet set), "
    "'replab:DIR' (RepLab 2013 package root containing training/, or its training/ or test/ folder), "
    "'csv:FILE' (a .csv or .tsv file with 'text' and 'label' columns holding class names; numeric labels need "
    "a mapping: "
    "'csv:FILE?labels=0:negative,1:neutral,2:positive')"
)
LABEL_MAP_HINT = "csv:FILE?labels=0:negative,1:neutral,2:positive (your file's coding)"
DUPLICATE_SKIP = "duplicate_of_train"
"""The `skipped` reason of an evaluation example (validation, test) whose exact text is also in the material the
model learns from: dropped from the evaluation split, so that accuracy is never measured on texts seen in training."""

# Bump when the fingerprint recipe changes, so old cache entries stop matching.
_FP_VERSION = b"edgemodels.data.fingerprint/1"
_REPLAB_POLARITY = {"NEGATIVE": "negative", "NEUTRAL": "neutral", "POSITIVE": "positive"}
# zeroshot/twitter-financial-news-sentiment: 0 Bearish, 1 Bullish, 2 Neutral.
_BUILTIN_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}
_BUILTIN_DIR = ("datasets", "tweet_financial_news")
_BUILTIN_TRAIN, _BUILTIN_TEST = "sent_train.csv", "sent_valid.csv"


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
class DataSpec:
    """Where data comes from: ``builtin``, ``replab:DIR`` or ``csv:FILE`` (path absolute).

    ``labels`` is a csv: file's explicit label mapping (raw value -> class), e.g. (("0", "negative"), ...).
    """

    kind: str
    path: Path | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r}; valid forms: {SPEC_FORMS}")
        if (self.kind == "builtin") != (self.path is None):
            raise DataError(f"data kind {self.kind!r} {'takes no' if self.kind == 'builtin' else 'needs a'} path")
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "labels", tuple((str(k), str(v)) for k, v in self.labels))
        if self.labels and self.kind != "csv":
            raise DataError(f"data kind {self.kind!r} has its own label coding; a ?labels= mapping is only for csv:")
        keys = [k for k, _ in self.labels]
        if any(not v for _, v in self.labels) or len(set(keys)) != len(keys) or any(not k for k in keys):
            raise DataError(f"label mapping {self._labels_text()!r}: each entry is VALUE:CLASS with a distinct VALUE "
                            f"and a non-empty CLASS name; e.g. {LABEL_MAP_HINT}")

    def _labels_text(self) -> str:
        return ",".join(f"{k}:{v}" for k, v in self.labels)

    def __str__(self) -> str:
        text = self.kind if self.path is None else f"{self.kind}:{self.path}"
        return text + (f"?labels={self._labels_text()}" if self.labels else "")

    @property
    def label_mapping(self) -> dict[str, str]:
        """Raw label value -> class, as this spec reads it (what `data stats` reports)."""
        if self.kind == "builtin":
            return dict(_BUILTIN_LABELS)
        if self.kind == "replab":
            return {k: v for k, v in _REPLAB_POLARITY.items()}
        if self.labels:
            return dict(self.labels)
        return {}  # class names are read as themselves

    @property
    def label_rule(self) -> str:
        """One line saying which mapping was used, and why."""
        if self.kind == "builtin":
            return "the data set's own coding: 0 Bearish -> negative, 1 Bullish -> positive, 2 Neutral -> neutral"
        if self.kind == "replab":
            return "RepLab polarity names: NEGATIVE, NEUTRAL, POSITIVE"
        if self.labels:
            return ("explicit mapping from the spec: " + ", ".join(f"{k} -> {v}" for k, v in self.labels)
                    + "; class names are read as themselves")
        return ("class names (any names, any case; the classes are those in the file, sorted); numeric labels are "
                f"not mapped by position and need an explicit mapping: {LABEL_MAP_HINT}")

    @property
    def evaluation_split(self) -> str:
        """The split to report final accuracy on: ``test`` where a held-out test split exists."""
        if self.kind == "builtin":
            return "test"
        if self.kind == "replab":
            assert self.path is not None
            return "test" if _replab_layout(self.path)[1] is not None else "validation"
        return "validation"

    @property
    def available_splits(self) -> tuple[str, ...]:
        if self.kind == "replab":
            assert self.path is not None
            training, test = _replab_layout(self.path)
            return (("train", "validation") if training else ()) + (("test",) if test else ())
        return ("train", "validation", "test") if self.kind == "builtin" else ("train", "validation")


def default_spec() -> str:
    """The spec in ``$EDGEMODELS_DATA``, else ``builtin`` (works on a fresh machine)."""
    return os.environ.get(DATA_ENV, "").strip() or "builtin"


def parse_spec(spec: str | DataSpec) -> DataSpec:
    """Parse a spec string; the path must exist (and look like RepLab for ``replab:``)."""
    if isinstance(spec, DataSpec):
        return spec
    if not isinstance(spec, str):
        raise DataError(f"data spec must be a string, got {type(spec).__name__}; valid forms: {SPEC_FORMS}")
    text = spec.strip()
    if text == "builtin":
        return DataSpec("builtin")
    kind, sep, rest = text.partition(":")
    kind, rest = kind.strip().lower(), rest.strip()
    if not sep or kind not in ("replab", "csv") or not rest:
        raise DataError(f"unknown data spec {spec!r}; valid forms: {SPEC_FORMS}")
    labels: tuple[tuple[str, str], ...] = ()
    head, qsep, query = rest.rpartition("?")
    if kind == "csv" and qsep and query.startswith("labels=") and not Path(os.path.expanduser(rest)).exists():
        rest, labels = head.strip(), _parse_label_map(spec, query[len("labels="):])
    path = Path(os.path.abspath(os.path.expanduser(rest)))
    if kind == "replab":
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise DataError(
                f"data spec {spec!r}: {path} {what}; give the RepLab 2013 package root (the folder "
                "containing training/), e.g. replab:/data/replab2013"
            )
        _replab_layout(path)  # fail early, with a message, on a directory that is not RepLab
    else:
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise DataError(f"data spec {spec!r}: {path} {what}; give an existing .csv or .tsv file")
    return DataSpec(kind, path, labels)


def _parse_label_map(spec: str, text: str) -> tuple[tuple[str, str], ...]:
    """``0:negative,1:neutral,2:positive`` -> (("0", "negative"), ...); DataSpec checks the classes."""
    pairs = []
    for item in text.split(","):
        value, sep, label = item.partition(":")
        if not sep or not value.strip() or not label.strip():
            raise DataError(f"data spec {spec!r}: label mapping entry {item!r} is not VALUE:CLASS; e.g. {LABEL_MAP_HINT}")
        pairs.append((value.strip(), label.strip().lower()))
    return tuple(pairs)


def load(
    spec: str | DataSpec,
    split: str = "train",
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    group_split: bool = False,
) -> Dataset:
    """Load one split (``train``, ``validation``, ``test``, or ``all`` = train + validation) of a data set."""
    return _Loader(parse_spec(spec), seed, val_fraction, group_split).get(split)


def load_all(
    spec: str | DataSpec,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    group_split: bool = False,
) -> dict[str, Dataset]:
    """All available splits, reading each file once (parse cache lives only for this call)."""
    data_spec = parse_spec(spec)
    loader = _Loader(data_spec, seed, val_fraction, group_split)
    return {split: loader.get(split) for split in data_spec.available_splits}


def classes(spec: str | DataSpec) -> tuple[str, ...]:
    """The class names of a data set, in the order of a classifier's outputs (reads a csv: file once)."""
    return _Loader(parse_spec(spec), 0, 0.1, False).classes()


def check_loadable(
    spec: str | DataSpec, *, seed: int = 0, val_fraction: float = 0.1, group_split: bool = False
) -> DataSpec:
    """Raise DataError unless every available split of `spec` loads non-empty; returns the parsed spec.

    Why: a start-up check (the bench calls it before collecting tests) so that an unusable data set is one usage
    error, not the same failure once per test. It reads each file once and splits it, nothing more: no
    tokenizing, no training, no TensorFlow."""
    data_spec = parse_spec(spec)
    load_all(data_spec, seed=seed, val_fraction=val_fraction, group_split=group_split)
    return data_spec


def cross_split_duplicates(
    spec: str | DataSpec, *, seed: int = 0, val_fraction: float = 0.1, group_split: bool = False
) -> dict[str, int]:
    """How many examples of each evaluation split (validation, and test where there is one) were dropped because
    their exact text is also in the training material (see DUPLICATE_SKIP)."""
    splits = load_all(spec, seed=seed, val_fraction=val_fraction, group_split=group_split)
    return {name: int(ds.skipped.get(DUPLICATE_SKIP, 0)) for name, ds in splits.items() if name != "train"}


# ----------------------------------------------------------------------------------------------
# Loading and splitting


@dataclass(frozen=True)
class _Parsed:
    """Examples read from one source (file or RepLab split folder), before train/val splitting."""

    where: str
    examples: tuple[Example, ...]
    skipped: Mapping[str, int]
    raw_labels: frozenset[str] = frozenset()  # the label column's values as written (stripped): csv: files


class _Loader:
    """Reads sources at most once per instance; one instance serves one load()/load_all() call."""

    def __init__(self, spec: DataSpec, seed: int, val_fraction: float, group_split: bool) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise DataError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
        self.spec, self.seed = spec, int(seed)
        self.val_fraction, self.group_split = float(val_fraction), bool(group_split)
        self._parsed: dict[str, _Parsed] = {}
        self._split: tuple[np.ndarray, np.ndarray] | None = None

    def get(self, split: str) -> Dataset:
        if split not in (*SPLITS, "all"):
            raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}, all")
        name = f"{self.spec}:{split}"
        labels = self.classes()
        if split == "all":  # the whole training material, before the train/validation split
            pool = self._source("pool")
            return Dataset(name, pool.examples, pool.skipped,
                           _fingerprint(pool.examples, _with_labels({"split": "all"}, labels)), labels)
        if split == "test":
            parsed = self._source("test")
            # The whole training material (train and validation: both shape the model) is what a test text must
            # not repeat; a RepLab folder holding only the test split has none.
            seen = ({e.text for e in self._source("pool").examples} if "train" in self.spec.available_splits
                    else set())
            examples, skipped = _drop_seen(parsed.examples, parsed.skipped, seen, parsed.where, "test",
                                           "the training material (train and validation)")
            return Dataset(name, examples, skipped,
                           _fingerprint(examples, _with_labels({"split": "test"}, labels)), labels)
        pool = self._source("pool")
        train_idx, val_idx = self._split_indices(pool)
        examples = tuple(pool.examples[i] for i in (train_idx if split == "train" else val_idx))
        skipped = pool.skipped
        if split == "validation":
            examples, skipped = _drop_seen(examples, skipped, {pool.examples[i].text for i in train_idx},
                                           pool.where, "validation", "the train split")
        params = {
            "split": split,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "group_split": self.group_split,
        }
        return Dataset(name, examples, skipped, _fingerprint(examples, _with_labels(params, labels)), labels)

    def classes(self) -> tuple[str, ...]:
        """The class names: the polarity task for builtin/replab; a csv: file's own, sorted (>= 2)."""
        if self.spec.kind != "csv":
            return LABELS
        pool = self._source("pool")
        found = tuple(sorted({e.label for e in pool.examples}))
        if len(found) < 2:
            raise DataError(f"{pool.where}: needs at least 2 classes in its 'label' column, found only "
                            f"{', '.join(map(repr, found))}; a classifier needs examples of every class it predicts")
        return found

    def _source(self, which: str) -> _Parsed:
        if which not in self._parsed:
            self._parsed[which] = _require_nonempty(self._read(which))
        return self._parsed[which]

    def _read(self, which: str) -> _Parsed:
        kind, path = self.spec.kind, self.spec.path
        if kind == "builtin":
            filename = _BUILTIN_TRAIN if which == "pool" else _BUILTIN_TEST
            resource = resources.files("edgemodels").joinpath(*_BUILTIN_DIR, filename)
            try:
                data = resource.read_bytes()
            except OSError as exc:
                raise DataError(
                    f"built-in data file {'/'.join(_BUILTIN_DIR)}/{filename} is missing from the installed "
                    f"edgemodels package ({exc}); reinstall edgemodels"
                ) from exc
            return _read_labelled_table(data, f"builtin:{filename}", filename, ",", _builtin_label)
        assert path is not None
        if kind == "csv":
            if which == "test":
                raise DataError(
                    f"csv:{path} has no test split; use split 'validation' (a seeded split of that file), "
                    "or give the held-out file as a second csv: spec and load its 'train' split"
                )
            to_label = _mapped_label(dict(self.spec.labels)) if self.spec.labels else _user_label
            parsed = _read_labelled_table(_read_bytes(path), str(path), path.name, _delimiter_for(path), to_label)
            _check_mapping_used(self.spec, parsed)
            return parsed
        training, test = _replab_layout(path)
        if which == "test":
            if test is None:
                raise DataError(
                    f"the official RepLab 2013 test split is not in {path} (no test/ folder with labeled/ or "
                    "goldstandard/, tweet_info/ and texts/); download the test package and its tweet texts "
                    "into DIR/test, or evaluate on the 'validation' split"
                )
            return _read_replab_split(test)
        if training is None:
            raise DataError(
                f"{path} holds only the RepLab test split, so it has no train/validation splits; point "
                "replab: at the package root containing training/"
            )
        return _read_replab_split(training)

    def _split_indices(self, pool: _Parsed) -> tuple[np.ndarray, np.ndarray]:
        if self._split is None:
            n = len(pool.examples)
            if n < 2:
                raise DataError(f"{pool.where}: only {n} usable example(s); need at least 2 to make a validation split")
            if self.group_split:
                val = _group_pick([e.group for e in pool.examples], self.val_fraction, self.seed, pool.where)
            else:
                classes = self.classes()
                labels = _label_ids(pool.examples, classes)
                n_val = min(max(int(round(n * self.val_fraction)), 1), n - 1)
                val = _stratified_pick(labels, n_val, self.seed, len(classes))
            mask = np.zeros(n, dtype=bool)
            mask[val] = True
            self._split = (np.flatnonzero(~mask), np.flatnonzero(mask))
        return self._split


def _drop_seen(examples: tuple[Example, ...], skipped: Mapping[str, int], seen: set[str], where: str, split: str,
               seen_in: str) -> tuple[tuple[Example, ...], Mapping[str, int]]:
    """`examples` less those whose exact text is in `seen`, counted under DUPLICATE_SKIP (absent when none: the
    split, its fingerprint and its `skipped` are then what they were before duplicates were looked for)."""
    kept = tuple(e for e in examples if e.text not in seen)
    dropped = len(examples) - len(kept)
    if not dropped:
        return examples, skipped
    if not kept:
        raise DataError(f"{where}: every one of the {dropped} {split} examples has its exact text in {seen_in}, so "
                        "nothing unseen is left to evaluate on; remove the repeated rows from the file")
    return kept, {**skipped, DUPLICATE_SKIP: dropped}


def _check_mapping_used(spec: DataSpec, parsed: _Parsed) -> None:
    """A ?labels= entry whose value no row holds would be silently ignored (e.g. a mapping for numeric codes on a
    file of class names): name the values and what the file holds instead."""
    unused = [k for k, _ in spec.labels if k not in parsed.raw_labels]
    if not unused:
        return
    held = sorted(parsed.raw_labels)
    shown = ", ".join(map(repr, held[:8])) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
    fix = ("drop ?labels= (class names are read as themselves)" if all(_user_label(v) for v in held)
           else "map the values the file holds")
    raise DataError(f"data spec {str(spec)!r}: label value(s) {', '.join(map(repr, unused))} of the ?labels= mapping "
                    f"occur in no row of {parsed.where} (its 'label' column holds {shown}); {fix}")


def _require_nonempty(parsed: _Parsed) -> _Parsed:
    if not parsed.examples and not parsed.skipped:
        raise DataError(f"{parsed.where}: no data rows after the header; add labelled rows (text and label) or "
                        "point the spec at the file that holds them")
    if not parsed.examples:
        what = ", ".join(f"{reason}={count}" for reason, count in sorted(parsed.skipped.items())) or "nothing"
        raise DataError(
            f"{parsed.where}: no usable examples after filtering (skipped: {what}); check that the files hold "
            "labelled rows in the expected format (for RepLab: RELATED, EN, POSITIVE/NEUTRAL/NEGATIVE, "
            "with downloaded tweet texts)"
        )
    return parsed


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


def _group_pick(groups: Sequence[str], val_fraction: float, seed: int, where: str) -> np.ndarray:
    """Indices of whole groups (seeded order) whose total size is closest to val_fraction * n."""
    names = sorted(set(groups))
    if "" in names:
        raise DataError(
            f"{where}: group_split needs a group for every example (RepLab entities, or a 'group' column in a "
            "csv: file); this data set has ungrouped examples -- use group_split=False"
        )
    if len(names) < 2:
        raise DataError(f"{where}: group_split needs at least 2 groups, found {len(names)}; use group_split=False")
    sizes = Counter(groups)
    target = val_fraction * len(groups)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    total = 0
    for i in rng.permutation(len(names)):
        name = names[int(i)]
        if chosen and (len(chosen) == len(names) - 1 or abs(total + sizes[name] - target) >= abs(total - target)):
            break
        chosen.add(name)
        total += sizes[name]
    return np.flatnonzero(np.fromiter((g in chosen for g in groups), dtype=bool, count=len(groups)))


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


# ----------------------------------------------------------------------------------------------
# Low-level reading


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; check the path (and that the data set is complete)") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check permissions") from exc


def _decode(data: bytes, where: str, encoding: str) -> str:
    """UTF-8 (BOM optional) strictly, naming the line of bad bytes; or cp1252 with latin-1 per-line fallback."""
    if encoding == "cp1252":
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:  # a few bytes (0x81, 0x8D, ...) are unmapped in cp1252
            parts = []
            for line in data.splitlines(keepends=True):
                try:
                    parts.append(line.decode("cp1252"))
                except UnicodeDecodeError:
                    parts.append(line.decode("latin-1"))
            return "".join(parts)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where}: line {line}: bytes {data[exc.start:exc.end]!r} are not valid UTF-8; re-save the file "
            "as UTF-8 (it may be in a legacy encoding such as cp1252)"
        ) from exc


def _records(text: str, where: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, fields); the header is line 1; blank lines skipped.

    Strict: a quote must close at the end of its field (else a stray quote silently merges rows), and a
    quoted field may span lines only in comma/semicolon/pipe files (RFC 4180), never in a tab-separated one.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', strict=True)
    start = 1
    while True:
        try:
            with _field_size_limit(len(text) + 1):  # no field can be longer than the file
                row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. an unbalanced quote swallowing the rest of the file
            raise DataError(
                f"{where}: line {start}: cannot parse the row ({exc}); a double quote that opens a field must "
                "close at the end of that field: check for an unbalanced double quote and fix or delete that row"
            ) from exc
        if delimiter == "\t" and reader.line_num > start:
            raise DataError(
                f"{where}: line {start}: a quoted field runs on to line {reader.line_num}, and a tab-separated "
                "file cannot hold line breaks in a field; check for an unbalanced double quote on line "
                f"{start} and fix or delete that row"
            )
        if row:
            yield start, row
        start = reader.line_num + 1


@contextlib.contextmanager
def _field_size_limit(n: int) -> Iterator[None]:
    """The csv module's field size limit (process-wide, 128 KiB by default) raised to `n` for one read, then put
    back: a long quoted field is data, not a parse error, and no other reader in the process sees the change."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, n))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _table(
    data: bytes, where: str, *, encoding: str, delimiter: str, required: Sequence[str]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Header column map (lower-cased names) and an iterator over rows with the right field count."""
    records = _records(_decode(data, where, encoding), where, delimiter)
    first = next(records, None)
    if first is None:
        raise DataError(f"{where}: file is empty; expected a header row with columns {', '.join(required)}")
    header = [h.strip().lower() for h in first[1]]
    columns = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = [name for name in required if name not in columns]
    if missing:
        sep = "tab" if delimiter == "\t" else repr(delimiter)
        raise DataError(
            f"{where}: line 1 (header): missing column(s) {', '.join(missing)}; found {first[1]} "
            f"({sep}-separated); add a header row naming the columns {', '.join(required)}"
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line, row in records:
            if len(row) != len(header):
                raise DataError(
                    f"{where}: line {line}: malformed row with {len(row)} field(s), the header has {len(header)} "
                    f"({', '.join(header)}); fix the row (stray delimiter or quote?) or delete it"
                )
            yield line, row

    return columns, rows()


def _delimiter_for(path: Path) -> str:
    """Tab for .tsv/.tab, comma for .csv, else sniffed from the start of the file."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    head = _read_bytes(path)[:65536].decode("utf-8-sig", errors="replace")
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _builtin_label(value: str) -> str | None:
    return _BUILTIN_LABELS.get(value.strip())


def _user_label(value: str) -> str | None:
    """A class name (any name, read lower-cased); numbers are never mapped by position (see LABEL_MAP_HINT)."""
    v = value.strip()
    if not v or v.lstrip("+-").replace(".", "", 1).isdigit():
        return None
    return v.lower()


def _mapped_label(mapping: Mapping[str, str]) -> Callable[[str], str | None]:
    """The reader for a csv: file with an explicit mapping: mapped values, and class names as themselves."""
    def to_label(value: str) -> str | None:
        return mapping.get(value.strip()) or _user_label(value)

    to_label.accepted = (", ".join(f"{k} ({v})" for k, v in mapping.items())  # type: ignore[attr-defined]
                         + ", or class names (any non-numeric name)")
    return to_label


def _read_labelled_table(
    data: bytes, where: str, source_name: str, delimiter: str, to_label: Callable[[str], str | None]
) -> _Parsed:
    """A text/label table (the built-in CSVs, or a user's csv:/tsv: file)."""
    columns, rows = _table(data, where, encoding="utf-8", delimiter=delimiter, required=("text", "label"))
    t_col, l_col, g_col = columns["text"], columns["label"], columns.get("group")
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    raw_labels: set[str] = set()
    for line, row in rows:
        raw_labels.add(row[l_col].strip())
        label = to_label(row[l_col])
        if label is None:
            raw = row[l_col].strip()
            if to_label is _builtin_label:
                accepted = "0 (Bearish), 1 (Bullish), 2 (Neutral)"
            elif to_label is _user_label:
                accepted = (f"class names (any non-empty, non-numeric name, e.g. {', '.join(LABELS)}), or the values "
                            f"of an explicit mapping: {LABEL_MAP_HINT}")
                if raw.lstrip("+-").isdigit():
                    accepted += "; numeric labels are never mapped by position (codings differ between data sets)"
            else:
                accepted = getattr(to_label, "accepted", "?") + " (the spec's ?labels= mapping)"
            raise DataError(
                f"{where}: line {line}, field 'label': unknown label {row[l_col]!r}; accepted values: {accepted}; "
                "fix or delete that row"
            )
        text = row[t_col].strip()
        if not text:
            skipped["no_text"] += 1
            continue
        group = row[g_col].strip() if g_col is not None else ""
        examples.append(Example(text, label, f"{source_name}:{line}", group))
    return _Parsed(where, tuple(examples), dict(skipped), frozenset(raw_labels))


# ----------------------------------------------------------------------------------------------
# RepLab 2013


def _is_replab_split_dir(path: Path) -> bool:
    has_labels = (path / "labeled").is_dir() or (path / "goldstandard" / "goldstandard_filtering.dat").is_file()
    return has_labels and (path / "tweet_info").is_dir() and (path / "texts").is_dir()


def _replab_layout(root: Path) -> tuple[Path | None, Path | None]:
    """(training folder, test folder) for a package root, or for a training/test folder itself."""
    if (root / "training").is_dir() or (root / "test").is_dir():
        training = root / "training" if _is_replab_split_dir(root / "training") else None
        test = root / "test" if _is_replab_split_dir(root / "test") else None
        if training is None and test is None:
            _bad_replab(root)
        return training, test
    if _is_replab_split_dir(root):
        return (None, root) if root.name == "test" else (root, None)
    _bad_replab(root)


def _bad_replab(root: Path) -> NoReturn:
    raise DataError(
        f"{root}: not a RepLab 2013 directory; expected the package root containing training/ (and optionally "
        "test/), or such a folder itself, holding labeled/ (or goldstandard/), tweet_info/ and texts/ "
        "(texts/<entity>.tsv come from the official tweet text downloader)"
    )


@dataclass(frozen=True)
class _LabelRow:
    entity: str
    tweet_id: str
    filtering: str
    polarity: str
    where: str


def _replab_label_rows(split_dir: Path) -> dict[str, list[_LabelRow]]:
    """Label rows per entity, from labeled/<entity>.dat or else from the goldstandard files."""
    by_entity: dict[str, list[_LabelRow]] = {}
    labeled = split_dir / "labeled"
    if labeled.is_dir():
        files = sorted(labeled.glob("*.dat"))
        if not files:
            raise DataError(f"{labeled}: no <entity>.dat label files; copy the RepLab labeled/ files there")
        for path in files:
            columns, rows = _table(
                _read_bytes(path), str(path), encoding="cp1252", delimiter="\t",
                required=("tweet_id", "entity_id", "filtering", "polarity"),
            )
            c_id, c_ent, c_fil, c_pol = (columns[k] for k in ("tweet_id", "entity_id", "filtering", "polarity"))
            by_entity[path.stem] = [
                _LabelRow(r[c_ent].strip(), r[c_id].strip(), r[c_fil], r[c_pol], f"{path}:{line}") for line, r in rows
            ]
        return by_entity
    gold = split_dir / "goldstandard"
    filtering_path, polarity_path = gold / "goldstandard_filtering.dat", gold / "goldstandard_polarity.dat"
    polarity: dict[tuple[str, str], str] = {}
    columns, rows = _table(
        _read_bytes(polarity_path), str(polarity_path), encoding="cp1252", delimiter="\t",
        required=("entity_id", "tweet_id", "polarity"),
    )
    for _, r in rows:
        polarity[(r[columns["entity_id"]].strip(), r[columns["tweet_id"]].strip())] = r[columns["polarity"]]
    columns, rows = _table(
        _read_bytes(filtering_path), str(filtering_path), encoding="cp1252", delimiter="\t",
        required=("entity_id", "tweet_id", "filtering"),
    )
    for line, r in rows:
        key = (r[columns["entity_id"]].strip(), r[columns["tweet_id"]].strip())
        row = _LabelRow(key[0], key[1], r[columns["filtering"]], polarity.get(key, ""), f"{filtering_path}:{line}")
        by_entity.setdefault(key[0], []).append(row)
    return dict(sorted(by_entity.items()))


def _read_replab_split(split_dir: Path) -> _Parsed:
    """Join labels, tweet_info and texts on (entity_id, tweet_id) and keep the paper's polarity task rows."""
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    for entity, label_rows in _replab_label_rows(split_dir).items():
        info_path = split_dir / "tweet_info" / f"{entity}.dat"
        text_path = split_dir / "texts" / f"{entity}.tsv"
        for path, fix in (
            (info_path, "copy it from the RepLab 2013 package"),
            (text_path, "run the official tweet text downloader for this entity"),
        ):
            if not path.is_file():
                raise DataError(f"{path}: missing (labels exist for entity {entity}); {fix}")
        language: dict[tuple[str, str], str] = {}
        columns, rows = _table(
            _read_bytes(info_path), str(info_path), encoding="cp1252", delimiter="\t",
            required=("tweet_id", "entity_id", "language"),
        )
        for _, r in rows:
            language[(r[columns["entity_id"]].strip(), r[columns["tweet_id"]].strip())] = r[columns["language"]]
        texts: dict[tuple[str, str], str] = {}
        columns, rows = _table(
            _read_bytes(text_path), str(text_path), encoding="utf-8", delimiter="\t",
            required=("tweet_id", "entity_id", "text"),
        )
        for _, r in rows:
            key = (r[columns["entity_id"]].strip(), r[columns["tweet_id"]].strip())
            if not texts.get(key):  # the downloader repeats some rows; keep the first non-empty text
                texts[key] = r[columns["text"]].strip()
        seen: set[tuple[str, str]] = set()
        for row in label_rows:
            key = (row.entity, row.tweet_id)
            reason = _replab_skip_reason(row, key in seen, language.get(key), texts.get(key))
            seen.add(key)
            if reason:
                skipped[reason] += 1
                continue
            label = _REPLAB_POLARITY[row.polarity.strip().upper()]
            examples.append(Example(texts[key], label, f"{row.entity}/{row.tweet_id}", row.entity))
    return _Parsed(str(split_dir), tuple(examples), dict(skipped))


def _replab_skip_reason(row: _LabelRow, duplicate: bool, language: str | None, text: str | None) -> str:
    """Why a label row is not an example ('' = keep); the order fixes which reason a row is counted under."""
    filtering = row.filtering.strip().upper()
    if filtering != "RELATED":
        return "unrelated" if filtering == "UNRELATED" else f"filtering:{filtering or '(empty)'}"
    if duplicate:
        return "duplicate"
    if language is None:
        return "no_tweet_info"
    if language.strip().upper() != "EN":
        return f"language:{language.strip().upper() or '(empty)'}"
    polarity = row.polarity.strip().upper()
    if polarity not in _REPLAB_POLARITY:
        return f"polarity:{polarity or '(empty)'}"
    if text is None:
        return "not_in_texts"
    if not text:
        return "no_text"
    return ""
