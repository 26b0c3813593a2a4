"""Tests for edgemodels.build.data: readers, filtering counts, splits, fingerprints and error messages.

RepLab behaviour is tested on the synthetic fixture in tests/fixtures/replab (invented ids and
texts, see make_fixtures.py); the real shared RepLab training split is checked only when present.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemodels import LABELS
from edgemodels.build import data
from edgemodels.build.data import DataError, Dataset, DataSpec, Example, load, load_all, parse_spec
from edgemodels.build.data.dataset import _fingerprint

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "replab"
REAL_REPLAB = Path(os.environ.get("EDGEMODELS_REPLAB_DIR") or REPO.parent / "shared" / "data" / "replab2013")
E901, E902 = "RL2013D99E901", "RL2013D99E902"
FIXTURE_SKIPS = {
    "unrelated": 2, "language:ES": 1, "polarity:RELATED": 1, "no_text": 1, "no_tweet_info": 1, "not_in_texts": 1,
}


def _sources(ds: Dataset) -> set[str]:
    return {e.source for e in ds.examples}


@pytest.fixture
def replab_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture, for tests that break it."""
    shutil.copytree(FIXTURE, tmp_path / "replab", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return tmp_path / "replab"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- RepLab reader (synthetic fixture)


def test_replab_fixture_join_filter_and_skip_counts() -> None:
    splits = load_all(f"replab:{FIXTURE}")
    pool = splits["train"].examples + splits["validation"].examples
    assert len(pool) == 11
    counts = {label: sum(e.label == label for e in pool) for label in LABELS}
    assert counts == {"negative": 3, "neutral": 3, "positive": 5}
    assert dict(splits["train"].skipped) == FIXTURE_SKIPS
    by_id = {e.source: e for e in pool}
    # kept rows, with provenance and entity group
    assert set(by_id) == {f"{E901}/9000000000000001{i:02d}" for i in (1, 2, 3, 8, 9)} | {
        f"{E902}/9000000000000002{i:02d}" for i in range(1, 7)
    }
    assert by_id[f"{E901}/900000000000000101"].group == E901
    assert by_id[f"{E902}/900000000000000201"].label == "positive"
    # UTF-8 with BOM, doubled quotes and a tab inside a quoted field
    assert by_id[f"{E901}/900000000000000108"].text.endswith("caf\u00e9 na\u00efve \U0001F600 fake joy")
    assert by_id[f"{E902}/900000000000000203"].text.endswith('she said "fake" twice\tthen left')
    # the texts file repeats tweet 206: it is one example, not two
    assert sum(e.source.endswith("206") for e in pool) == 1


def test_replab_test_split_and_evaluation_split() -> None:
    spec = parse_spec(f"replab:{FIXTURE}")
    assert spec.evaluation_split == "test"
    test = load(spec, "test")
    assert test.name == f"replab:{FIXTURE}:test"
    assert test.label_counts() == {"negative": 1, "neutral": 1, "positive": 1}
    assert dict(test.skipped) == {"unrelated": 1}
    assert all("9000000000000003" in s for s in _sources(test))


def test_replab_dir_can_be_the_training_or_test_folder() -> None:
    training = parse_spec(f"replab:{FIXTURE / 'training'}")
    assert training.evaluation_split == "validation"
    assert len(load(training, "train")) + len(load(training, "validation")) == 11
    with pytest.raises(DataError, match="official RepLab 2013 test split is not in"):
        load(training, "test")
    test_only = parse_spec(f"replab:{FIXTURE / 'test'}")
    assert test_only.evaluation_split == "test"
    assert len(load(test_only, "test")) == 3
    with pytest.raises(DataError, match="only the RepLab test split"):
        load(test_only, "train")
    assert set(load_all(test_only)) == {"test"}


def test_replab_missing_test_folder_error(replab_copy: Path) -> None:
    shutil.rmtree(replab_copy / "test")
    assert parse_spec(f"replab:{replab_copy}").evaluation_split == "validation"
    assert set(load_all(f"replab:{replab_copy}")) == {"train", "validation"}
    with pytest.raises(DataError, match=r"official RepLab 2013 test split is not in .*replab"):
        load(f"replab:{replab_copy}", "test")


def test_replab_goldstandard_layout_matches_labeled(replab_copy: Path) -> None:
    """The official test package has goldstandard/ instead of labeled/: both must give the same rows."""
    training = replab_copy / "training"
    gold = training / "goldstandard"
    gold.mkdir()
    filtering, polarity = [["entity_id", "tweet_id", "filtering"]], [["entity_id", "tweet_id", "polarity"]]
    for path in sorted((training / "labeled").glob("*.dat")):
        with path.open(encoding="latin-1", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                filtering.append([row["entity_id"], row["tweet_id"], row["filtering"]])
                if row["filtering"] == "RELATED":
                    polarity.append([row["entity_id"], row["tweet_id"], row["polarity"]])
    for name, rows in (("filtering", filtering), ("polarity", polarity)):
        with (gold / f"goldstandard_{name}.dat").open("w", encoding="cp1252", newline="") as f:
            csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    expected = load(f"replab:{FIXTURE}", "train")
    shutil.rmtree(training / "labeled")
    got = load(f"replab:{replab_copy}", "train")
    assert got.examples == expected.examples
    assert dict(got.skipped) == FIXTURE_SKIPS
    assert got.fingerprint == expected.fingerprint  # content-addressed: the path does not matter


def test_replab_group_split_moves_whole_entities() -> None:
    seen_val_groups = set()
    for seed in range(6):
        train = load(f"replab:{FIXTURE}", "train", seed=seed, group_split=True)
        val = load(f"replab:{FIXTURE}", "validation", seed=seed, group_split=True)
        train_groups, val_groups = {e.group for e in train.examples}, {e.group for e in val.examples}
        assert train_groups and val_groups and not train_groups & val_groups
        assert len(train) + len(val) == 11
        seen_val_groups |= val_groups
    assert seen_val_groups == {E901, E902}  # the seed decides which entity is held out


def test_replab_cp1252_dat_is_required_to_decode(replab_copy: Path) -> None:
    """The 0xE9 and 0x81 author bytes would break a UTF-8 reader; the row with 0x81 must still load."""
    raw = (replab_copy / "training" / "labeled" / f"{E901}.dat").read_bytes()
    assert b"caf\xe9_fake_fan" in raw and b"odd\x81byte_fake" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert f"{E901}/900000000000000109" in _sources(load_all(f"replab:{replab_copy}")["train"]) | _sources(
        load(f"replab:{replab_copy}", "validation")
    )


# ---------------------------------------------------------------- RepLab errors


def test_error_missing_replab_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=rf"{missing}.*does not exist.*package root"):
        parse_spec(f"replab:{missing}")


def test_error_dir_that_is_not_replab(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{tmp_path}: not a RepLab 2013 directory.*texts/"):
        parse_spec(f"replab:{tmp_path}")


def test_error_missing_texts_file_for_entity(replab_copy: Path) -> None:
    missing = replab_copy / "training" / "texts" / f"{E902}.tsv"
    missing.unlink()
    with pytest.raises(DataError, match=rf"{missing}: missing .*{E902}.*downloader"):
        load(f"replab:{replab_copy}")


def test_error_replab_missing_column(replab_copy: Path) -> None:
    path = replab_copy / "training" / "tweet_info" / f"{E901}.dat"
    path.write_bytes(path.read_bytes().replace(b'"language"', b'"lang"', 1))
    with pytest.raises(DataError, match=rf"{path}: line 1 \(header\): missing column\(s\) language"):
        load(f"replab:{replab_copy}")


def test_error_replab_malformed_row(replab_copy: Path) -> None:
    path = replab_copy / "training" / "labeled" / f"{E902}.dat"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3] + b'\t"extra"'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{path}: line 4: malformed row with 8 field\(s\), the header has 7"):
        load(f"replab:{replab_copy}")


def test_error_replab_undecodable_texts(replab_copy: Path) -> None:
    path = replab_copy / "training" / "texts" / f"{E902}.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"fake fees", b"fake \xff\xfe fees")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{path}: line 6: bytes .* not valid UTF-8; re-save"):
        load(f"replab:{replab_copy}")


