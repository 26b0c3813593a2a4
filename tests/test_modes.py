"""edgemodels.build.modes: one immutable record per quantization mode, and the views the rest of the suite reads."""

from __future__ import annotations

import pytest

from edgemodels.study import criteria
from edgemodels.report import claims
from edgemodels.build import convert, modes
from edgemodels.study import expected, matrix as suite
from edgemodels.errors import EdgeModelsError


def test_registry_is_immutable_and_each_mode_has_one_producer():
    with pytest.raises(TypeError):
        modes.MODES["int2"] = modes.MODES["w4"]  # type: ignore[index]
    for name, m in modes.MODES.items():
        assert m.name == name
        assert (m.converter is None) != (m.recipe is None), name
        if m.recipe is not None:  # a recipe quantizes another mode's file: that mode is a converter mode
            assert modes.get(m.source).converter is not None and modes.get(m.source).prune_vocab == m.prune_vocab
        assert m.min_compression >= 1 and m.drop_tolerance_pts >= 0 and m.arm_diff_tolerance > 0
    with pytest.raises(ValueError, match="exactly one of converter and recipe"):
        modes.QuantMode("bad", "both", converter=modes.ConverterOptions(), recipe=modes.QuantizerRecipe(4),
                        source="fp32")


def test_unknown_mode_is_a_user_error_naming_the_valid_ones():
    with pytest.raises(EdgeModelsError, match="unknown quantization mode 'int2'; valid: fp32, drq"):
        modes.get("int2")


def test_suite_views_follow_the_registry():
    for name, m in modes.MODES.items():
        assert criteria.MODE_DROP_TOLERANCE_PTS[name] == m.drop_tolerance_pts
        assert criteria.MODE_MIN_COMPRESSION[name] == m.min_compression
        assert criteria.ARM_DIFF_TOLERANCE[name] == m.arm_diff_tolerance
        assert convert.MODES[name] == m.description
    assert suite.ALL_MODES == tuple(modes.MODES)


def test_converter_modes_add_nothing_to_cache_keys():
    """Their key dicts predate the registry: the committed accuracy baselines are keyed on them."""
    for name in modes.PAPER_MODES:
        assert modes.get(name).key_parts() == {}
    assert modes.get("w4").key_parts() == {"recipe": modes.get("w4").recipe.label, "source_mode": "fp32"}


def test_expected_refusals_come_from_the_registry():
    pi3 = ("tflite-runtime", "2.14.0")
    out = expected.BUILTIN_OUTCOMES
    assert "INT4" in out.refusal(*pi3, "w4").reason and "INT4" in out.refusal(*pi3, "pruned-w4").reason
    assert out.refusal(*pi3, "w8") is None  # loads and runs there (docs/measurements.md#pi3-refusals)
    assert out.refusal("ai-edge-litert", "2.3.0", "w4") is None
    for m in modes.MODES.values():  # what a refusing runtime should use instead is itself not refused there
        for r in m.refusals:
            assert r.instead in modes.MODES and out.refusal(r.runtime, r.version, r.instead) is None


def test_deployable_modes_are_the_speed_candidates():
    assert suite.Case("minilm-l6", "pruned-w4").candidate and suite.Case("minilm-l6", "w8").candidate
    assert not suite.Case("minilm-l6", "pruned-fp32").candidate and not suite.Case("minilm-l6", "fp16").candidate


def test_claim_caveat_says_why_a_run_cannot_test_the_claim():
    # The CI budget on built-in data, MiniLM beating an under-trained MPNet by 7 points (issue 12 item 6).
    why = claims.caveat("ci", "builtin", True, 0.73, 0.8017, 0.6567)
    assert "RepLab" in why and "reduced training budget" in why and "under-trained" in why and "7.17" in why
    assert claims.caveat("paper", "replab", True, 0.776, 0.747, 0.595) is None  # a real test of the claim
    assert "random init" in claims.caveat("paper", "replab", False, 0.33, 0.747, 0.595)
    assert "majority" in claims.caveat("paper", "replab", True, 0.59, 0.55, 0.595)
    # --max-examples (bench or export) is a reduced budget even at --scale=paper on RepLab.
    assert claims.caveat("paper", "replab", True, 0.776, 0.747, 0.595, max_examples=2000) \
        == "training capped at 2,000 examples (--max-examples)"
