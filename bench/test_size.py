"""Artifact sizes: each mode's compression against its own fp32 file, and the paper's ~160x read three ways."""

import pytest

from edgemodels import suite

pytestmark = pytest.mark.size

# fp32 FlatBuffer ~= 4 bytes per parameter; fp16 ~= 2. A file far off means conversion lost or duplicated weights.
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0}
PARAM_SIZE_TOLERANCE = 0.05


def test_artifact_size(bench, case):
    art = bench.artifact(case)
    assert art.tflite.stat().st_size == art.size_bytes, f"{art.tflite}: size differs from its manifest"
    ref = bench.reference_fp32()
    if ref is not None:
        bench.row(case).ratio = ref.size_bytes / art.size_bytes
    if case.quant in BYTES_PER_PARAM:
        expected = art.manifest["params"] * BYTES_PER_PARAM[case.quant]
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
