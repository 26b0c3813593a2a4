"""One record per quantization mode: how it is made, what it may lose, who refuses it.

convert.py (how to produce it), pipeline.py (cache keys, stages), suite.py (tolerances, expected refusals) and
the bench (size floors) all read `MODES`; adding a mode is one entry here. Pure data: importing this module
imports no TensorFlow, so the CLI's argument parser and the device side can use it.
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
    """ai-edge-quantizer weight-only recipe applied to the .tflite of mode `source` (edgemodels/quantize.py)."""

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
    # often (edgemodels/prune.py); 0: not pruned
    calibration: bool = False  # needs a representative set drawn from the training split
    drop_tolerance_pts: float = 0.0  # accuracy drop allowed vs the same model's fp32 (points)
    arm_diff_tolerance: float = 1e-4  # max |ARM - x86| logits of the same file, x max(1, largest |x86 logit|)
    arm_diff_measured: float | None = None  # the largest such value measured (None: not yet measured)
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


# Measured 2026-12-01 with the x86-64 tflite-runtime 2.14.0 wheel (numpy<2 venv), and since then by CI's pi3 pass
# with the armhf build under QEMU (the same verdicts): w4 and pruned-w4 load (allocate_tensors passes)
# and fail at the first invoke: "Type not currently supported. Node number 5 (EMBEDDING_LOOKUP) failed to invoke"
# (2.14's EMBEDDING_LOOKUP has no INT4 table; a weight-only int4 file fails earlier, "dequantize.cc:58 ... Node
# number 5 (DEQUANTIZE) failed to prepare"). w8 loads and runs (logits within 0.004 of fp32 on one tweet).
_PI3 = ("tflite-runtime", "2.14.0")
_PI3_W4 = ("tflite-runtime 2.14 has no INT4 kernels: EMBEDDING_LOOKUP fails at the first invoke (\"Type not currently "
           "supported\"); a Pi 3 should use w8 (or pruned-w8)")

# Measured 2026-12-01 on MiniLM-L6 (CI-trained, 600 built-in test tweets, ai-edge-litert 2.3.0, 2 threads, a loaded
# 2-core VM; README "Quantization modes"): int4 weight-only (DEQUANTIZE + float kernels) 12,275,568 bytes, 78.2 %,
# max |logit diff| vs fp32 1.25, 367 ms/inference: LiteRT re-expands the int4 tables at every invoke; int4 dynamic
# channelwise 12,268,816 bytes, 78.2 %, 1.27, 23 ms; int4 dynamic blockwise-32 13,061,264 bytes (+6.5 %), 78.8 %,
# 0.49, 19 ms; fp32 90,350,148 bytes, 80.8 %, 70 ms. So w4 is dynamic (same bytes, 16x faster than weight-only)
# and channelwise (the bytes are the point of w4: blockwise's scales cost 6.5 % for 0.7 point). w8 stays
# weight-only: int8 DEQUANTIZE is expanded once at load, runs at fp32 speed, and loads on tflite-runtime 2.14
# (dynamic int8 would write per-channel FULLY_CONNECTED v12, refused there like drq).
_W4 = QuantizerRecipe(bits=4, dynamic=True)
_W8 = QuantizerRecipe(bits=8)
PRUNE_MIN_COUNT = 5
"""Frequency floor of the pruned modes. Measured 2026-12-01 (MiniLM WordPiece, seed 0): built-in training split
(8,589 tweets) keeps 11,503 / 7,665 / 5,887 / 4,153 pieces at floors 1 / 2 / 3 / 5, and 1.8 / 3.4 / 4.9 / 7.2 % of
test tokens are unseen; RepLab 2013 (24,140 tweets) keeps 17,798 / 13,614 / 11,243 / 8,537 (0.6 / 1.2 / 1.8 / 3.0 %
unseen). At floor 1, pruned-w4 measured 8,395,088 bytes on built-in data (159.4x) and RepLab's would be ~9.7 MB;
at 5 both are below the 8,362,305-byte budget (~6.9 and ~7.8 MB, estimated from 204 bytes a row)."""

_MODES: tuple[QuantMode, ...] = (
    QuantMode("fp32", "no quantization", converter=ConverterOptions(),
              arm_diff_tolerance=1e-4, arm_diff_measured=2.0e-5, min_compression=1.0, bytes_per_param=4.0),
    QuantMode("drq", "dynamic-range quantization (int8 weights, float activations; the paper's mode). "
                     "TF 2.21 writes per-channel FULLY_CONNECTED v12, which tflite-runtime 2.14 cannot load",
              converter=ConverterOptions(optimize=True), drop_tolerance_pts=2.0,  # int8 weights, per channel
              arm_diff_tolerance=0.25, arm_diff_measured=0.076, min_compression=3.5, deployable=True,
              refusals=(Refusal(*_PI3, "TF 2.21 writes per-channel FULLY_CONNECTED v12; tflite-runtime 2.14 knows "
                                       "up to v11", instead="drq-compat"),)),
    QuantMode("drq-compat", "dynamic-range quantization with per-tensor dense weights (FULLY_CONNECTED v9): "
                            "loads on tflite-runtime 2.14, the last runtime a 32-bit Pi 3 can install",
              converter=ConverterOptions(optimize=True, per_tensor_dense=True),
              drop_tolerance_pts=2.5,  # int8 weights, per tensor: coarser
              arm_diff_tolerance=0.5, arm_diff_measured=0.217, min_compression=3.5, deployable=True),
    QuantMode("fp16", "float16 weights (dequantized to fp32 at load on CPU)",
              converter=ConverterOptions(optimize=True, float16=True),
              drop_tolerance_pts=0.5,  # fp16 weights, fp32 compute: rounding only
              arm_diff_tolerance=5e-4, arm_diff_measured=1.8e-4, min_compression=1.9, bytes_per_param=2.0),
    QuantMode("int8", "full-integer quantization with a representative set drawn from the training data "
                      "(float fallback where an op has no int8 kernel)",
              converter=ConverterOptions(optimize=True, int8_activations=True), calibration=True,
              # int8 activations too; measured far worse for these models: edgemodels/expected.py (kind "loss")
              drop_tolerance_pts=5.0, arm_diff_tolerance=0.5, arm_diff_measured=0.16, min_compression=3.5,
              # Measured 2026-11-24 under QEMU (armhf, cortex-a7): the interpreter segfaults on MobileBERT int8
              # (MiniLM int8 runs). Not confirmed on a physical Pi 3.
              refusals=(Refusal(*_PI3, "tflite-runtime 2.14 armhf crashes (SIGSEGV) on MobileBERT int8 under "
                                       "emulation", model="mobilebert", instead="drq-compat", crash=True),)),
    # ai-edge-quantizer modes (edgemodels/quantize.py), applied to the fp32 .tflite: every large weight, the word
    # embeddings included. Drop tolerances: w8 measured -0.5, w4 -2.7 points (CI scale). ARM drift measured under QEMU
    # on MiniLM-L6 (2026-12-01, absolute max |logit diff|, so an upper bound of the scaled figure): CI scale 4 tweets
    # (Pi 3 armhf tflite-runtime 2.14 / Pi 4 aarch64 ai-edge-litert 2.3.0) and paper scale 8 tweets (Pi 4):
    # w8 3.5e-6 / 6e-7, 2.1e-6 (float kernels after DEQUANTIZE: fp32's drift); w4 - / 0.0072, 0.0171;
    # pruned-drq - / 0.012, 0.0230; pruned-w8 2.4e-6 / 3.6e-7; pruned-w4 - / 0.0105, 0.0145 (- : the Pi 3 refuses).
    QuantMode("w8", "weight-only int8 (ai-edge-quantizer, channelwise, embedding tables included; DEQUANTIZE'd "
                    "once at load, float kernels): loads on tflite-runtime 2.14",
              recipe=_W8, source="fp32", drop_tolerance_pts=1.0, arm_diff_tolerance=1.5e-5, arm_diff_measured=3.5e-6,
              min_compression=3.5, deployable=True),  # 3.84x
    QuantMode("w4", "int4 weights (ai-edge-quantizer dynamic recipe, channelwise, embedding tables included; "
                    "LiteRT's hybrid kernels use them as int4, activations quantized per inference)",
              recipe=_W4, source="fp32", drop_tolerance_pts=4.0, arm_diff_tolerance=0.05, arm_diff_measured=0.0171,
              min_compression=6.0, deployable=True, refusals=(Refusal(*_PI3, _PI3_W4, instead="w8"),)),  # 7.36x
    # Vocabulary-pruned variants: the training split's pieces used >= PRUNE_MIN_COUNT times (edgemodels/prune.py).
    # Unseen words split into kept word pieces or fall to [UNK], hence a larger tolerance than the same mode unpruned.
    # Measured drops vs fp32 (CI scale, floor 5): pruned-fp32 -1.3, pruned-drq -2.0, pruned-w4 -3.3 points.
    QuantMode("pruned-fp32", "vocabulary pruned to the training split's frequent pieces, no quantization "
                             "(the source of pruned-w4/pruned-w8)", converter=ConverterOptions(),
              prune_min_count=PRUNE_MIN_COUNT,
              drop_tolerance_pts=2.0, arm_diff_tolerance=1e-4, min_compression=1.0, bytes_per_param=4.0),
    QuantMode("pruned-drq", "vocabulary pruned to the training split's frequent pieces, then dynamic-range "
                            "quantization",
              converter=ConverterOptions(optimize=True), prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=3.0,
              arm_diff_tolerance=0.1, arm_diff_measured=0.0230, min_compression=5.0,  # CI 6.94x; RepLab: 2x pieces
              deployable=True,
              refusals=(Refusal(*_PI3, "TF 2.21 writes per-channel FULLY_CONNECTED v12; tflite-runtime 2.14 knows "
                                       "up to v11", instead="pruned-w8"),)),
    QuantMode("pruned-w8", "vocabulary pruned, then weight-only int8 (embeddings included)", recipe=_W8,
              source="pruned-fp32", prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=3.0, arm_diff_tolerance=1e-5,
              arm_diff_measured=2.4e-6, min_compression=5.0, deployable=True),
    QuantMode("pruned-w4", "vocabulary pruned, then int4 weights as w4 (embeddings included): the smallest file",
              recipe=_W4, source="pruned-fp32", prune_min_count=PRUNE_MIN_COUNT, drop_tolerance_pts=5.0,
              arm_diff_tolerance=0.05, arm_diff_measured=0.0145, min_compression=9.0, deployable=True,  # CI 13.1x
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

