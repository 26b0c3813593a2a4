"""Tests for edgemodels.report: table, JSON, PNG, baselines and regression gating (all synthetic)."""

from __future__ import annotations

import json
import math
import re

import pytest

from edgemodels.report.claims import load_claims
from edgemodels.report.gate import (BaselineMissing, Regression, baseline_path, compare_baseline, format_regressions,
                                    save_baseline)
from edgemodels.report.machine import machine_id, machine_info
from edgemodels.report.plots import write_png
from edgemodels.report.rows import Claim, Report, Row
from edgemodels.report.tables import claims_table, merged_claims_table, rows_table
from edgemodels.study.criteria import Thresholds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MID = "x86_64-2c-24g-deadbeef"


def _report(device: str = "pi4") -> Report:
    rep = Report(device, {"cpu_model": "synthetic", "cores_logical": 2})
    r = rep.row("minilm-l6", "drq")
    r.size_bytes, r.ratio, r.accuracy, r.accuracy_delta_vs_fp32_pts = 23_456_789, 12.34, 0.8123, -0.4
    r.inferences_per_s, r.p90_ms, r.method, r.threads = 12.5, 81.2, "measured", 4
    r.runtime, r.runtime_version = "ai-edge-litert", "2.3.0"
    f = rep.row("minilm-l6", "fp32")
    f.size_bytes, f.ratio, f.accuracy = 90_000_000, 3.2, 0.8163
    f.inferences_per_s, f.method = 0.42, "projected"
    return rep


# -- table ------------------------------------------------------------------------------------------


def test_table_labels_and_formatting():
    text = rows_table(_report().rows())
    assert "12.5 (measured)" in text
    assert "0.420 (projected)" in text
    assert "23.46" in text and "12.3x" in text and "81.2%" in text
    assert "ai-edge-litert 2.3.0" in text
    assert "projected = estimated" in text  # footnote explains the label


def test_table_omits_empty_columns():
    rep = Report("desktop", {})
    rep.row("m", "drq").accuracy = 0.5
    header = [c.strip() for c in rows_table(rep.rows()).splitlines()[0].split("|")]
    assert "acc" in header
    for absent in ("size MB", "inf/s", "on device", "peak MB", "runtime", "fits", "notes"):
        assert absent not in header, absent
    rep.row("m", "drq").arm_loads = True
    rep.row("m", "drq").arm_max_abs_diff = 1.5e-5
    rep.row("m", "drq").arm_method = "emulated ARM (qemu, cortex-a72)"
    text = rows_table(rep.rows())
    assert "on device" in text.splitlines()[0] and "max abs diff 1.5e-05" in text
    assert "emulated ARM (qemu, cortex-a72)" in text


def test_table_arm_failure_and_not_pretrained_flag():
    rep = Report("pi3", {})
    r = rep.row("bert-large", "fp32")
    r.arm_loads, r.arm_error, r.pretrained = False, "Illegal instruction\nRegistration failed.\n", False
    text = rows_table(rep.rows())
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
    for call in (lambda: rows_table(rep.rows()), rep.to_json, lambda: rep.write(tmp_path),
                 lambda: save_baseline(rep, tmp_path, MID)):
        with pytest.raises(ValueError, match="speed figure without measured/projected label"):
            call()
    assert not (tmp_path / "report.json").exists()  # nothing half-written


def test_bad_method_raises():
    rep = Report("pi3", {})
    r = rep.row("m", "drq")
    r.inferences_per_s, r.method = 3.0, "estimated"
    with pytest.raises(ValueError, match="measured"):
        rows_table(rep.rows())


def test_claims_table():
    text = claims_table([
        Claim("BERT-Large too slow on Pi 3", "<1 inf/s", "0.05 inf/s (projected)", "median", True),
        Claim("RAM fits", "yes", "not measurable: no device", "peak RSS", None),
        Claim("drop < 1 pt", "0.8 pt", "2.1 pt", "acc fp32 - acc drq", False),
    ])
    assert "holds" in text and "n/a" in text and "DOES NOT HOLD" in text
    assert "not measurable: no device" in text


# -- terminal width and sign convention (issue 15) ----------------------------------------------------

_ERROR = ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this builtin "
          "might be supported. Are you using an old TFLite binary with a newer model?\nRegistration failed.\n")


