"""The paper-claims rows' verdicts (edgemodels/report/claims.py) at and around each boundary.

Each boundary is read twice: from the suite constant the code compares with, and from the paper's own figure as the
row states it in words (the `claim`/`paper` text, written out in claims.py). So a comparison against another number
than the constant fails here, and so does a constant changed away from the paper's figure, without a CI-scale bench.
"""

from __future__ import annotations

import re

import pytest

from edgemodels.report import claims
from edgemodels.report import rows as report
from edgemodels.study import criteria as suite
from edgemodels.run.evaluate import Accuracy

N = 1000
"""Evaluation examples: accuracies are correct / N, as evaluate computes them."""


def _acc(correct: int, n: int = N) -> Accuracy:
    return Accuracy(accuracy=correct / n, macro_f1=0.5, n=n, majority_accuracy=0.4, runtime="ai-edge-litert",
                    runtime_version="2.3.0", confusion=((correct, n - correct),))


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1))


CHECKPOINT = next(r for r in suite.RATIOS if r.name == "checkpoint")


# --- the constants are the paper's figures ---------------------------------------------------------


def test_the_rows_state_the_papers_figures_and_the_constants_match_them():
    size = claims.size_ratio(CHECKPOINT, 200.0, "x")
    drop = claims.accuracy_drop("bert-large", "mobilebert", _acc(800), _acc(790), "csv:x", None)
    strict = claims.strict_ratio(200.0, "mobilebert-drq", 1, 2, _acc(790), "bert-large-fp32", _acc(800), "", None)
    paper_ratio = _number(r"^(\d+)x$", size.paper)
    assert paper_ratio == _number(r"^(\d+)x", strict.paper) == _number(r">= (\d+)x", strict.claim) == 160
    paper_drop = _number(r"loses ([\d.]+) accuracy points", drop.claim)
    assert paper_drop == _number(r"within ([\d.]+) points", strict.claim) == _number(r"Δ -([\d.]+) pt", strict.paper)
    assert paper_drop == 4.1
    assert suite.STRICT_RATIO == paper_ratio  # strict: no leeway
    assert suite.PAPER_DROP_PTS == paper_drop
    # "~160x": a reading within 10 % below the paper's figure counts (the constant says ~6 %), not any other number.
    assert 0.9 * paper_ratio <= suite.PAPER_RATIO_HOLDS < paper_ratio


# --- size_ratio: value >= PAPER_RATIO_HOLDS ----------------------------------------------------------


@pytest.mark.parametrize("value, holds", [
    (suite.PAPER_RATIO_HOLDS, True),
    (suite.PAPER_RATIO_HOLDS + 0.05, True),
    (suite.PAPER_RATIO_HOLDS - 0.05, False),
    (suite.STRICT_RATIO, True),
    (0.9 * suite.PAPER_RATIO_HOLDS, False),
    (CHECKPOINT.floor - 1, False),
])
def test_size_ratio_holds_from_the_paper_ratio_threshold(value, holds):
    claim = claims.size_ratio(CHECKPOINT, value, "detail")
    assert claim.holds is holds
    assert claim.ours == f"{value:.1f}x (detail)" and claim.definition.startswith("checkpoint: ")


# --- accuracy_drop: 100 x (large - compact) <= PAPER_DROP_PTS ------------------------------------------

PAPER_DROP_CORRECT = round(suite.PAPER_DROP_PTS * N / 100)
"""41 of 1000: exactly the paper's 4.1 points."""


@pytest.mark.parametrize("small_correct, holds", [
    (800 - PAPER_DROP_CORRECT, True),  # exactly 4.1 points: the paper's own figure holds
    (800 - PAPER_DROP_CORRECT + 1, True),  # 4.0 points
    (800 - PAPER_DROP_CORRECT - 1, False),  # 4.2 points
    (800, True),  # no loss
    (810, True),  # the compact model is better
    (800 - 10 * PAPER_DROP_CORRECT, False),
])
def test_accuracy_drop_holds_at_and_within_the_papers_points(small_correct, holds):
    claim = claims.accuracy_drop("bert-large", "mobilebert", _acc(800), _acc(small_correct), "csv:x", "why")
    assert claim.holds is holds, claim.ours
    assert claim.caveat == "why"
    assert f"Δ {-(800 - small_correct) / 10:+.2f} pt" in claim.ours


@pytest.mark.parametrize("big, small", [(800, 759), (700, 659), (612, 571), (950, 909)])
def test_accuracy_drop_of_exactly_the_papers_points_holds_for_any_accuracy(big, small):
    """800 - 759 is 41 of 1000, yet 100 * (0.8 - 0.759) is 4.100000000000003 in binary floating point."""
    assert claims.accuracy_drop("bert-large", "mobilebert", _acc(big), _acc(small), "csv:x", None).holds is True
    assert claims.accuracy_drop("bert-large", "mobilebert", _acc(big), _acc(small - 1), "csv:x", None).holds is False


