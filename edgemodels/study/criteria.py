"""Every bar a result is held to, and the reference models those bars name, in one place.

The paper's figures (160x, -4.1 points, >= 1 tweet/s), the model pairs compared, the accuracy floors per data set
and scale, each quantization mode's tolerances (views of edgemodels/build/modes.py, where each mode's record says
why), and the regression gate's thresholds. Measured values these rest on are dated in docs/measurements.md under
the id each constant cites; the code says what a number means, the docs say where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from edgemodels.build import modes

# -- the study's models ------------------------------------------------------------------------------------------

COMPACT: tuple[str, ...] = ("mobilebert", "minilm-l6", "tiny-bert", "minilm-l6-kd")
"""Deployment candidates: the models the paper expects to fit and reach the device's speed target (minilm-l6-kd:
MiniLM-L6 distilled from MPNet-base)."""

PAIRS: tuple[tuple[str, str], ...] = (("bert-large", "mobilebert"), ("mpnet-base", "minilm-l6"))
"""(large, compact) pairs compared on accuracy: the paper's pair, and the pretrained stand-ins available offline."""

LARGE_REFERENCE = "bert-large"
"""The model whose fp32 .tflite is the numerator of the size ratios (the paper's BERT-Large)."""

RATIO_REFERENCES: tuple[str, ...] = (LARGE_REFERENCE, "mpnet-base")
"""Whose fp32 file (at seq 128) the report's 'ratio' column divides by: the first one the run built."""

PAPER_COMPACT = "mobilebert"
"""The paper's deployed model: the speed claim quotes its best mode where it was timed."""

SPEED_CLAIM_MODELS: tuple[str, ...] = (PAPER_COMPACT, "minilm-l6")
"""The compact models whose deployable modes at seq 128 make up the '>= 1 tweet/s' claim."""

# -- the paper's figures -----------------------------------------------------------------------------------------

PAPER_RATIO = 160.0
"""The paper: quantized MobileBERT ~160x smaller than BERT-Large."""

PAPER_RATIO_HOLDS = 150.0
"""The paper's '~160x' counts as reproduced at >= 150x (within ~6 %)."""

PAPER_DROP_PTS = 4.1
"""The paper: quantized MobileBERT loses 4.1 points against BERT-Large."""

STRICT_RATIO = 160.0
"""A deployable artifact at most BERT-Large fp32 .tflite bytes / 160, within PAPER_DROP_PTS of the large reference
model's fp32 accuracy (the claims table's "strict" row; no ~150 leeway)."""

PAPER_DATA_KIND = "replab"
"""The paper's data (RepLab 2013): the accuracy claim is only tested on it."""

SPEED_TARGET_PER_S = 1.0
"""The paper's bar for "usable on the device": at least one classification per second (a device profile may set
its own, DeviceProfile.target_inferences_per_s)."""


@dataclass(frozen=True)
class RatioDefinition:
    name: str
    numerator: str  # what is big
    denominator: str  # what is small
    floor: float  # measured value minus headroom (docs/measurements.md#ratios)
    paper_comparable: bool  # whether this is the reading of the paper's 160x


RATIOS: tuple[RatioDefinition, ...] = (
    RatioDefinition("checkpoint", "BERT-Large fine-tuning checkpoint (Keras model.save, weights + Adam slots)",
                    "quantized MobileBERT .tflite (drq-compat: per-tensor)", 150.0, True),
    RatioDefinition("deployable", "BERT-Large fp32 .tflite", "quantized MobileBERT .tflite (drq)", 45.0, False),
    RatioDefinition("weights", "BERT-Large fp32 weight bytes", "MobileBERT drq weight bytes", 45.0, False),
)


@dataclass(frozen=True)
class RatioInputs:
    """Sizes the named ratios are computed from (bytes)."""

    large_fp32: int
    large_fp32_weights: int
    compact_drq: int
    compact_drq_weights: int
    compact_drq_compat: int | None
    checkpoint: int | None


def ratio_value(defn: RatioDefinition, x: RatioInputs) -> tuple[float | None, str]:
    """(ratio, how it was computed); None where an input was not built in this run."""
    if defn.name == "checkpoint":
        if x.checkpoint is None or x.compact_drq_compat is None:
            return None, "needs the BERT-Large checkpoint and MobileBERT drq-compat"
        return x.checkpoint / x.compact_drq_compat, f"{x.checkpoint:,} / {x.compact_drq_compat:,} bytes"
    if defn.name == "deployable":
        return x.large_fp32 / x.compact_drq, f"{x.large_fp32:,} / {x.compact_drq:,} bytes"
    if defn.name == "weights":
        return x.large_fp32_weights / x.compact_drq_weights, (
            f"{x.large_fp32_weights:,} / {x.compact_drq_weights:,} weight bytes")
    raise ValueError(f"unknown ratio {defn.name!r}")


def drop_pts(reference: float, other: float) -> float:
    """100 x (reference - other) accuracy in points, rounded to 1e-9 (and never -0.0). Why: accuracies are counts / n,
    and an exact 4.1-point drop (759 vs 800 of 1,000) is 4.100000000000003 in binary floating point, which would
    miss the paper's own bound."""
    return round(100 * (reference - other), 9) + 0.0