def _full_report() -> Report:
    """Every column filled, long notes and a runtime's paragraph-long refusal: a pi3 CI run's worst case."""
    rep = Report("pi3", {})
    for model, mode, seq in [("bert-large", "fp32", "128"), ("bert-large", "drq", "128"),
                             ("mobilebert", "drq-compat", "128"), ("minilm-l6", "drq", "dynamic"),
                             ("minilm-l6", "int8", "128")]:
        r = rep.row(model, mode, seq)
        r.size_bytes, r.ratio, r.accuracy, r.pretrained = 1_338_000_000, 103.4, 0.808, model != "bert-large"
        r.accuracy_delta_vs_fp32_pts = None if mode == "fp32" else -15.3
        r.inferences_per_s, r.method, r.threads, r.p90_ms = 8.09, "projected", 4 if mode != "int8" else 1, 123.4
        r.peak_rss_bytes, r.fits = 2_476_000_000, model != "bert-large"
        r.runtime, r.runtime_version = ("ai-edge-litert", "2.3.0") if mode != "int8" else ("tensorflow", "2.21.0")
        r.arm_loads, r.arm_method = mode != "drq", "emulated ARM (qemu, cortex-a53)"
        r.arm_error = None if r.arm_loads else _ERROR
        r.notes += ["host runs ai-edge-litert 2.3.0; pi3 uses tflite-runtime 2.14.0 (checked under emulation by "
                    "test_compat)", f"memory: host RSS (ai-edge-litert 2.3.0) vs pi3 budget, {model} note"]
    return rep


def test_table_fits_120_columns_and_keeps_the_detail_below_it():
    """Why: lines reached 738 characters; wide detail goes to numbered notes (and report.json)."""
    text = rows_table(_full_report().rows())
    assert max(len(line) for line in text.splitlines()) <= 120, text
    flat = " ".join(text.split())
    assert "FAILS: " + " ".join(_ERROR.split()) in flat  # the refusal, whole, on its own numbered line
    assert "8.09 (projected)" in text and "tensorflow 2.21.0" in text and "bert-large†" in text
    fails_row = next(line for line in text.splitlines()
                     if line.startswith("| bert-large† | drq ") and "FAILS" in line)
    note = re.search(r"\| (\d+(,\d+)*) +\|$", fails_row).group(1).split(",")[0]
    assert f"[{note}] FAILS: Didn't find op" in text


def test_source_models_show_their_slug_in_the_tables_and_their_full_spec_in_json():
    """A dir:/tflite: model's full path took the model column; the tables show sources.slug_for's short name (the
    full spec in a footnote), report.json keeps the spec, and two sources sharing a slug keep their full specs."""
    from edgemodels.report.tables import pareto_table

    deep = "/home/someone/experiments/2026-12/checkpoints/after-distillation"
    rep = Report("desktop", {})
    for spec, size, acc in ((f"dir:{deep}/my-bert", 4_000_000, 0.7), (f"tflite:{deep}/exported/student.tflite",
                                                                      1_000_000, 0.6), ("minilm-l6", 23_000_000, 0.8)):
        r = rep.row(spec, "drq", "64")
        r.size_bytes, r.accuracy = size, acc
    for text in (rows_table(rep.rows()), pareto_table(rep.rows())):
        cells = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
        assert {"dir-my-bert", "tflite-student", "minilm-l6"} <= cells, text
        assert not any(deep in c for c in cells)
        lines = text.splitlines()
        assert f"dir-my-bert = dir:{deep}/my-bert" in lines  # the footnote: the full spec, once
        assert f"tflite-student = tflite:{deep}/exported/student.tflite" in lines
        assert max(len(line) for line in text.splitlines()) <= 120, text
    assert {r["model"] for r in rep.to_json()["rows"]} == {f"dir:{deep}/my-bert",
                                                            f"tflite:{deep}/exported/student.tflite", "minilm-l6"}
    twins = Report("desktop", {})
    for where in ("/a", "/b"):
        twins.row(f"dir:{where}/my-bert", "fp32").accuracy = 0.5
    text = rows_table(twins.rows())
    assert "dir:/a/my-bert" in text and "dir:/b/my-bert" in text and "dir-my-bert" not in text


