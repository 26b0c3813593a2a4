"""Loading a data set's splits: train/validation from the training material, test from the held-out material.

Why one loader per call: it reads each source once, splits it with a seeded stratified (or group) pick, and drops
from every evaluation split the texts the model learns from (counted under DUPLICATE_SKIP), so that repeated tweets
never inflate accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from edgemodels import LABELS
from edgemodels.build.data.csvfile import _delimiter_for, _read_bytes
from edgemodels.build.data.dataset import (DataError, Dataset, Example, _fingerprint, _label_ids, _Parsed,
                                           _stratified_pick, _with_labels)
from edgemodels.build.data.labelled import (_BUILTIN_TEST, _BUILTIN_TRAIN, _mapped_label, _read_builtin,
                                            _read_labelled_table, _user_label)
from edgemodels.build.data.replab import _read_replab_split, _replab_layout
from edgemodels.build.data.spec import DataSpec, parse_spec

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DUPLICATE_SKIP = "duplicate_of_train"
"""The `skipped` reason of an evaluation example (validation, test) whose exact text is also in the material the
model learns from: dropped from the evaluation split, so that accuracy is never measured on texts seen in training."""


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
            return _read_builtin(_BUILTIN_TRAIN if which == "pool" else _BUILTIN_TEST)
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