def test_error_replab_empty_after_filtering(replab_copy: Path) -> None:
    for path in (replab_copy / "training" / "labeled").glob("*.dat"):
        path.write_bytes(path.read_bytes().replace(b'"RELATED"', b'"UNRELATED"'))
    with pytest.raises(DataError, match=r"no usable examples after filtering \(skipped: unrelated=18\)"):
        load(f"replab:{replab_copy}")


# ---------------------------------------------------------------- real RepLab training split


@pytest.mark.skipif(not (REAL_REPLAB / "training" / "labeled").is_dir(), reason=f"RepLab 2013 not at {REAL_REPLAB}")
def test_real_replab_training_counts() -> None:
    splits = load_all(f"replab:{REAL_REPLAB}")
    train, val = splits["train"], splits["validation"]
    assert load(f"replab:{REAL_REPLAB}", "all").label_counts() == {"positive": 15963, "neutral": 7314, "negative": 3545}
    # 142 validation tweets repeat a training tweet's exact text (seed 0): dropped from validation, counted
    assert len(train) + len(val) + val.skipped[data.DUPLICATE_SKIP] == 26822
    assert train.skipped["polarity:RELATED"] == 2
    assert not _sources(train) & _sources(val)
    assert len({e.group for e in train.examples}) == 61


