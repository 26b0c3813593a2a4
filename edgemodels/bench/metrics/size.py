"""Sizes: each mode's compression against its own fp32 file, and the paper's ~160x read several ways."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgemodels.report import claims
from edgemodels.study import criteria
from edgemodels.study.matrix import Case


def named_ratio(s, defn: criteria.RatioDefinition) -> tuple[float, str]:
    """One of the paper's size-ratio readings, from real files; skips when the run lacks an input."""
    need = {"large": s.case(criteria.LARGE_REFERENCE, "fp32"), "drq": s.case(criteria.PAPER_COMPACT, "drq")}
    if None in need.values():
        pytest.skip(f"{defn.name}: needs {criteria.LARGE_REFERENCE} fp32 and {criteria.PAPER_COMPACT} drq in this "
                    "run's matrix")
    large, small = s.artifact(need["large"]), s.artifact(need["drq"])
    compat_case = s.case(criteria.PAPER_COMPACT, "drq-compat")
    compat = s.artifact(compat_case).size_bytes if compat_case else None
    ckpt = s.source.checkpoint_bytes(need["large"]) if defn.name == "checkpoint" else None
    value, detail = criteria.ratio_value(defn, criteria.RatioInputs(
        large.size_bytes, large.manifest["weight_bytes"], small.size_bytes, small.manifest["weight_bytes"],
        compat, ckpt))
    if value is None:
        pytest.skip(f"{defn.name}: {detail}")
    s.report.add_claim(claims.size_ratio(defn, value, detail))
    return value, detail


@dataclass(frozen=True)
class StrictCandidate:
    ratio: float
    case: Case
    accuracy: object
    size: int


@dataclass(frozen=True)
class Strict:
    """The smallest deployable compact artifact within the paper's drop of the large reference, and why others
    were left out."""

    large_bytes: int
    reference: Case
    reference_accuracy: object
    best: StrictCandidate | None
    refused: dict[str, str]  # candidates the device's runtime is expected to refuse: never the artifact of record
    left_out: str  # what the claim says of them


def strict(s) -> Strict:
    """The strict 160x row's inputs; skips where the run lacks BERT-Large fp32 or a trained large reference."""
    large_case = s.case(criteria.LARGE_REFERENCE, "fp32")
    if large_case is None:
        pytest.skip(f"needs {criteria.LARGE_REFERENCE} fp32 in this run's matrix (the ratio's numerator)")
    large_bytes = s.artifact(large_case).size_bytes
    refs = [c for c in (s.case(big, "fp32") for big, _ in criteria.PAIRS)
            if c is not None and s.artifact(c).manifest.get("trained")]
    if not refs:
        pytest.skip("needs a trained large reference fp32 (bert-large or mpnet-base) for the accuracy condition")
    ref = refs[0]
    ref_acc = s.accuracy(ref)
    best, refused = None, {}
    for c in s.cases():
        if not c.candidate or not s.artifact(c).manifest.get("trained"):
            continue
        refusal = s.device_refusal(c)
        if refusal is not None:
            refused[c.id] = refusal.reason
            continue
        acc = s.accuracy(c)
        ratio = large_bytes / s.artifact(c).size_bytes
        if criteria.drop_pts(ref_acc.accuracy, acc.accuracy) <= criteria.PAPER_DROP_PTS and (best is None or ratio > best.ratio):
            best = StrictCandidate(ratio, c, acc, s.artifact(c).size_bytes)
    left_out = (f"; left out, {s.profile.runtime} {s.profile.runtime_version} on {s.device} refuses them: "
                f"{', '.join(refused)}") if refused else ""
    result = Strict(large_bytes, ref, ref_acc, best, refused, left_out)
    if best is None:
        pytest.skip(f"no trained deployable compact artifact within {criteria.PAPER_DROP_PTS} points of {ref.id}"
                    f"{result.left_out}")
    budget = int(large_bytes / criteria.STRICT_RATIO)
    s.report.add_claim(claims.strict_ratio(best.ratio, best.case.id, best.size, budget, best.accuracy, ref.id, ref_acc,
                                           result.left_out, s.claim_caveat(ref.model, ref_acc, best.accuracy)))
    return result


def refused_above(s, result: Strict) -> list[str]:
    """The refused candidates that would have met the strict ratio: the device's runtime stands in their way."""
    ids = {c.id: c for c in s.cases()}
    return [cid for cid in result.refused
            if result.large_bytes / s.artifact(ids[cid]).size_bytes >= criteria.STRICT_RATIO]
