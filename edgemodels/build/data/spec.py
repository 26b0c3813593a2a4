"""Data specs: the strings users type (``builtin``, ``replab:DIR``, ``csv:FILE[?labels=...]``) as a `DataSpec`.

Why parsing checks the path: a misspelt ``--data`` is one usage error at start-up, naming the form expected, not a
failure deep in a build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgemodels.build.data.dataset import DataError
from edgemodels.build.data.labelled import _BUILTIN_LABELS, LABEL_MAP_HINT
from edgemodels.build.data.replab import _REPLAB_POLARITY, _replab_layout

DATA_ENV = "EDGEMODELS_DATA"
"""Environment variable holding the default data spec (else ``builtin``)."""

KINDS: tuple[str, ...] = ("builtin", "replab", "csv")
SPEC_FORMS = (
    "'builtin' (shipped finance-tweet set), "
    "'replab:DIR' (RepLab 2013 package root containing training/, or its training/ or test/ folder), "
    "'csv:FILE' (a .csv or .tsv file with 'text' and 'label' columns holding class names; numeric labels need "
    "a mapping: "
    "'csv:FILE?labels=0:negative,1:neutral,2:positive')"
)


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