# ---------------------------------------------------------------- built-in data set


def test_builtin_counts_and_mapping() -> None:
    splits = load_all("builtin")
    assert set(splits) == {"train", "validation", "test"}
    pool = {k: splits["train"].label_counts()[k] + splits["validation"].label_counts()[k] for k in LABELS}
    # sent_train.csv: 1,442 Bearish (0), 1,923 Bullish (1), 6,178 Neutral (2)
    assert pool == {"negative": 1442, "positive": 1923, "neutral": 6178}
    assert splits["test"].label_counts() == {"negative": 347, "positive": 475, "neutral": 1566}
    assert splits["test"].name == "builtin:test"
    assert splits["train"].examples[0].source.startswith("sent_train.csv:")
    first = next(e for e in splits["test"].examples if e.source == "sent_valid.csv:2")
    assert first.label == "negative"  # the first row of sent_valid.csv is labelled 0 (Bearish)
    assert parse_spec("builtin").evaluation_split == "test"


def test_builtin_ships_license_and_attribution() -> None:
    folder = REPO / "edgemodels" / "datasets" / "tweet_financial_news"
    assert "MIT License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "zeroshot/twitter-financial-news-sentiment" in readme and "MIT" in readme


def test_stratified_split_is_disjoint_deterministic_and_proportional() -> None:
    train, val = load("builtin", "train"), load("builtin", "validation")
    assert not _sources(train) & _sources(val)
    assert len(train) + len(val) == 9543
    assert len(val) == round(9543 * 0.1)
    for label in LABELS:
        pool = train.label_counts()[label] + val.label_counts()[label]
        assert abs(val.label_counts()[label] - pool * len(val) / 9543) <= 1
    again = load("builtin", "validation")
    assert again.examples == val.examples and again.fingerprint == val.fingerprint
    other = load("builtin", "validation", seed=1)
    assert _sources(other) != _sources(val)
    quarter = load("builtin", "validation", val_fraction=0.25)  # drawn before texts repeated in train are dropped
    assert len(quarter) + quarter.skipped.get(data.DUPLICATE_SKIP, 0) == round(9543 * 0.25)


def test_fingerprint_tracks_content_and_split_parameters() -> None:
    base = load(f"replab:{FIXTURE}", "train")
    fingerprints = {
        base.fingerprint,
        load(f"replab:{FIXTURE}", "train", seed=1).fingerprint,
        load(f"replab:{FIXTURE}", "train", val_fraction=0.3).fingerprint,
        load(f"replab:{FIXTURE}", "train", group_split=True).fingerprint,
        load(f"replab:{FIXTURE}", "validation").fingerprint,
    }
    assert len(fingerprints) == 5
    assert all(len(f) == 64 and int(f, 16) >= 0 for f in fingerprints)
    # same content, different split parameters: with 2 entities some seeds hold out the same entity
    by_content: dict[tuple, set[str]] = {}
    for seed in range(6):
        ds = load(f"replab:{FIXTURE}", "validation", seed=seed, group_split=True)
        by_content.setdefault(ds.examples, set()).add(ds.fingerprint)
    assert any(len(fps) > 1 for fps in by_content.values())
    assert sum(len(fps) for fps in by_content.values()) == 6
    # the test split does not depend on the train/validation settings
    assert load(f"replab:{FIXTURE}", "test", seed=3).fingerprint == load(f"replab:{FIXTURE}", "test").fingerprint
    # content: one label or one character changes it
    ex = base.examples
    relabelled = _fingerprint((Example(ex[0].text, "negative", ex[0].source),) + ex[1:], {})
    edited = _fingerprint((Example(ex[0].text + "!", ex[0].label, ex[0].source),) + ex[1:], {})
    assert len({_fingerprint(ex, {}), relabelled, edited}) == 3