def test_claims_tables_fit_120_columns_without_losing_words():
    long = Claim(">= 1 tweet/s on pi3", ">= 1/s (Pi 3, Pi 4, desktop)",
                 "mobilebert drq-compat: 3.2/s (projected) [mobilebert drq 3.3/s; mobilebert drq-compat 3.2/s; "
                 "minilm-l6 drq 8.09/s]", "batch 1, seq 128, 4 thread(s), ai-edge-litert 2.3.0, " * 3, True)
    merged = [{**{k: getattr(long, k) for k in ("claim", "paper", "ours", "definition", "holds")},
               "device": "pi3", "created": "2026-11-25T08:00:00+00:00"}]
    for text in (claims_table([long]), merged_claims_table(merged)):
        assert max(len(line) for line in text.splitlines()) <= 120, text
        words = " ".join(text.replace("|", " ").split())
        for w in ("[mobilebert", "8.09/s]", "ai-edge-litert", "holds"):
            assert w in words


def test_claims_print_one_line_each_with_their_wording_in_numbered_notes():
    """Issue 24: claim, paper, our figure and verdict on one line per claim; definitions, detail and caveats as
    numbered notes under the table (the old table wrapped prose into five narrow columns: 60 lines for 6 claims)."""
    from edgemodels.report import claims as report_claims
    from edgemodels.study import criteria

    acc = type("Acc", (), {"accuracy": 0.7457, "n": 2540})
    ref = type("Acc", (), {"accuracy": 0.7760, "n": 2540})
    row = type("R", (), {"model": "mobilebert", "mode": "drq-compat", "seq": "128", "inferences_per_s": 4.54,
                         "method": "projected", "threads": 2, "runtime": "ai-edge-litert", "runtime_version": "2.3.0"})
    made = [report_claims.size_ratio(criteria.RATIOS[0], 161.1, "4,022,059,164 / 24,965,880 bytes"),
            report_claims.accuracy_drop("mpnet-base", "minilm-l6", ref, acc, "replab:/data/replab2013",
                                        "scale 'ci' is a reduced training budget"),
            report_claims.strict_ratio(171.9, "minilm-l6-pruned-w4-128", 7_783_264, 8_362_322, acc,
                                       "mpnet-base-fp32-128", ref, "", None),
            report_claims.speed([row], "pi3", 1.0)]
    text = claims_table(made)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, text
    body = [line for line in lines[2:] if line.startswith("|")]
    assert len(body) == len(made), text  # one line per claim: nothing wraps
    assert "| 4.54/s projected, mobilebert |" in text.replace("  ", " ").replace("  ", " ")  # where it was made
    assert "met; untested" in body[1] and "holds" not in body[1]
    notes = "\n".join(lines[2 + len(body):])
    for i, c in enumerate(made, 1):
        assert f"[{i}] {c.claim}:" in notes and f"[{i}]" in body[i - 1]
    words = " ".join(notes.split())
    assert "met here, claim not tested: scale 'ci' is a reduced training budget" in words
    assert "checkpoint:" in words and "n=2540, replab:/data/replab2013" in words
    merged = [{**vars(c), "device": "pi3", "created": "2026-12-06T17:00:00+00:00"} for c in made]
    text = merged_claims_table(merged)
    assert max(len(line) for line in text.splitlines()) <= 120 and "runs: pi3 2026-12-06" in text, text
    assert sum(line.startswith("| [") for line in text.splitlines()) == len(made), text


def test_delta_vs_fp32_is_negative_for_a_loss_in_table_and_json():
    """One sign everywhere: the CI table's "drop +15.3" was a loss, the paper table's "+0.2" a gain."""
    rep = Report("desktop", {})
    rep.row("minilm-l6", "fp32").accuracy = 0.808
    loss = rep.row("minilm-l6", "int8")
    loss.accuracy, loss.accuracy_delta_vs_fp32_pts = 0.655, -15.3
    text = rows_table(rep.rows())
    header = [c.strip() for c in text.splitlines()[0].split("|")]
    assert "Δ vs fp32" in header
    cell = text.splitlines()[3].split("|")[header.index("Δ vs fp32")].strip()
    assert cell == "-15.3" and "negative = loss" in text
    row = next(r for r in rep.to_json()["rows"] if r["mode"] == "int8")
    assert row["accuracy_delta_vs_fp32_pts"] == -15.3 and "accuracy_drop" not in row