# --- strict_ratio: ratio >= STRICT_RATIO (no leeway) ------------------------------------------------------


@pytest.mark.parametrize("ratio, holds", [
    (suite.STRICT_RATIO, True),
    (suite.STRICT_RATIO + 0.01, True),
    (suite.STRICT_RATIO - 0.01, False),
    (suite.PAPER_RATIO_HOLDS, False),  # the ~160x reading's leeway does not apply to the strict row
    (suite.STRICT_RATIO / 10, False),
    (2 * suite.STRICT_RATIO, True),
])
def test_strict_ratio_holds_only_at_the_strict_ratio(ratio, holds):
    claim = claims.strict_ratio(ratio, "minilm-l6-w4", 1_000, 2_000, _acc(790), "bert-large-fp32", _acc(800),
                                "; left out: x", None)
    assert claim.holds is holds
    assert claim.ours.startswith(f"{ratio:.1f}x: minilm-l6-w4 1,000 bytes (budget 2,000)")
    assert claim.ours.endswith("; left out: x") and claim.caveat is None


# --- caveat: when a run cannot test the accuracy claim -------------------------------------------------


def test_caveat_is_none_only_for_a_paper_run_on_replab_with_a_trained_reference():
    assert claims.caveat("paper", suite.PAPER_DATA_KIND, True, 0.80, 0.76, 0.6) is None
    assert "not the paper's RepLab" in claims.caveat("paper", "csv", True, 0.80, 0.76, 0.6)
    assert "reduced training budget" in claims.caveat("ci", suite.PAPER_DATA_KIND, True, 0.80, 0.76, 0.6)
    assert "random init" in claims.caveat("paper", suite.PAPER_DATA_KIND, False, 0.80, 0.76, 0.6)
    assert "--max-examples" in claims.caveat("paper", suite.PAPER_DATA_KIND, True, 0.80, 0.76, 0.6, max_examples=1)


@pytest.mark.parametrize("large, majority, flagged", [
    (0.600, 0.600, True),  # equal to the majority class: learned nothing
    (0.599, 0.600, True),
    (0.601, 0.600, False),
])
def test_caveat_large_model_must_beat_the_majority_class(large, majority, flagged):
    why = claims.caveat("paper", suite.PAPER_DATA_KIND, True, large, large - 0.01, majority)
    assert (why is not None and "majority class" in why) is flagged, why


@pytest.mark.parametrize("compact_correct, flagged", [
    (800 + PAPER_DROP_CORRECT, False),  # the compact model better by exactly 4.1 points: not "by more than"
    (800 + PAPER_DROP_CORRECT - 1, False),
    (800 + PAPER_DROP_CORRECT + 1, True),  # 4.2 points better: the large reference is under-trained
    (800, False),
])
def test_caveat_flags_a_large_reference_beaten_by_more_than_the_papers_points(compact_correct, flagged):
    why = claims.caveat("paper", suite.PAPER_DATA_KIND, True, 800 / N, compact_correct / N, 0.5)
    assert (why is not None and "under-trained" in why) is flagged, why


# --- speed: the best deployment candidate >= the device's target ---------------------------------------


def _row(model: str, mode: str, ips: float | None, seq: str = "128") -> report.Row:
    return report.Row(device="pi4", model=model, mode=mode, seq=seq, inferences_per_s=ips, method="projected",
                      threads=4, runtime="ai-edge-litert", runtime_version="2.3.0")


@pytest.mark.parametrize("ips, holds", [(1.0, True), (1.001, True), (0.999, False), (0.1, False)])
def test_speed_holds_at_the_device_target(ips, holds):
    claim = claims.speed([_row("mobilebert", "drq", ips)], "pi4", 1.0)
    assert claim.holds is holds and claim.ours.startswith(f"mobilebert drq: {ips:.3g}/s (projected)")


def test_speed_counts_only_timed_deployment_candidates_at_seq_128_and_prefers_mobilebert():
    rows = [_row("mobilebert", "fp32", 50.0),  # not deployable
            _row("bert-large", "drq", 50.0),  # not compact
            _row("mobilebert", "drq", 50.0, seq="64"),  # not the paper's length
            _row("minilm-l6", "drq", None)]  # not timed
    assert claims.speed(rows, "pi4", 1.0) is None
    rows.append(_row("minilm-l6", "drq", 2.0))
    assert claims.speed(rows, "pi4", 1.0).holds is True
    rows.append(_row("mobilebert", "drq", 0.5))  # the paper's model, where timed, decides
    claim = claims.speed(rows, "pi4", 1.0)
    assert claim.holds is False and claim.ours.startswith("mobilebert drq: 0.5/s")
    assert claims.speed(rows, "pi4", 0.5).holds is True  # the target is the device's, as passed