def test_fingerprint_stable_across_processes() -> None:
    code = "from edgemodels.build.data import load; print(load('builtin', 'validation', seed=7).fingerprint)"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == load("builtin", "validation", seed=7).fingerprint


def test_accuracy_results_are_keyed_by_every_module_of_the_data_package(tmp_path: Path, monkeypatch) -> None:
    """Why: the data code is a package; memoised accuracy keyed by its __init__ alone would be served after a change
    to a reader or to the split, computed by other code."""
    from edgemodels.store import keys

    assert "edgemodels.build.data" in keys.ACCURACY_CODE
    source = keys.module_source("edgemodels.build.data")
    modules = sorted(Path(data.__file__).parent.glob("*.py"))
    assert {"splits.py", "csvfile.py", "replab.py"} <= {m.name for m in modules}
    assert all(m.read_bytes() in source for m in modules)
    pkg = tmp_path / "pkg_h24"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = keys.module_source("pkg_h24")
    (pkg / "sub.py").write_text("X = 2\n")
    assert keys.module_source("pkg_h24") != before


def test_dataset_helpers_and_sample() -> None:
    ds = load("builtin", "test")
    ids = ds.label_ids()
    assert ids.dtype == np.int64 and ids.shape == (2388,)
    assert [LABELS[i] for i in ids[:20]] == [e.label for e in ds.examples[:20]]
    assert ds.texts()[0] == ds.examples[0].text
    assert ds.majority_accuracy() == pytest.approx(1566 / 2388)
    s = ds.sample(100, seed=3)
    assert len(s) == 100 and s.fingerprint != ds.fingerprint
    assert s.examples == ds.sample(100, seed=3).examples
    assert s.examples != ds.sample(100, seed=4).examples
    assert _sources(s) <= _sources(ds)
    for label in LABELS:  # stratified: within one of the exact proportion
        assert abs(s.label_counts()[label] - 100 * ds.label_counts()[label] / len(ds)) <= 1
    assert ds.sample(10_000) is ds
    with pytest.raises(DataError, match="positive integer"):
        ds.sample(0)


def test_dataset_rejects_unknown_labels_and_counts_all_labels() -> None:
    ds = Dataset("x", (Example("a fake text", "positive", "x:2"),))
    assert ds.label_counts() == {"negative": 0, "neutral": 0, "positive": 1}
    with pytest.raises(DataError, match="label 'happy'"):
        Dataset("x", (Example("a fake text", "happy", "x:2"),))


# ---------------------------------------------------------------- csv: reader


def test_csv_reader_names_mapping_and_tsv(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'Label,TEXT\nPositive,"fake, good"\n0,fake bad\nneutral,fake meh\n2,fake yay\n')
    splits = load_all(f"csv:{f}?labels=0:negative,2:positive", val_fraction=0.25)
    ds = splits["train"].examples + splits["validation"].examples
    by_source = {e.source: e for e in ds}
    assert {k: v.label for k, v in by_source.items()} == {
        "d.csv:2": "positive", "d.csv:3": "negative", "d.csv:4": "neutral", "d.csv:5": "positive",
    }
    assert by_source["d.csv:2"].text == "fake, good"
    t = _write(tmp_path / "d.tsv", "text\tlabel\nfake, with comma\tnegative\nfake two\tpositive\n")
    assert {e.text for e in load_all(f"csv:{t}")["train"].examples + load(f"csv:{t}", "validation").examples} == {
        "fake, with comma", "fake two",
    }
    sniffed = _write(tmp_path / "d.txt", "text;label\nfake one;negative\nfake two;positive\nfake three;neutral\n")
    assert len(load(f"csv:{sniffed}")) + len(load(f"csv:{sniffed}", "validation")) == 3


