"""Text/label tables: the built-in finance-tweet set and a user's csv:/tsv: file, each with its label coding.

Why the codings are here: the built-in set codes 1 = positive, other sets 1 = neutral, so numbers are never mapped
by position; a user's file holds class names, or numbers with an explicit ``?labels=`` mapping (LABEL_MAP_HINT).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from importlib import resources

from edgemodels import LABELS
from edgemodels.build.data.csvfile import _table
from edgemodels.build.data.dataset import DataError, Example, _Parsed

LABEL_MAP_HINT = "csv:FILE?labels=0:negative,1:neutral,2:positive (your file's coding)"

# zeroshot/twitter-financial-news-sentiment: 0 Bearish, 1 Bullish, 2 Neutral.
_BUILTIN_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}
_BUILTIN_DIR = ("datasets", "tweet_financial_news")
_BUILTIN_TRAIN, _BUILTIN_TEST = "sent_train.csv", "sent_valid.csv"


def _read_builtin(filename: str) -> _Parsed:
    """One CSV of the built-in set, read from the installed package."""
    resource = resources.files("edgemodels").joinpath(*_BUILTIN_DIR, filename)
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise DataError(
            f"built-in data file {'/'.join(_BUILTIN_DIR)}/{filename} is missing from the installed "
            f"edgemodels package ({exc}); reinstall edgemodels"
        ) from exc
    return _read_labelled_table(data, f"builtin:{filename}", filename, ",", _builtin_label)


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

