"""Tests for edgemodels.report: table, JSON, PNG, baselines and regression gating (all synthetic)."""

from __future__ import annotations

import json
import math
import re

import pytest

from edgemodels.report import (
    Claim,
    Regression,
    Report,
    Row,
    Thresholds,
    baseline_path,
    claims_table,
    compare_baseline,
    format_regressions,
    machine_id,
    machine_info,
    save_baseline,
    write_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MID = "x86_64-2c-24g-deadbeef"


def _report(device: str = "pi4") -> Report:
    rep = Report(device, {"cpu_model": "synthetic", "cores_logical": 2})
    r = rep.row("minilm-l6", "drq")
    r.size_bytes, r.ratio, r.accuracy, r.accuracy_drop = 23_456_789, 12.34, 0.8123, 0.4
    r.inferences_per_s, r.p90_ms, r.method, r.threads = 12.5, 81.2, "measured", 4
    r.runtime, r.runtime_version = "ai-edge-litert", "2.3.0"
    f = rep.row("minilm-l6", "fp32")
    f.size_bytes, f.ratio, f.accuracy = 90_000_000, 3.2, 0.8163
    f.inferences_per_s, f.method = 0.42, "projected"
    return rep


# -- table ------------------------------------------------------------------------------------------


def test_table_labels_and_formatting():
    text = _report().table()
    assert "12.5 (measured)" in text
    assert "0.420 (projected)" in text
    assert "23.46" in text and "12.3x" in text and "81.2%" in text
    assert "ai-edge-litert 2.3.0" in text
    assert "projected = estimated" in text  # footnote explains the label


def test_table_omits_empty_columns():
    rep = Report("desktop", {})
    rep.row("m", "drq").accuracy = 0.5
    header = [c.strip() for c in rep.table().splitlines()[0].split("|")]
    assert "acc" in header
    for absent in ("size MB", "inf/s", "device runtime", "peak MB", "runtime", "fits", "notes"):
        assert absent not in header, absent
    rep.row("m", "drq").arm_loads = True
    rep.row("m", "drq").arm_max_abs_diff = 1.5e-5
    rep.row("m", "drq").arm_method = "emulated ARM (qemu, cortex-a72)"
    text = rep.table()
    assert "device runtime" in text.splitlines()[0] and "max abs diff 1.5e-05" in text
    assert "emulated ARM (qemu, cortex-a72)" in text


def test_table_arm_failure_and_not_pretrained_flag():
    rep = Report("pi3", {})
    r = rep.row("bert-large", "fp32")
    r.arm_loads, r.arm_error, r.pretrained = False, "Illegal instruction\nRegistration failed.\n", False
    text = rep.table()
    assert "FAILS: Illegal instruction Registration failed." in text
    assert len(text.splitlines()[2].split("|")) == len(text.splitlines()[0].split("|"))
    assert "bert-large†" in text and "not initialised from pretrained" in text


def test_rows_sorted_and_get_or_create():
    rep = Report("d", {})
    b = rep.row("b", "drq", "256")
    rep.row("a", "fp32")
    rep.row("b", "drq", "64")
    assert rep.row("b", "drq", 256) is b  # int seq accepted, same row
    assert [(r.model, r.mode, r.seq) for r in rep.rows()] == [
        ("a", "fp32", "128"), ("b", "drq", "64"), ("b", "drq", "256")]
    with pytest.raises(ValueError, match="model"):
        rep.row("", "drq")


@pytest.mark.parametrize("field", ["inferences_per_s", "p90_ms"])
def test_unlabeled_speed_figure_raises(field, tmp_path):
    rep = Report("pi3", {})
    setattr(rep.row("m", "drq"), field, 3.0)
    for call in (rep.table, rep.to_json, lambda: rep.write(tmp_path),
                 lambda: save_baseline(rep, tmp_path, MID)):
        with pytest.raises(ValueError, match="speed figure without measured/projected label"):
            call()
    assert not (tmp_path / "report.json").exists()  # nothing half-written


def test_bad_method_raises():
    rep = Report("pi3", {})
    r = rep.row("m", "drq")
    r.inferences_per_s, r.method = 3.0, "estimated"
    with pytest.raises(ValueError, match="measured"):
        rep.table()


def test_claims_table():
    text = claims_table([
        Claim("BERT-Large too slow on Pi 3", "<1 inf/s", "0.05 inf/s (projected)", "median", True),
        Claim("RAM fits", "yes", "not measurable: no device", "peak RSS", None),
        Claim("drop < 1 pt", "0.8 pt", "2.1 pt", "acc fp32 - acc drq", False),
    ])
    assert "holds" in text and "n/a" in text and "DOES NOT HOLD" in text
    assert "not measurable: no device" in text


# -- JSON / files -----------------------------------------------------------------------------------


def test_to_json_schema_and_nan():
    rep = _report()
    rep.row("minilm-l6", "drq").macro_f1 = float("nan")
    rep.add_claim(Claim("c", "p", "o", "d", None))
    doc = rep.to_json()
    assert set(doc) >= {"device", "machine", "created", "rows", "claims"}
    assert doc["device"] == "pi4" and doc["machine"]["cpu_model"] == "synthetic"
    assert re.match(r"\d{4}-\d\d-\d\dT", doc["created"])
    for row in doc["rows"]:
        for key in ("device", "model", "mode", "seq", "method", "inferences_per_s", "size_bytes",
                    "accuracy", "notes"):
            assert key in row
    drq = next(r for r in doc["rows"] if r["mode"] == "drq")
    assert drq["macro_f1"] is None
    assert doc["claims"][0]["holds"] is None
    json.dumps(doc, allow_nan=False)  # strictly valid JSON


def test_write_json_and_png(tmp_path):
    rep = _report()
    rep.row("tiny", "drq", "64").accuracy = 0.6  # accuracy without size: not in the scatter
    paths = rep.write(tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.png"]
    doc = json.loads(paths[0].read_text())
    assert len(doc["rows"]) == 3
    data = paths[1].read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_png_without_data(tmp_path):
    path = tmp_path / "empty.png"
    write_png([Row("pi3", "m", "drq")], path, "pi3")
    assert path.read_bytes()[:8] == PNG_MAGIC


# -- baselines --------------------------------------------------------------------------------------


def _one(acc: float | None = 0.80, size: int | None = 1_000_000, ips: float | None = 10.0,
         method: str = "measured", device: str = "pi4") -> Report:
    rep = Report(device, {})
    r = rep.row("minilm-l6", "drq")
    r.accuracy, r.size_bytes, r.inferences_per_s = acc, size, ips
    r.method = method if ips is not None else None
    return rep


def test_baseline_round_trip(tmp_path):
    path = save_baseline(_report(), tmp_path, MID)
    assert path == baseline_path(tmp_path, "pi4") == tmp_path / "pi4.json"
    stored = json.loads(path.read_text())
    assert {r["mode"] for r in stored["rows"]} == {"drq", "fp32"}
    assert all(r["machine_id"] == MID for r in stored["rows"])
    regs, notes = compare_baseline(_report(), tmp_path, MID)
    assert regs == [] and notes == []


def test_missing_baseline_is_a_note(tmp_path):
    regs, notes = compare_baseline(_one(), tmp_path, MID)
    assert regs == [] and "missing" in notes[0] and "pi4.json" in notes[0]


@pytest.mark.parametrize("acc, fails", [(0.80 - 0.006, True), (0.80 - 0.004, False),
                                        (0.80 - 0.005, False)])
def test_accuracy_gate(tmp_path, acc, fails):
    save_baseline(_one(acc=0.80), tmp_path, MID)
    regs, _ = compare_baseline(_one(acc=acc), tmp_path, MID)
    assert [r.metric for r in regs] == (["accuracy"] if fails else [])


@pytest.mark.parametrize("size, fails", [(1_030_000, True), (1_015_000, False), (900_000, False)])
def test_size_gate(tmp_path, size, fails):
    save_baseline(_one(size=1_000_000), tmp_path, MID)
    regs, _ = compare_baseline(_one(size=size), tmp_path, MID)
    assert [r.metric for r in regs] == (["size"] if fails else [])


def test_throughput_gate_same_machine(tmp_path):
    save_baseline(_one(ips=10.0), tmp_path, MID)
    regs, _ = compare_baseline(_one(ips=8.9), tmp_path, MID)
    assert [r.metric for r in regs] == ["throughput"]
    regs, _ = compare_baseline(_one(ips=9.1), tmp_path, MID)
    assert regs == []


def test_throughput_other_machine_or_method_is_a_note(tmp_path):
    save_baseline(_one(ips=10.0), tmp_path, MID)
    regs, notes = compare_baseline(_one(ips=8.9), tmp_path, "aarch64-4c-4g-01234567")
    assert regs == []
    assert any("throughput not compared" in n and MID in n for n in notes)
    regs, notes = compare_baseline(_one(ips=1.0, method="projected"), tmp_path, MID)
    assert regs == [] and any("baseline is measured" in n for n in notes)


def test_custom_thresholds(tmp_path):
    save_baseline(_one(acc=0.80), tmp_path, MID)
    regs, _ = compare_baseline(_one(acc=0.796), tmp_path, MID, Thresholds(accuracy_drop_pts=0.2))
    assert [r.metric for r in regs] == ["accuracy"]


def test_save_baseline_merges(tmp_path):
    save_baseline(_report(), tmp_path, MID)
    partial = Report("pi4", {})
    r = partial.row("minilm-l6", "drq")
    r.accuracy = 0.70  # this run measured accuracy only
    partial.row("new", "drq").size_bytes = 5
    save_baseline(partial, tmp_path, "other-machine")
    rows = {(r["model"], r["mode"]): r for r in json.loads(baseline_path(tmp_path, "pi4").read_text())["rows"]}
    assert set(rows) == {("minilm-l6", "drq"), ("minilm-l6", "fp32"), ("new", "drq")}
    drq = rows[("minilm-l6", "drq")]
    assert drq["accuracy"] == 0.70 and drq["size_bytes"] == 23_456_789
    assert drq["inferences_per_s"] == 12.5 and drq["machine_id"] == MID  # kept with its own host


def test_rows_not_in_baseline_and_unmeasured_are_notes(tmp_path):
    save_baseline(_one(), tmp_path, MID)
    rep = _one(acc=None)
    rep.row("other", "fp32").accuracy = 0.5
    regs, notes = compare_baseline(rep, tmp_path, MID)
    assert regs == []
    assert any("other/fp32 seq=128: not in baseline" in n for n in notes)
    assert any("accuracy in baseline but not measured" in n for n in notes)


def test_corrupt_baseline_names_file(tmp_path):
    baseline_path(tmp_path, "pi4").write_text("{not json")
    with pytest.raises(ValueError, match=r"pi4\.json.*save_baseline"):
        compare_baseline(_one(), tmp_path, MID)


def test_format_regressions():
    reg = Regression("minilm-l6", "drq", "128", "accuracy", 0.8123, 0.7901, "-0.5 pt")
    assert str(reg) == "minilm-l6/drq seq=128: accuracy 0.8123 -> 0.7901 (-2.22 pt; limit -0.5 pt)"
    size = Regression("m", "fp32", "128", "size", 1_000_000, 1_030_000, "+2.0%")
    assert str(size) == "m/fp32 seq=128: size 1.000 MB -> 1.030 MB (+3.00%; limit +2.0%)"
    text = format_regressions([reg, size])
    lines = text.splitlines()
    assert lines[0] == "2 regression(s) against the baseline:"
    assert lines[1].strip() == f"- {reg}"
    assert "No regressions" in format_regressions([])


# -- host identity ----------------------------------------------------------------------------------


def test_machine_id_and_info():
    mid = machine_id()
    assert mid == machine_id()
    assert re.fullmatch(r"[\w.-]+-\d+c-\d+g-[0-9a-f]{8}", mid)
    info = machine_info()
    assert info["machine_id"] == mid
    assert info["ram_bytes"] > 0 and info["cores_logical"] >= 1 and info["cpu_model"]
    assert not math.isnan(float(info["ram_bytes"]))