def test_csv_spec_round_trip_and_no_test_split(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "text,label\nfake a,negative\nfake b,neutral\nfake c,positive\n")
    spec = parse_spec(f"csv:{f}")
    assert spec == DataSpec("csv", f) and str(spec) == f"csv:{f}" and parse_spec(str(spec)) == spec
    assert spec.evaluation_split == "validation"
    assert set(load_all(spec)) == {"train", "validation"}
    assert load(spec, "validation").name == f"csv:{f}:validation"
    with pytest.raises(DataError, match="has no test split"):
        load(spec, "test")


def test_csv_group_column_enables_group_split(tmp_path: Path) -> None:
    rows = "".join(f"fake text {i},{LABELS[i % 3]},g{i % 4}\n" for i in range(40))
    f = _write(tmp_path / "g.csv", "text,label,group\n" + rows)
    train, val = load(f"csv:{f}", group_split=True), load(f"csv:{f}", "validation", group_split=True)
    assert not {e.group for e in train.examples} & {e.group for e in val.examples}
    with pytest.raises(DataError, match="group_split needs a group for every example"):
        load("builtin", group_split=True)


def test_error_csv_unknown_label(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "text,label\nfake a,positive\nfake b,\n")
    with pytest.raises(DataError, match=rf"{f}: line 3, field 'label': unknown label ''; accepted values: "
                       r"class names .*csv:FILE\?labels=0:negative"):
        load(f"csv:{f}")


def test_csv_classes_come_from_the_data(tmp_path: Path) -> None:
    """Any names, >= 2 classes, sorted (row order does not change the output order), carried by every split."""
    rows = "".join(f"fake text {i},{('Sports', 'politics', 'tech')[i % 3]}\n" for i in range(30))
    f = _write(tmp_path / "topics.csv", "text,label\n" + rows)
    splits = load_all(f"csv:{f}", val_fraction=0.2)
    assert splits["train"].labels == splits["validation"].labels == ("politics", "sports", "tech")
    assert splits["validation"].label_counts() == {"politics": 2, "sports": 2, "tech": 2}  # stratified over 3
    assert splits["train"].sample(6).labels == ("politics", "sports", "tech")
    assert sorted(set(splits["train"].label_ids())) == [0, 1, 2]
    two = _write(tmp_path / "two.csv", "text,label\n" + "".join(f"fake {i},{'ham' if i % 2 else 'spam'}\n"
                                                            for i in range(10)))
    assert load(f"csv:{two}").labels == ("ham", "spam")
    assert load(f"csv:{two}", "all").majority_accuracy() == 0.5
    one = _write(tmp_path / "one.csv", "text,label\nfake a,spam\nfake b,spam\n")
    with pytest.raises(DataError, match=r"one.csv: needs at least 2 classes .* found only 'spam'"):
        load(f"csv:{one}")
    # the polarity task's fingerprints are untouched by the classes field (cache keys of existing builds)
    polar = _write(tmp_path / "p.csv", "text,label\nfake a,negative\nfake b,neutral\nfake c,positive\n")
    ds = load(f"csv:{polar}", "all")
    assert ds.labels == LABELS
    assert ds.fingerprint == _fingerprint(ds.examples, {"split": "all"})
    topics = load(f"csv:{f}", "all")
    assert topics.fingerprint != _fingerprint(topics.examples, {"split": "all"})


def test_error_csv_missing_column(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "sentence,label\nfake a,positive\n")
    with pytest.raises(DataError, match=rf"{f}: line 1 \(header\): missing column\(s\) text; found"):
        load(f"csv:{f}")


def test_error_csv_malformed_row_line_counts_multiline_fields(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'text,label\n"fake\nmulti-line",positive\nfake b,neutral,extra\n')
    with pytest.raises(DataError, match=rf"{f}: line 4: malformed row with 3 field\(s\)"):
        load(f"csv:{f}")