def test_report_json_from_before_the_sign_change_still_gives_its_claims(tmp_path):
    """`edgemodels claims` reads older runs: rows with `accuracy_drop` (positive = loss) are ignored, claims kept."""
    old = {"device": "pi4", "created": "2026-11-24T10:00:00+00:00", "machine": {},
           "rows": [{"device": "pi4", "model": "minilm-l6", "mode": "int8", "seq": "128", "accuracy_drop": 15.3}],
           "claims": [{"claim": "compressed model loses 4.1 accuracy points", "paper": "-4.1 pt",
                       "ours": "-3.00 pt (minilm-l6 drq vs mpnet-base fp32)", "definition": "d", "holds": True}]}
    (tmp_path / "report.json").write_text(json.dumps(old))
    device, created, claims = load_claims(tmp_path)
    assert device == "pi4" and claims[0].ours.startswith("-3.00 pt") and claims[0].holds is True


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
    assert [p.name for p in paths] == ["report.json", "report.png", "pareto.png"]
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
    rep = Report(device, {"machine_id": MID})
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


def test_missing_baseline_fails_naming_the_file_and_the_fix(tmp_path):
    """Why: comparing against no baseline used to be a note, so --baseline-compare passed on nothing."""
    with pytest.raises(BaselineMissing, match=r"pi4\.json.*--baseline-save"):
        compare_baseline(_one(), tmp_path, MID)


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


def _gated(relative: float, baseline: dict | None = None, *, same_machine: bool = True) -> Report:
    """_one with a real speed gate digest of a file `relative` times the yardstick's speed, and, against a baseline
    digest, the speed gate's real verdict, as the bench's throughput test leaves them in the row."""
    from edgemodels.run import speedgate
    from tests.test_history import gate_digest

    rep = _one(ips=10.0 * relative)
    r = rep.rows()[0]
    r.throughput_gate = gate_digest(relative)
    if baseline is not None:
        r.throughput_decision = speedgate.compare(
            speedgate.Digest.from_json(r.throughput_gate), speedgate.Digest.from_json(baseline),
            **speedgate.compare_args(same_machine=same_machine, mode="drq")).to_json()
    return rep


def test_throughput_is_decided_by_the_speed_gates_verdict(tmp_path):
    """Why: a fixed -10 % on absolute inferences/s failed an unchanged file on a busy machine (-58 %) and passed a
    4.3x slowdown across machines; throughput now fails on the speed gate's verdict only, whatever the raw figure."""
    save_baseline(_gated(1.0), tmp_path, MID)
    base = json.loads(baseline_path(tmp_path, "pi4").read_text())["rows"][0]
    assert base["throughput_gate"] and base["throughput_gate_machine_id"] == MID
    same = _gated(1.0, base["throughput_gate"])
    same.rows()[0].inferences_per_s = 4.0  # the absolute figure of a busy machine: not decided on
    regs, _ = compare_baseline(same, tmp_path, MID)
    assert regs == [] and same.rows()[0].throughput_decision["decision"] == "pass"
    slower = _gated(0.80, base["throughput_gate"])
    regs, _ = compare_baseline(slower, tmp_path, MID)
    assert [r.metric for r in regs] == ["throughput"] and "regression: relative speed 0.80" in regs[0].limit


def test_an_inconclusive_or_incomparable_verdict_fails_unless_told(tmp_path):
    save_baseline(_gated(1.0), tmp_path, MID)
    rep = _gated(0.9)
    rep.rows()[0].throughput_decision = {"decision": "inconclusive", "ratio": 0.9, "low": 0.85, "high": 0.95,
                                         "limit": 0.9, "basis": "same machine", "confidence": 0.95}
    regs, _ = compare_baseline(rep, tmp_path, MID)
    assert [r.metric for r in regs] == ["throughput"] and regs[0].limit.startswith("inconclusive")
    regs, notes = compare_baseline(rep, tmp_path, MID, pass_inconclusive=True)
    assert regs == [] and any("passed by --throughput-inconclusive=pass" in n for n in notes)
    rep.rows()[0].throughput_decision = {"decision": "incomparable", "basis": "the baseline was timed at 2 thread(s)"}
    regs, _ = compare_baseline(rep, tmp_path, MID, pass_inconclusive=True)  # never passed: nothing was compared
    assert [r.metric for r in regs] == ["throughput"] and "re-save the baseline" in regs[0].limit


