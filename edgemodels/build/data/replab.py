"""RepLab 2013 in its official layout: labels, tweet_info and downloaded texts joined per entity.

Why a reader of the package as distributed (not a converted CSV): tweet texts are never shipped, so users point
``replab:DIR`` at their own copy; the polarity task keeps RELATED, English rows with a polarity and a text, and
every other row is counted under the reason it was dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from edgemodels.build.data.csvfile import _read_bytes, _table
from edgemodels.build.data.dataset import DataError, Example, _Parsed

_REPLAB_POLARITY = {"NEGATIVE": "negative", "NEUTRAL": "neutral", "POSITIVE": "positive"}


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