# -- accuracy floors ---------------------------------------------------------------------------------------------

FLOORS: Mapping[tuple[str, str, str, str], float] = MappingProxyType({
    # (data kind, scale, model, mode) -> minimum accuracy; mode "*" covers the modes without their own entry. Each is
    # the lowest measured value of its group less 3 points, and must beat the majority class by MAJORITY_MARGIN_PTS
    # (docs/measurements.md#floors). int8 has no floor of its own: it is a known loss (study/expected.py).
    ("builtin", "ci", "minilm-l6", "*"): 0.76,
    ("builtin", "ci", "mpnet-base", "*"): 0.80,
    ("replab", "paper", "minilm-l6", "*"): 0.71,
    ("replab", "paper", "mpnet-base", "*"): 0.74,
})

MAJORITY_MARGIN_PTS = 2.0
"""How far (points) every floor must sit above the majority class: a model that always predicts the most frequent
label scores exactly the majority rate, so a floor at or below it tests nothing. Two points is ~1.5 standard errors
of an accuracy on the 600-example CI sample (sqrt(0.66 * 0.34 / 600) = 1.9 points)."""

MAJORITY_RATES: Mapping[tuple[str, str], float] = MappingProxyType({
    # Majority-class share of each evaluation set the floors were measured on (tests/test_suite.py recomputes the
    # built-in one; RepLab's is from `python -m edgemodels data stats --data replab:DIR`).
    ("builtin", "ci"): 0.6567,
    ("replab", "paper"): 0.595,
})


def floor_for(kind: str, scale: str, model: str, mode: str, majority: float) -> tuple[float, str]:
    """(minimum accuracy, why); accuracy must be strictly above it. A recorded floor not clearing the majority class
    by the margin is a defect of this table, reported as such (ValueError)."""
    bar = majority + MAJORITY_MARGIN_PTS / 100
    for key in ((kind, scale, model, mode), (kind, scale, model, "*")):
        if key in FLOORS:
            if not FLOORS[key] > bar:
                raise ValueError(f"FLOORS[{key}] = {FLOORS[key]} does not beat the majority class {majority:.4f} "
                                 f"by {MAJORITY_MARGIN_PTS} points: it tests nothing; re-measure it")
            return FLOORS[key], f"recorded floor for {key}"
    return bar, (f"majority class {majority:.4f} + {MAJORITY_MARGIN_PTS} points "
                 "(no floor recorded for this data set and scale)")


# -- per-mode tolerances (views of the registry in edgemodels/build/modes.py) ------------------------------------

MODE_DROP_TOLERANCE_PTS: Mapping[str, float] = MappingProxyType(
    {n: m.drop_tolerance_pts for n, m in modes.MODES.items()})
"""Accuracy drop allowed vs the same model's fp32, in points, by mode (docs/measurements.md#mode-tolerances)."""

MODE_MIN_COMPRESSION: Mapping[str, float] = MappingProxyType({n: m.min_compression for n, m in modes.MODES.items()})
"""How much smaller each mode must be than the same model's fp32 file (docs/measurements.md#mode-tolerances)."""

PARAM_SIZE_TOLERANCE = 0.05
"""A file further than this from params x the mode's bytes per parameter lost or duplicated weights."""

ARM_DIFF_MEASURED: Mapping[str, float] = MappingProxyType(
    {n: m.arm_diff_measured for n, m in modes.MODES.items() if m.arm_diff_measured is not None})
"""The largest normalized ARM-vs-x86 logit difference measured per mode (docs/measurements.md#arm-diff)."""

ARM_DIFF_TOLERANCE: Mapping[str, float] = MappingProxyType({n: m.arm_diff_tolerance for n, m in modes.MODES.items()})
"""Max |device logits - the same file's x86 logits| / max(1, largest |x86 logit|), by mode: only the kernels differ,
never the quantization. Each is 2-5x the largest measured value: far above a float kernel's error, far below a wrong
kernel's."""


def arm_diff_tolerance(mode: str) -> float:
    """`mode`'s ARM-vs-x86 tolerance; a mode outside the registry (a ready .tflite "as-is": its quantization is not
    recorded) gets the loosest registered one, which still catches a wrong kernel."""
    return ARM_DIFF_TOLERANCE.get(mode, max(ARM_DIFF_TOLERANCE.values()))


def arm_diff_limit(mode: str, x86_max_abs: float | None) -> float:
    """The largest |ARM - x86| logit difference allowed for `mode`, at the scale of the x86 logits."""
    return arm_diff_tolerance(mode) * max(1.0, x86_max_abs or 0.0)


# -- the regression gate -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """How much worse than its baseline a row may get before --baseline-compare fails it."""

    accuracy_drop_pts: float = 0.5
    cross_machine_accuracy_pts: float = 5.0
    """A machine with no accuracy of its own in the baseline (a new CI runner's CPU) is compared with the lowest
    recorded machine at this looser tolerance: training is bit-identical only on one CPU, and the two CPUs CI ran on
    differed by up to 4.3 points (docs/measurements.md#cross-cpu-accuracy)."""
    size_increase: float = 0.02
    throughput_drop: float = 0.10
    """The speed gate's threshold (--throughput-threshold): a regression when the whole interval of this run's
    yardstick-relative speed over the baseline's lies below 1 - this."""