def test_throughput_without_a_digest_on_one_side_fails_naming_it(tmp_path):
    """A baseline saved before the gate (no digest) cannot pass a gated row, nor a row the gate did not time."""
    save_baseline(_one(ips=10.0), tmp_path, MID)  # no digest
    regs, _ = compare_baseline(_gated(1.0), tmp_path, MID)
    assert [(r.metric, r.limit) for r in regs] == [("throughput", "no baseline")]
    save_baseline(_gated(1.0), tmp_path / "new", MID)
    regs, _ = compare_baseline(_one(ips=10.0), tmp_path / "new", MID)
    assert [(r.metric, r.limit) for r in regs] == [("throughput", "not measured")]


def test_the_verdict_across_machines_uses_the_modes_spread():
    """Across machines the limit is lowered by the mode's measured cross-CPU spread (drq 0.25), not other modes'
    default: `compare` and history decide as the bench does."""
    from edgemodels.report.gate import decide
    from edgemodels.run import speedgate
    from edgemodels.store.history.compare import Side
    from tests.test_history import gate_digest

    base = Side((10.0,), (gate_digest(1.0),), "machine-a", "measured", "drq")
    cur = Side((9.0,), (gate_digest(0.85),), "machine-b", "measured", "drq")
    d = decide("inferences_per_s", base, cur)
    assert "drq's shift" in d.why and f"x {1 - speedgate.cross_machine_spread('drq')[0]:.2f}" in d.why, d.why
    unmeasured = decide("inferences_per_s", base, Side((9.0,), cur.digests, "machine-b", "measured", "qat-int7"))
    assert "qat-int7: the float and int8 files' shift" in unmeasured.why


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
    assert drq["accuracy_by_machine"] == {MID: 0.8123, "other-machine": 0.70}  # each machine keeps its own
    assert drq["size_bytes"] == 23_456_789
    assert drq["inferences_per_s"] == 12.5 and drq["machine_id"] == MID  # kept with its own host


def test_rows_not_in_baseline_and_unmeasured_metrics_fail(tmp_path):
    """Why: a skipped accuracy test (or a new row) must not pass the gate by having nothing to compare."""
    save_baseline(_one(), tmp_path, MID)
    rep = _one(acc=None)
    rep.row("other", "fp32").accuracy = 0.5
    regs, _ = compare_baseline(rep, tmp_path, MID)
    got = {(r.model, r.metric, r.limit) for r in regs}
    assert got == {("minilm-l6", "accuracy", "not measured"), ("other", "accuracy", "no baseline")}
    text = format_regressions(regs)
    assert "accuracy is in the baseline (0.8000) but this run did not measure it" in text
    assert "other/fp32 seq=128: accuracy 0.5000 has no baseline" in text


def test_ungated_metrics_and_rows_not_run_are_notes(tmp_path):
    saved = _gated(1.0)
    saved.row("other", "fp32").size_bytes = 5  # a row this run filters out (--models): a note, not a failure
    save_baseline(saved, tmp_path, MID)
    rep = _one(ips=None)  # throughput in the baseline, not measured: CI gates accuracy and size only
    regs, notes = compare_baseline(rep, tmp_path, MID, metrics=("accuracy", "size"))
    assert regs == []
    assert any(n.startswith("not gated (--baseline-metrics):") and "throughput" in n for n in notes)
    assert any("1 baseline row(s) not run" in n and "other/fp32" in n for n in notes)
    regs, _ = compare_baseline(rep, tmp_path, MID)
    assert [(r.metric, r.limit) for r in regs] == [("throughput", "not measured")]


def test_gate_metrics_are_validated(tmp_path):
    save_baseline(_one(), tmp_path, MID)
    with pytest.raises(ValueError, match="acuracy.*valid: accuracy, size, throughput"):
        compare_baseline(_one(), tmp_path, MID, metrics=("acuracy",))
    with pytest.raises(ValueError, match="empty"):
        compare_baseline(_one(), tmp_path, MID, metrics=())