def test_error_csv_undecodable_bytes(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\nfake a,positive\nfake caf\xe9,neutral\n")
    with pytest.raises(DataError, match=rf"{f}: line 3: bytes b'\\xe9.*not valid UTF-8"):
        load(f"csv:{f}")


def test_error_csv_empty_after_filtering(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'text,label\n"",positive\n"  ",neutral\n')
    with pytest.raises(DataError, match=r"no usable examples after filtering \(skipped: no_text=2\)"):
        load(f"csv:{f}")


def test_error_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{tmp_path / 'missing.csv'} does not exist"):
        parse_spec(f"csv:{tmp_path / 'missing.csv'}")


# ---------------------------------------------------------------- specs and arguments


@pytest.mark.parametrize("bad", ["", "replab", "replab:", "hf:foo", "builtin:train", "/some/dir"])
def test_error_bad_spec_lists_valid_forms(bad: str) -> None:
    with pytest.raises(DataError, match=r"valid forms: 'builtin'.*'replab:DIR'.*'csv:FILE'"):
        parse_spec(bad)


def test_spec_round_trip_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("builtin", f"replab:{FIXTURE}"):
        assert str(parse_spec(text)) == text and parse_spec(str(parse_spec(text))) == parse_spec(text)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.default_spec() == "builtin"
    monkeypatch.setenv(data.DATA_ENV, f"replab:{FIXTURE}")
    assert data.default_spec() == f"replab:{FIXTURE}"


def test_error_bad_split_and_parameters() -> None:
    with pytest.raises(DataError, match="unknown split 'dev'; valid splits: train, validation, test"):
        load("builtin", "dev")
    with pytest.raises(DataError, match="val_fraction"):
        load("builtin", val_fraction=1.0)
    with pytest.raises(DataError, match="seed"):
        load("builtin", seed=-1)


# ---------------------------------------------------------------- issue 10: strict parsing, numeric labels


def test_unbalanced_quote_is_an_error_naming_its_line_not_a_merged_row(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'text,label\n"a",positive\n"oops,negative\n"d",positive\n"e",negative\n')
    with pytest.raises(DataError, match=rf"{f}: line 3: cannot parse the row .*unbalanced double quote"):
        load(f"csv:{f}")
    last = _write(tmp_path / "last.csv", 'text,label\n"a",positive\nb,neutral\n"oops,negative\n')  # runs to EOF
    with pytest.raises(DataError, match=rf"{last}: line 4: cannot parse the row"):
        load(f"csv:{last}")


def test_tsv_field_spanning_lines_is_an_error_csv_one_is_not(tmp_path: Path) -> None:
    t = _write(tmp_path / "d.tsv", 'text\tlabel\n"fake a\tpositive\nfake b"\tnegative\nfake c\tneutral\n')
    with pytest.raises(DataError, match=rf"{t}: line 2: a quoted field runs on to line 3, and a tab-separated"):
        load(f"csv:{t}")
    c = _write(tmp_path / "d.csv", 'text,label\n"fake\nmulti-line",positive\nfake b,neutral\nfake c,negative\n')
    assert "fake\nmulti-line" in {e.text for e in load(f"csv:{c}", "all").examples}  # RFC 4180 allows it


_CELL = st.text(alphabet='ab ,"x', min_size=1, max_size=8).filter(lambda t: t.strip() != "")


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(_CELL, min_size=2, max_size=6), which=st.data())
def test_property_dropping_a_closing_quote_is_always_caught_at_its_line(tmp_path_factory, texts, which) -> None:
    """Any well-formed file parses back exactly; remove one field's closing quote and the reader names that line."""
    labels = [LABELS[i % 3] for i in range(len(texts))]
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["text", "label"])
    w.writerows(zip(texts, labels))
    good = tmp_path_factory.mktemp("prop") / "d.csv"
    good.write_text(buf.getvalue(), encoding="utf-8")
    got = load(f"csv:{good}", "all").examples
    assert [(e.text, e.label) for e in got] == [(t.strip(), lab) for t, lab in zip(texts, labels)]
    i = which.draw(st.integers(0, len(texts) - 1))
    lines = buf.getvalue().split("\n")
    row = lines[i + 1]
    cut = row.index('",')  # the text field's closing quote (QUOTE_ALL doubles any quote inside the text)
    lines[i + 1] = row[:cut] + row[cut + 1:]
    bad = good.with_name("bad.csv")
    bad.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}: line {i + 2}: "):
        load(f"csv:{bad}", "all")


