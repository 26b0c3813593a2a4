"""One record per quantization mode: how it is made, what it may lose, who refuses it.

convert.py (how to produce it), pipeline.py (cache keys, stages), study/criteria.py (tolerances),
study/expected.py (expected refusals) and the bench (size floors) all read `MODES`; adding a mode is one entry
here. Pure data: importing this module imports no TensorFlow, so the CLI's argument parser and the device side
can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from edgemodels.errors import EdgeModelsError


class UnknownModeError(EdgeModelsError, ValueError):
    pass


@dataclass(frozen=True)
class ConverterOptions:
    """TFLiteConverter settings, applied to the SavedModel."""

    optimize: bool = False  # tf.lite.Optimize.DEFAULT
    per_tensor_dense: bool = False  # private switch: FULLY_CONNECTED v9 (per-tensor), loads on tflite-runtime 2.14
    float16: bool = False  # target_spec.supported_types = [tf.float16]
    int8_activations: bool = False  # full integer with a representative set (calibration)


@dataclass(frozen=True)
class QuantizerRecipe:
    """ai-edge-quantizer weight-only recipe applied to the .tflite of mode `source` (edgemodels/build/quantize.py)."""

    bits: int
    granularity: str = "CHANNELWISE"  # ai_edge_quantizer.qtyping.QuantGranularity member name
    embeddings: bool = True  # constant-table GATHERs rewritten to EMBEDDING_LOOKUP so the tables are quantized
    dynamic: bool = False  # integer kernels use the int weights (activations quantized per inference), instead of
    # an explicit DEQUANTIZE to fp32 and float kernels ("weight-only")

    @property
    def label(self) -> str:
        emb = ", embeddings included" if self.embeddings else ""
        kind = "dynamic (int kernels)" if self.dynamic else "weight-only (DEQUANTIZE, float kernels)"
        return f"ai-edge-quantizer {kind} int{self.bits} {self.granularity.lower()}{emb}"


@dataclass(frozen=True)
class Refusal:
    """A device runtime known not to load this mode (an expected outcome: strict xfail quoting `reason`)."""

    runtime: str
    version: str
    reason: str
    model: str | None = None  # only this model (None: every model)
    instead: str | None = None  # the mode that runtime should use
    crash: bool = False  # the runtime crashes (a signal, not an error): the bench runs the case in a child first


@dataclass(frozen=True)
class QuantMode:
    name: str
    description: str
    converter: ConverterOptions | None = None  # TFLite converter from the SavedModel, or
    recipe: QuantizerRecipe | None = None  # ai-edge-quantizer applied to mode `source`'s .tflite
    source: str | None = None  # for a recipe: the mode whose .tflite is quantized
    prune_min_count: int = 0  # >0: the vocabulary is first pruned to the training split's pieces used at least this
    # often (edgemodels/build/prune.py); 0: not pruned
    calibration: bool = False  # needs a representative set drawn from the training split
    drop_tolerance_pts: float = 0.0  # accuracy drop allowed vs the same model's fp32 (points)
    arm_diff_tolerance: float = 1e-4  # max |ARM - x86| logits of the same file, x max(1, largest |x86 logit|)
    arm_diff_measured: float | None = None  # the largest such value measured (None: not yet measured); where and
    # when: docs/measurements.md#arm-diff
    min_compression: float = 1.0  # the same model's fp32 bytes / this mode's bytes must reach this
    deployable: bool = False  # meant to ship on a device: a compact model in this mode must meet the speed target
    bytes_per_param: float | None = None  # where the file size follows from the parameter count (fp32 4, fp16 2)
    refusals: tuple[Refusal, ...] = field(default_factory=tuple)

    @property
    def prune_vocab(self) -> bool:
        return self.prune_min_count > 0

    def __post_init__(self):
        if (self.converter is None) == (self.recipe is None):
            raise ValueError(f"mode {self.name}: exactly one of converter and recipe")
        if self.recipe is not None and self.source is None:
            raise ValueError(f"mode {self.name}: a recipe needs a source mode")

    def key_parts(self) -> dict[str, object]:
        """What a cache key must add for this mode beyond its name (empty for converter modes: their keys predate
        this registry and stay byte-identical)."""
        if self.recipe is None:
            return {}
        return {"recipe": self.recipe.label, "source_mode": self.source}


# The Pi 3's runtime: tflite-runtime 2.14 has no INT4 kernels, so w4 files load and then fail at the first invoke,
# while w8 runs (docs/measurements.md#pi3-refusals).
_PI3 = ("tflite-runtime", "2.14.0")
_PI3_W4 = ("tflite-runtime 2.14 has no INT4 kernels: EMBEDDING_LOOKUP fails at the first invoke (\"Type not currently "
           "supported\"); a Pi 3 should use w8 (or pruned-w8)")

# w4 is dynamic (int kernels read the int4 weights; weight-only int4 re-expands its tables at every invoke) and
# channelwise (bytes are the point of int4; blockwise's scales cost bytes for little accuracy). w8 stays
# weight-only: expanded once at load, it runs at fp32 speed and loads on tflite-runtime 2.14, where dynamic int8's
# per-channel FULLY_CONNECTED v12 is refused like drq (docs/measurements.md#w4-recipe).
_W4 = QuantizerRecipe(bits=4, dynamic=True)
_W8 = QuantizerRecipe(bits=8)
PRUNE_MIN_COUNT = 5
"""Frequency floor of the pruned modes: the lowest that brings pruned-w4 under the strict 160x budget on both the
built-in data and RepLab (at floor 1 it was just over it), at the cost of more unseen evaluation tokens
(docs/measurements.md#prune-min-count)."""

# Each mode's drop tolerance and compression floor leave room below what was measured
# (docs/measurements.md#mode-tolerances); its ARM tolerance is 2-5x its measured drift (docs/measurements.md#arm-diff).
_MODES: tuple[QuantMode, ...] = (
    QuantMode("fp32", "no quantization", converter=ConverterOptions(),
              arm_diff_tolerance=2e-3, arm_diff_measured=6.6e-4, min_compression=1.0, bytes_per_param=4.0),
    QuantMode("drq", "dynamic-range quantization (int8 weights, float activations; the paper's mode). "
                     "TF 2.21 writes per-channel FULLY_CONNECTED v12, which tflite-runtime 2.14 cannot load",
              converter=ConverterOptions(optimize=True), drop_tolerance_pts=2.0,  # int8 weights, per channel
              arm_diff_tolerance=0.75, arm_diff_measured=0.351, min_compression=3.5, deployable=True,
              refusals=(Refusal(*_PI3, "TF 2.21 writes per-channel FULLY_CONNECTED v12; tflite-runtime 2.14 knows "
                                       "up to v11", instead="drq-compat"),)),
    QuantMode("drq-compat", "dynamic-range quantization with per-tensor dense weights (FULLY_CONNECTED v9): "
                            "loads on tflite-runtime 2.14, the last runtime a 32-bit Pi 3 can install",
              converter=ConverterOptions(optimize=True, per_tensor_dense=True),
              drop_tolerance_pts=2.5,  # int8 weights, per tensor: coarser
              arm_diff_tolerance=0.75, arm_diff_measured=0.36, min_compression=3.5, deployable=True),
    QuantMode("fp16", "float16 weights (dequantized to fp32 at load on CPU)",
              converter=ConverterOptions(optimize=True, float16=True),
              drop_tolerance_pts=0.5,  # fp16 weights, fp32 compute: rounding only
              arm_diff_tolerance=5e-4, arm_diff_measured=1.8e-4, min_compression=1.9, bytes_per_param=2.0),
    QuantMode("int8", "full-integer quantization with a representative set drawn from the training data "
                      "(float fallback where an op has no int8 kernel)",
              converter=ConverterOptions(optimize=True, int8_activations=True), calibration=True,
              # int8 activations too; measured far worse for these models: study/expected.py (kind "loss")
              drop_tolerance_pts=5.0, arm_diff_tolerance=0.5, arm_diff_measured=0.16, min_compression=3.5,
              # The Pi 3's interpreter segfaults on MobileBERT int8 under emulation (MiniLM int8 runs); not
              # confirmed on a physical Pi 3 (docs/measurements.md#pi3-refusals).
              refusals=(Refusal(*_PI3, "tflite-runtime 2.14 armhf crashes (SIGSEGV) on MobileBERT int8 under "
                                       "emulation", model="mobilebert", instead="drq-compat", crash=True),)),
    # ai-edge-quantizer modes (build/quantize.py), applied to the fp32 .tflite: every large weight, the word
    # embeddings included. w8 drifts on ARM like fp32: float kernels after DEQUANTIZE.
    QuantMode("w8", "weight-only int8 (ai-edge-quantizer, channelwise, embedding tables included; DEQUANTIZE'd "
                    "once at load, float kernels): loads on tflite-runtime 2.14",
              recipe=_W8, source="fp32", drop_tolerance_pts=1.0, arm_diff_tolerance=1.5e-5, arm_diff_measured=3.5e-6,
              min_compression=3.5, deployable=True),
    QuantMode("w4", "int4 weights (ai-edge-quantizer dynamic recipe, channelwise, embedding tables included; "
                    "LiteRT's hybrid kernels use them as int4, activations quantized per inference)",
              recipe=_W4, source="fp32", drop_tolerance_pts=4.0, arm_diff_tolerance=0.05, arm_diff_measured=0.0171,
              min_compression=6.0, deployable=True, refusals=(Refusal(*_PI3, _PI3_W4, instead="w8"),)),
    # Vocabulary-pruned variants: the training split's pieces used >= PRUNE_MIN_COUNT times (build/prune.py).
    # Unseen words split into kept word pieces or fall to [UNK], hence a larger tolerance than the same mode unpruned
    # (docs/measurements.md#mode-tolerances). RepLab keeps about twice the pieces: its compression is lower than CI's.
    QuantMode("pruned-fp32", "vocabulary pruned to the training split's frequent pieces, no quantization "
                             "(the source of pruned-w4/pruned-w8)", converter=ConverterOptions(),
              prune_min_count=PRUNE_MIN_COUNT,
              drop_tolerance_pts=2.0, arm_diff_tolerance=1e-4, min_compression=1.0, bytes_per_param=4.0),
    QuantMode("pruned-drq", "vocabulary pruned to the training split's frequent pieces, then dynamic-range "
                            "quantization",
              converter=ConverterOptions(optimize=True), prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=3.0,
              arm_diff_tolerance=0.1, arm_diff_measured=0.0230, min_compression=5.0,
              deployable=True,
              refusals=(Refusal(*_PI3, "TF 2.21 writes per-channel FULLY_CONNECTED v12; tflite-runtime 2.14 knows "
                                       "up to v11", instead="pruned-w8"),)),
    QuantMode("pruned-w8", "vocabulary pruned, then weight-only int8 (embeddings included)", recipe=_W8,
              source="pruned-fp32", prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=3.0, arm_diff_tolerance=1e-5,
              arm_diff_measured=2.4e-6, min_compression=5.0, deployable=True),
    QuantMode("pruned-w4", "vocabulary pruned, then int4 weights as w4 (embeddings included): the smallest file",
              recipe=_W4, source="pruned-fp32", prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=5.0,
              arm_diff_tolerance=0.05, arm_diff_measured=0.0145, min_compression=9.0, deployable=True,
              refusals=(Refusal(*_PI3, _PI3_W4, instead="pruned-w8"),)),
)

MODES: Mapping[str, QuantMode] = MappingProxyType({m.name: m for m in _MODES})
"""Every quantization mode, by name (immutable)."""

PAPER_MODES: tuple[str, ...] = ("fp32", "drq", "drq-compat", "fp16", "int8")
"""The TFLite converter's modes (what the paper's comparison and the committed baselines cover)."""


def get(name: str) -> QuantMode:
    try:
        return MODES[name]
    except KeyError:
        raise UnknownModeError(f"unknown quantization mode {name!r}; valid: {', '.join(MODES)}") from None