@pytest.mark.parametrize("device", ["desktop", "pi4", "pi3"])
def test_committed_ci_baselines_pass_ci_gate_on_their_own_figures(device):
    """CI gates accuracy,size on the committed files; a run reproducing them must pass (old format kept)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "baselines" / "builtin" / "ci"
    from edgemodels.report.gate import _load_baseline, baseline_accuracies

    rows = list(_load_baseline(path / f"{device}.json", device).values())
    machines = {m for b in rows for m in baseline_accuracies(b)}
    assert machines, "the committed CI baselines record accuracy"
    for mid in machines:
        rep = Report(device, {})
        cross = 0
        for b in rows:
            accs = baseline_accuracies(b)
            r = rep.row(b["model"], b["mode"], b["seq"])
            # Recorded only on other CPUs (a row newer than this machine's save): the cross-machine path, fed the
            # lowest recorded figure, which it compares with at the looser tolerance.
            cross += bool(accs) and mid not in accs
            r.accuracy, r.size_bytes = accs.get(mid, min(accs.values(), default=None)), b["size_bytes"]
        regs, notes = compare_baseline(rep, path, mid, metrics=("accuracy", "size"))
        assert regs == []
        assert cross == 0 or any(f"accuracy of {cross} row(s)" in n and "-5 pt" in n for n in notes), notes
    rep.row("minilm-l6", "drq", "128").accuracy = None  # the accuracy test skipped: the gate notices
    regs, _ = compare_baseline(rep, path, mid, metrics=("accuracy", "size"))
    assert [(r.model, r.mode, r.metric, r.limit) for r in regs] == [("minilm-l6", "drq", "accuracy", "not measured")]


def test_accuracy_baseline_is_per_machine(tmp_path):
    """Why: training is bit-identical only on one CPU (docs/measurements.md#cross-cpu-accuracy: the figures below
    are MPNet-base's at CI scale on the two CPUs CI ran on). A machine with its own baseline is gated at -0.5 pt; one
    without is compared with the lowest recorded machine at the looser cross-machine tolerance (5 pt), says so, and
    still fails a real drop."""
    save_baseline(_one(acc=0.73), tmp_path, "xeon")
    regs, notes = compare_baseline(_one(acc=0.6867), tmp_path, "epyc", metrics=("accuracy",))
    assert regs == []
    assert any("no baseline from this machine (epyc" in n and "-5 pt" in n for n in notes)
    regs, _ = compare_baseline(_one(acc=0.6799), tmp_path, "epyc", metrics=("accuracy",))
    assert [(r.metric, r.baseline, r.current) for r in regs] == [("accuracy", 0.73, 0.6799)]
    assert "recorded only on xeon; this run is on epyc" in format_regressions(regs)
    save_baseline(_one(acc=0.6867), tmp_path, "epyc")
    assert compare_baseline(_one(acc=0.6867), tmp_path, "epyc", metrics=("accuracy",))[0] == []
    assert compare_baseline(_one(acc=0.73), tmp_path, "xeon", metrics=("accuracy",))[0] == []
    regs, _ = compare_baseline(_one(acc=0.70), tmp_path, "xeon", metrics=("accuracy",))
    assert [(r.baseline, r.current) for r in regs] == [(0.73, 0.70)]
    regs, _ = compare_baseline(_one(acc=0.6807), tmp_path, "epyc", metrics=("accuracy",))  # own baseline: -0.5 pt
    assert [(r.baseline, r.current) for r in regs] == [(0.6867, 0.6807)]


def test_schema_1_baseline_accuracy_counts_as_its_machines(tmp_path):
    row = {"model": "minilm-l6", "mode": "drq", "seq": "128", "accuracy": 0.8, "size_bytes": 1_000_000,
           "inferences_per_s": 10.0, "method": "measured", "machine_id": "old-box"}
    baseline_path(tmp_path, "pi4").write_text(json.dumps({"schema": 1, "device": "pi4", "rows": [row]}))
    assert compare_baseline(_one(acc=0.8), tmp_path, "old-box", metrics=("accuracy",))[0] == []
    regs, _ = compare_baseline(_one(acc=0.74), tmp_path, "new-box", metrics=("accuracy",))
    assert [r.metric for r in regs] == ["accuracy"]  # 6 pt below old-box's: beyond the cross-machine tolerance


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
