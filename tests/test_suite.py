"""The bench matrix is data: check each scale holds what the study needs, so a trim cannot drop a claim."""

from __future__ import annotations

import pytest

from edgemodels import suite, train
from edgemodels.suite import ALL_MODES, Case


def _has(scale: str, model: str, modes, seqs) -> list[str]:
    cases = set(suite.get_scale(scale).cases)
    return [Case(model, q, s).id for q in modes for s in seqs if Case(model, q, s) not in cases]


def test_paper_scale_covers_issue_4_matrix():
    """BERT-Large fp32/drq; MobileBERT all modes; both pretrained encoders all modes; tweet lengths."""
    missing = (
        _has("paper", "bert-large", ("fp32", "drq"), (128, None))
        + _has("paper", "mobilebert", ALL_MODES, (128,))
        + _has("paper", "minilm-l6", ALL_MODES, (128,))
        + _has("paper", "mpnet-base", ALL_MODES, (128,))
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
    for large, compact in suite.PAIRS:
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
    x = suite.RatioInputs(large_fp32=1_000, large_fp32_weights=900, compact_drq=10, compact_drq_weights=9,
                          compact_drq_compat=8, checkpoint=3_200)
    got = {d.name: suite.ratio_value(d, x)[0] for d in suite.RATIOS}
    assert got == {"checkpoint": 400.0, "deployable": 100.0, "weights": 100.0}
    no_ckpt = suite.RatioInputs(1_000, 900, 10, 9, None, None)
    value, why = suite.ratio_value(suite.RATIOS[0], no_ckpt)
    assert value is None and "checkpoint" in why
    assert [d.name for d in suite.RATIOS if d.paper_comparable] == ["checkpoint"]


def test_expected_refusals_by_runtime_version_and_model():
    assert "FULLY_CONNECTED v12" in suite.expected_refusal("tflite-runtime", "2.14.0", "drq")
    assert suite.expected_refusal("tflite-runtime", "2.14.0", "int8", "mobilebert")
    assert suite.expected_refusal("tflite-runtime", "2.14.0", "int8", "minilm-l6") is None
    assert suite.expected_refusal("ai-edge-litert", "2.3.0", "drq") is None