def test_numeric_labels_are_never_mapped_by_position(tmp_path: Path) -> None:
    # sent_valid.csv's coding (1 = Bullish = positive, 2 = Neutral) read as a user's csv: used to swap classes
    f = _write(tmp_path / "d.csv", "text,label\nfake up,1\nfake flat,2\nfake down,0\n")
    with pytest.raises(DataError, match=rf"{f}: line 2, field 'label': unknown label '1'.*never mapped by position"):
        load(f"csv:{f}")
    spec = parse_spec(f"csv:{f}?labels=0:negative,1:positive,2:neutral")
    assert spec.labels == (("0", "negative"), ("1", "positive"), ("2", "neutral"))
    assert parse_spec(str(spec)) == spec and str(spec).endswith("?labels=0:negative,1:positive,2:neutral")
    got = {e.text: e.label for e in load(spec, "all").examples}
    assert got == {"fake up": "positive", "fake flat": "neutral", "fake down": "negative"}
    assert spec.label_mapping == {"0": "negative", "1": "positive", "2": "neutral"}
    assert "explicit mapping" in spec.label_rule and "not mapped by position" in parse_spec(f"csv:{f}").label_rule
    builtin = load_all("builtin")
    train_csv = REPO / "edgemodels" / "datasets" / "tweet_financial_news" / "sent_train.csv"
    shipped = parse_spec(f"csv:{train_csv}?labels=0:negative,1:positive,2:neutral")
    assert load(shipped, "all").label_counts() == {
        k: builtin["train"].label_counts()[k] + builtin["validation"].label_counts()[k] for k in LABELS}


@pytest.mark.parametrize("bad, needle", [
    ("?labels=0:negative,0:positive", "distinct VALUE"),
    ("?labels=0:", "is not VALUE:CLASS"),
    ("?labels=0-negative", "is not VALUE:CLASS"),
])
def test_bad_label_mapping_is_an_error(tmp_path: Path, bad: str, needle: str) -> None:
    f = _write(tmp_path / "d.csv", "text,label\nfake,0\n")
    with pytest.raises(DataError, match=needle):
        parse_spec(f"csv:{f}{bad}")


def test_builtin_and_replab_fingerprints_unchanged_by_issue_10() -> None:
    """Cache keys of existing artifacts hash these: strict parsing must not change what they read."""
    assert load("builtin", "all").fingerprint == "8e585de6ac96327bfaa3fd825ed2ee374312982bff148642ff347a1376482a04"
    assert load("builtin", "test").fingerprint == "130639d7099a4db6654c543acf3ca650895a690f68489cea17d1666133bedeba"
    assert parse_spec("builtin").label_mapping == {"0": "negative", "1": "positive", "2": "neutral"}


# ---------------------------------------------------------------- issue 23: cross-split duplicates, label mapping,
# long fields, start-up check


def _dup_csv(path: Path) -> Path:
    """40 distinct rows, then 6 of them repeated 4 times each: repeated texts land in train and validation."""
    rows = [(f"fake row {i} " + ("up" if i % 2 else "down"), ("positive", "negative")[i % 2]) for i in range(40)]
    rows += [rows[i] for i in range(6) for _ in range(4)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("text", "label"), *rows])
    return _write(path, buf.getvalue())


def test_validation_texts_repeated_from_train_are_dropped_and_counted(tmp_path: Path) -> None:
    spec = f"csv:{_dup_csv(tmp_path / 'dup.csv')}"
    pool, train, val = load(spec, "all"), load(spec, "train"), load(spec, "validation")
    dropped = val.skipped[data.DUPLICATE_SKIP]
    assert dropped > 0 and "duplicate_of_train" not in train.skipped
    assert not {e.text for e in train.examples} & {e.text for e in val.examples}
    assert len(train) + len(val) + dropped == len(pool) == 64
    assert data.cross_split_duplicates(spec) == {"validation": dropped}


def test_test_texts_repeated_from_the_training_material_are_dropped(replab_copy: Path) -> None:
    texts = replab_copy / "test" / "texts" / f"{E901}.tsv"
    texts.write_bytes(texts.read_bytes().replace(b"Synthetic fixture test tweet 301: fake praise",
                                                 b"Synthetic fixture tweet 101: the fake widget is great"))
    test = load(f"replab:{replab_copy}", "test")
    assert test.skipped[data.DUPLICATE_SKIP] == 1 and len(test) == 2
    assert "Synthetic fixture tweet 101: the fake widget is great" not in test.texts()
    assert data.cross_split_duplicates(f"replab:{replab_copy}") == {"validation": 0, "test": 1}


