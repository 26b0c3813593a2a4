"""report.py's Pareto front, table and verdict wording (issue 12 items 4 and 6)."""

from __future__ import annotations

import json

from edgemodels.report import claims as report_claims
from edgemodels.report import pareto as report
from edgemodels.report import plots, tables
from edgemodels.report.pareto import pareto_front
from edgemodels.report.rows import Claim, Report
from edgemodels.report.tables import claims_table, verdict


def test_pareto_front_small_example():
    # (bytes, accuracy): b is dominated by a (smaller and better); d ties c exactly: both on the front.
    pts = [(10, 0.80), (20, 0.79), (30, 0.85), (30, 0.85), (5, 0.60)]
    assert pareto_front(pts) == [True, False, True, True, True]
    assert pareto_front([]) == []
    assert pareto_front([(1, 1.0)]) == [True]


def _rep() -> Report:
    rep = Report("desktop", {})
    for model, mode, size, acc, ips in (("bert-large", "fp32", 1_337_968_828, None, 2.0),
                                        ("minilm-l6", "fp32", 90_350_148, 0.808, 60.0),
                                        ("minilm-l6", "w4", 12_275_568, 0.782, 55.0),
                                        ("minilm-l6", "pruned-w4", 8_395_088, 0.783, 58.0),
                                        ("minilm-l6", "w8", 23_518_528, 0.803, 50.0)):
        r = rep.row(model, mode, "128")
        r.size_bytes, r.accuracy, r.inferences_per_s, r.method = size, acc, ips, "measured"
    return rep


def test_pareto_rows_table_and_json():
    rep = _rep()
    rows = {(p.model, p.mode): p for p in report.pareto_rows(rep.rows())}
    assert rows[("minilm-l6", "pruned-w4")].accuracy_front and rows[("minilm-l6", "fp32")].accuracy_front
    assert not rows[("minilm-l6", "w4")].accuracy_front  # pruned-w4 is smaller and better
    assert rows[("minilm-l6", "w8")].accuracy_front
    assert not rows[("bert-large", "fp32")].accuracy_front  # no accuracy: not in that front
    assert rows[("minilm-l6", "pruned-w4")].speed_front and not rows[("minilm-l6", "w8")].speed_front
    assert abs(rows[("minilm-l6", "pruned-w4")].ratio_vs_large - 159.37) < 0.01
    text = tables.pareto_table(rep.rows())
    assert "8,362,305 bytes" in text and "78.3% *" in text and "159.4" in text
    doc = rep.to_json()["pareto"]
    assert doc["budget_bytes"] == 8_362_305 and doc["large_fp32_bytes"] == 1_337_968_828
    assert [r["mode"] for r in doc["rows"]][0] == "pruned-w4"  # size order
    json.dumps(doc, allow_nan=False)


def test_pareto_without_bert_large_draws_no_line(tmp_path):
    rep = Report("desktop", {})
    r = rep.row("tiny-bert", "drq", "64")
    r.size_bytes, r.accuracy = 1_000_000, 0.7
    assert "no 160x line" in tables.pareto_table(rep.rows())
    assert rep.to_json()["pareto"]["budget_bytes"] is None
    plots.write_pareto_png(rep.rows(), tmp_path / "p.png", "desktop")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_verdict_says_when_the_run_cannot_test_the_claim():
    assert verdict(True) == "holds" and verdict(False) == "DOES NOT HOLD" and verdict(None, "x") == "n/a"
    caveat = "scale 'ci' is a reduced training budget"
    assert verdict(True, caveat) == f"met here, claim not tested: {caveat}"
    assert verdict(False, caveat).startswith("not met here, claim not tested")
    text = claims_table([Claim("compressed model loses 4.1 accuracy points", "Δ -4.1 pt", "Δ +7.17 pt", "def",
                               True, caveat)])
    assert "holds" not in text and "claim not tested" in text


def test_old_reports_without_caveat_still_load(tmp_path):
    doc = {"device": "pi4", "created": "2026-11-25T00:00:00", "claims": [
        {"claim": "c", "paper": "p", "ours": "o", "definition": "d", "holds": True}]}
    (tmp_path / "report.json").write_text(json.dumps(doc))
    _, _, claims = report_claims.load_claims(tmp_path)
    assert claims[0].caveat is None and claims[0].holds is True


def test_speed_front_is_per_method():
    """A projected figure (another machine's speed x a factor) must not push a measured one off the front."""
    rep = Report("pi4", {})
    for mode, size, ips, method in (("drq", 2_000_000, 50.0, "measured"), ("fp32", 8_000_000, 10.0, "measured"),
                                    ("w4", 1_000_000, 90.0, "projected")):
        r = rep.row("m", mode, "128")
        r.size_bytes, r.inferences_per_s, r.method = size, ips, method
    front = {p.mode: p.speed_front for p in report.pareto_rows(rep.rows())}
    assert front == {"w4": True, "drq": True, "fp32": False}
