"""Artifact sizes: each mode's compression against its own fp32 file, and the paper's ~160x read several ways."""

import pytest

from edgemodels import claims, modes, suite

pytestmark = pytest.mark.size

# A file far off (params x the mode's bytes per parameter, edgemodels.modes) means conversion lost or duplicated
# weights.
PARAM_SIZE_TOLERANCE = 0.05


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
        assert abs(art.size_bytes - expected) / expected <= PARAM_SIZE_TOLERANCE, (
            f"{case.id}: {art.size_bytes:,} bytes for {art.manifest['params']:,} params; expected ~{expected:,.0f}"
        )
    fp32_case = bench.case(case.model, "fp32", case.seq)
    if case.quant != "fp32" and fp32_case is not None:
        fp32 = bench.artifact(fp32_case)
        compression = fp32.size_bytes / art.size_bytes
        floor = suite.MODE_MIN_COMPRESSION[case.quant]
        assert compression >= floor, f"{case.id}: {compression:.2f}x smaller than fp32; floor {floor}x"


@pytest.mark.paper
@pytest.mark.parametrize("ratio", suite.RATIOS, ids=[r.name for r in suite.RATIOS])
def test_named_ratio(bench, ratio):
    value, detail = bench.named_ratio(ratio)
    assert value >= ratio.floor, f"{ratio.name} ratio {value:.1f}x < floor {ratio.floor}x ({detail})"


@pytest.mark.paper
def test_strict_ratio(bench):
    """Issue 12: a deployable compact artifact >= 160x smaller than BERT-Large fp32 .tflite (strict: bytes over
    bytes), whose accuracy is within 4.1 points of the large reference model's fp32, trained with the same budget.
    A known miss is a "strict-miss" record in edgemodels/expected.py (a strict xfail marker at collection)."""
    large_case = bench.case("bert-large", "fp32")
    if large_case is None:
        pytest.skip("needs bert-large fp32 in this run's matrix (the ratio's numerator)")
    large_bytes = bench.artifact(large_case).size_bytes
    refs = [c for c in (bench.case(big, "fp32") for big, _ in suite.PAIRS) if c is not None
            and bench.artifact(c).manifest.get("trained")]
    if not refs:
        pytest.skip("needs a trained large reference fp32 (bert-large or mpnet-base) for the accuracy condition")
    ref = refs[0]
    ref_acc = bench.accuracy(ref)
    best = None  # (ratio, case, accuracy, drop) of the smallest eligible artifact
    refused = {}  # candidates the device's runtime is expected to refuse: never the artifact of record there
    for c in bench.cases():
        if not c.candidate or not bench.artifact(c).manifest.get("trained"):
            continue
        refusal = bench.expected.refusal(bench.profile.runtime, bench.profile.runtime_version, c.quant, c.model)
        if refusal is not None:
            refused[c.id] = refusal.reason
            continue
        acc = bench.accuracy(c)
        drop = 100 * (ref_acc.accuracy - acc.accuracy)
        ratio = large_bytes / bench.artifact(c).size_bytes
        if drop <= suite.PAPER_DROP_PTS and (best is None or ratio > best[0]):
            best = (ratio, c, acc, drop)
    left_out = (f"; left out, {bench.profile.runtime} {bench.profile.runtime_version} on {bench.device} refuses "
                f"them: {', '.join(refused)}") if refused else ""
    if best is None:
        pytest.skip(f"no trained deployable compact artifact within {suite.PAPER_DROP_PTS} points of {ref.id}"
                    f"{left_out}")
    ratio, case, acc, _ = best
    size = bench.artifact(case).size_bytes
    budget = int(large_bytes / suite.STRICT_RATIO)
    bench.report.add_claim(claims.strict_ratio(ratio, case.id, size, budget, acc, ref.id, ref_acc, left_out,
                                               bench.claim_caveat(ref.model, ref_acc, acc)))
    if ratio < suite.STRICT_RATIO:  # an expected outcome where only this runtime's refusals stand in the way
        small_refused = [cid for cid in refused
                         if large_bytes / bench.artifact(next(c for c in bench.cases() if c.id == cid)).size_bytes
                         >= suite.STRICT_RATIO]
        if small_refused:
            pytest.xfail(f"the >= {suite.STRICT_RATIO:g}x artifacts ({', '.join(small_refused)}) are refused by "
                         f"{bench.profile.runtime} {bench.profile.runtime_version}: {refused[small_refused[0]]}; the "
                         f"best this device loads is {case.id} at {ratio:.1f}x")
    assert ratio >= suite.STRICT_RATIO, (
        f"best deployable artifact within {suite.PAPER_DROP_PTS} pt is {case.id} at {ratio:.1f}x ({size:,} bytes; "
        f"budget {budget:,} = {large_bytes:,} / {suite.STRICT_RATIO:g})")