def test_data_with_no_cross_split_duplicates_keeps_its_fingerprints() -> None:
    """Cache keys hash these (trained entries: train and validation): looking for duplicates must not move them."""
    assert data.cross_split_duplicates("builtin") == {"validation": 0, "test": 0}
    assert load("builtin", "train").fingerprint == "6b5d18c7bb0b4a76ba0d3f00778cae24ca36680e565160763ef5d8a8238d0e70"
    val = load("builtin", "validation")
    assert val.fingerprint == "a182879dcb7188bce70b29de66434dd874e3b17b43587a390163e7c8e7027eb0"
    assert data.DUPLICATE_SKIP not in val.skipped


def test_a_file_that_only_repeats_its_rows_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"fake text {i},{('a', 'b')[i % 2]}\n" for i in range(10)) * 3
    f = _write(tmp_path / "d.csv", "text,label\n" + rows)
    with pytest.raises(DataError, match=rf"{f}: every one of the \d+ validation examples has its exact text in the "
                                        "train split.*remove the repeated rows"):
        load(f"csv:{f}", "validation")


def test_a_label_mapping_whose_values_no_row_holds_is_an_error(tmp_path: Path) -> None:
    names = _write(tmp_path / "names.csv", "text,label\nfake a,pos\nfake b,neg\n")
    with pytest.raises(DataError, match=r"label value\(s\) '0', '1' of the \?labels= mapping occur in no row of "
                                        rf"{names} \(its 'label' column holds 'neg', 'pos'\); drop \?labels="):
        load(f"csv:{names}?labels=0:a,1:b", "all")
    codes = _write(tmp_path / "codes.csv", "text,label\nfake a,0\nfake b,1\n")
    with pytest.raises(DataError, match=r"label value\(s\) '2' .*map the values the file holds"):
        load(f"csv:{codes}?labels=0:neg,1:pos,2:neu", "all")
    assert load(f"csv:{codes}?labels=0:neg,1:pos", "all").labels == ("neg", "pos")


def test_a_megabyte_quoted_field_is_read_not_blamed_on_a_quote(tmp_path: Path) -> None:
    long_text = 'a "quoted" word, ' + "x" * 1_000_000
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("text", "label"), (long_text, "positive"), ("fake b", "negative")])
    f = _write(tmp_path / "big.csv", buf.getvalue())
    limit = csv.field_size_limit()
    assert long_text in load(f"csv:{f}", "all").texts()
    assert csv.field_size_limit() == limit  # raised for the read only: the process-wide limit is put back
    broken = _write(tmp_path / "broken.csv", buf.getvalue().replace('"a ""quoted""', '"a ""quoted"'))
    with pytest.raises(DataError, match=rf"{broken}: line 2: .*unbalanced double quote"):
        load(f"csv:{broken}", "all")


def test_check_loadable_is_one_error_for_an_unusable_file_and_cheap_for_good_ones(tmp_path: Path) -> None:
    header_only = _write(tmp_path / "empty.csv", "text,label\n")
    with pytest.raises(DataError, match=rf"{header_only}: no data rows after the header"):
        data.check_loadable(f"csv:{header_only}")
    one_class = _write(tmp_path / "one.csv", "text,label\nfake a,pos\nfake b,pos\n")
    with pytest.raises(DataError, match="needs at least 2 classes"):
        data.check_loadable(f"csv:{one_class}")
    assert data.check_loadable("builtin") == parse_spec("builtin")
    # reads and splits only: no tokenizer, no TensorFlow (the bench calls it before collecting tests)
    code = ("import sys; from edgemodels.build import data; data.check_loadable('builtin'); "
            "print(sorted(m for m in ('tensorflow', 'transformers', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.skipif(not (REAL_REPLAB / "training" / "labeled").is_dir(), reason=f"RepLab 2013 not at {REAL_REPLAB}")
def test_real_replab_cross_split_duplicates() -> None:
    """RepLab repeats tweets (retweets, copies across entities): 142 of the seed-0 validation split are in train."""
    assert data.cross_split_duplicates(f"replab:{REAL_REPLAB}") == {"validation": 142}
    assert data.check_loadable(f"replab:{REAL_REPLAB}").kind == "replab"
