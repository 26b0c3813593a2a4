"""Artifact sizes: each mode's compression against its own fp32 file, and the paper's ~160x read several ways."""

import pytest

from edgemodels.bench.metrics import size
from edgemodels.build import modes
from edgemodels.study import criteria

pytestmark = pytest.mark.size


def test_artifact_size(bench, case):
    art = bench.artifact(case)
    assert art.tflite.stat().st_size == art.size_bytes, f"{art.tflite}: size differs from its manifest"
    ref = bench.reference_fp32()
    if ref is not None:
        bench.row(case).ratio = ref.size_bytes / art.size_bytes
    mode = modes.MODES.get(case.quant)  # None: a ready .tflite whose mode is not recorded ("as-is")
    per_param = mode.bytes_per_param if mode is not None else None
    if per_param is not None and "params" in art.manifest:
        expected = art.manifest["params"] * per_param
        assert abs(art.size_bytes - expected) / expected <= criteria.PARAM_SIZE_TOLERANCE, (
            f"{case.id}: {art.size_bytes:,} bytes for {art.manifest['params']:,} params; expected ~{expected:,.0f}")
    fp32_case = bench.case(case.model, "fp32", case.seq)
    if case.quant != "fp32" and fp32_case is not None:
        compression = bench.artifact(fp32_case).size_bytes / art.size_bytes
        floor = criteria.MODE_MIN_COMPRESSION[case.quant]
        assert compression >= floor, f"{case.id}: {compression:.2f}x smaller than fp32; floor {floor}x"


@pytest.mark.paper
@pytest.mark.parametrize("ratio", criteria.RATIOS, ids=[r.name for r in criteria.RATIOS])
def test_named_ratio(bench, ratio):
    value, detail = size.named_ratio(bench, ratio)
    assert value >= ratio.floor, f"{ratio.name} ratio {value:.1f}x < floor {ratio.floor}x ({detail})"


@pytest.mark.paper
def test_strict_ratio(bench):
    """A deployable compact artifact >= 160x smaller than BERT-Large fp32 .tflite (strict: bytes over bytes), whose
    accuracy is within 4.1 points of the large reference model's fp32, trained with the same budget. A known miss is
    a "strict-miss" record in edgemodels/study/expected.py (a strict xfail marker at collection)."""
    result = size.strict(bench)
    best = result.best
    if best.ratio < criteria.STRICT_RATIO:  # an expected outcome where only this runtime's refusals stand in the way
        blocked = size.refused_above(bench, result)
        if blocked:
            pytest.xfail(f"the >= {criteria.STRICT_RATIO:g}x artifacts ({', '.join(blocked)}) are refused by "
                         f"{bench.profile.runtime} {bench.profile.runtime_version}: {result.refused[blocked[0]]}; "
                         f"the best this device loads is {best.case.id} at {best.ratio:.1f}x")
    budget = int(result.large_bytes / criteria.STRICT_RATIO)
    assert best.ratio >= criteria.STRICT_RATIO, (
        f"best deployable artifact within {criteria.PAPER_DROP_PTS} pt is {best.case.id} at {best.ratio:.1f}x "
        f"({best.size:,} bytes; budget {budget:,} = {result.large_bytes:,} / {criteria.STRICT_RATIO:g})")
