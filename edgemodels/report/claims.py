"""The paper's claims as rows of the claims table (`rows.Claim`), from measured values, and read back from reports.

What a verdict rests on is decided here, once: the bench measures (edgemodels/bench/, bench/test_*.py) and hands the
figures over; `python -m edgemodels claims` merges the rows of several runs. No pytest, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgemodels.report.rows import Claim, ReportError, Row, read_report
from edgemodels.study import criteria
from edgemodels.study.criteria import drop_pts
from edgemodels.study.matrix import Case


def caveat(scale: str, data_kind: str, large_trained: bool, large_accuracy: float | None,
           compact_accuracy: float | None, majority: float | None, *, max_examples: int | None = None) -> str | None:
    """Why a run cannot test the paper's accuracy claim (issue 12 item 6), or None when it can.

    A verdict from a reduced budget, other data, or a large reference that learned less than the compact model
    reads as a reproduction when it is not one: the large model must be trained (not a random init), must beat
    the majority class, and must not lose to the compact model by more than the claim's own 4.1 points (then it is
    under-trained: the claim is about what compression costs a well-trained model)."""
    why = []
    if data_kind != criteria.PAPER_DATA_KIND:
        why.append(f"data {data_kind!r} is not the paper's RepLab 2013")
    if scale != "paper":
        why.append(f"scale {scale!r} is a reduced training budget")
    if max_examples:
        why.append(f"training capped at {max_examples:,} examples (--max-examples)")
    if not large_trained:
        why.append("the large model is a random init")
    elif large_accuracy is not None and majority is not None and large_accuracy <= majority:
        why.append(f"the large model ({large_accuracy:.1%}) does not beat the majority class ({majority:.1%})")
    elif large_accuracy is not None and compact_accuracy is not None \
            and drop_pts(compact_accuracy, large_accuracy) > criteria.PAPER_DROP_PTS:
        why.append(f"the compact model beats the large one by {drop_pts(compact_accuracy, large_accuracy):.2f} pt: "
                   "the large reference is under-trained")
    return "; ".join(why) or None


def size_ratio(defn: criteria.RatioDefinition, value: float, detail: str) -> Claim:
    """One reading of the paper's ~160x (criteria.RATIOS), from real file sizes."""
    return Claim(
        claim="quantized MobileBERT ~160x smaller than BERT-Large", paper="160x",
        ours=f"{value:.1f}x ({detail})", definition=f"{defn.name}: {defn.numerator} / {defn.denominator}",
        holds=value >= criteria.PAPER_RATIO_HOLDS, label=f"~160x smaller ({defn.name})",
        figure=f"{value:.1f}x")


def accuracy_drop(large: str, compact: str, a_big, a_small, data_spec: str, why_untested: str | None) -> Claim:
    """The paper's -4.1 points: `compact` drq against `large` fp32 on the same evaluation split (evaluate results)."""
    drop = drop_pts(a_big.accuracy, a_small.accuracy)
    return Claim(
        claim="compressed model loses 4.1 accuracy points", paper=f"Δ -{criteria.PAPER_DROP_PTS} pt",
        ours=f"Δ {0.0 - drop:+.2f} pt ({compact} drq {a_small.accuracy:.4f} vs {large} fp32 {a_big.accuracy:.4f}, "
             f"n={a_big.n}, {data_spec})",
        definition=f"Δ = {compact} drq .tflite accuracy - {large} fp32 .tflite accuracy, same evaluation split; "
                   "negative = loss",
        holds=drop <= criteria.PAPER_DROP_PTS, caveat=why_untested, label="loses <= 4.1 points",
        figure=f"Δ {0.0 - drop:+.2f} pt")


def strict_ratio(ratio: float, case_id: str, size: int, budget: int, acc, ref_id: str, ref_acc, left_out: str,
                 why_untested: str | None) -> Claim:
    """Issue 12's strict row: BERT-Large fp32 .tflite bytes / the smallest deployable artifact within 4.1 points."""
    drop = drop_pts(ref_acc.accuracy, acc.accuracy)
    return Claim(
        claim="deployable model >= 160x smaller than deployable BERT-Large, within 4.1 points", paper="160x, Δ -4.1 pt",
        ours=f"{ratio:.1f}x: {case_id} {size:,} bytes (budget {budget:,}), accuracy {acc.accuracy:.4f} vs {ref_id} "
             f"{ref_acc.accuracy:.4f} (Δ {0.0 - drop:+.2f} pt, n={acc.n}){left_out}",
        definition="strict: BERT-Large fp32 .tflite bytes / the smallest deployable compact artifact within 4.1 pt "
                   "of the large reference's fp32 accuracy, among those the device's runtime is not known to refuse "
                   "(edgemodels/study/expected.py); its loading is checked by test_compat",
        holds=ratio >= criteria.STRICT_RATIO, caveat=why_untested, label="160x deployable within 4.1 pt",
        figure=f"{ratio:.1f}x, Δ {0.0 - drop:+.2f} pt")


def speed(rows: Iterable[Row], device: str, target_per_s: float) -> Claim | None:
    """'>= 1 tweet/s' on `device`: the deployment candidates at seq 128 (compact models, deployable modes) that were
    timed; MobileBERT's best where it was (the paper's model), else the best of the others. None: nothing timed."""
    rows = [r for r in rows if r.model in criteria.SPEED_CLAIM_MODELS and r.seq == "128"
            and Case(r.model, r.mode).candidate and r.inferences_per_s is not None]
    if not rows:
        return None
    shown = "; ".join(f"{r.model} {r.mode} {r.inferences_per_s:.3g}/s" for r in rows)
    paper_mode = [r for r in rows if r.model == criteria.PAPER_COMPACT] or rows
    best = max(paper_mode, key=lambda r: r.inferences_per_s)
    return Claim(
        claim=f">= 1 tweet/s on {device}", paper=">= 1/s (Pi 3, Pi 4, desktop)",
        ours=f"{best.model} {best.mode}: {best.inferences_per_s:.3g}/s ({best.method}) [{shown}]",
        definition=f"batch 1, seq 128, {best.threads} thread(s), {best.runtime} {best.runtime_version}",
        holds=best.inferences_per_s >= target_per_s, label=f">= 1 tweet/s on {device}",
        figure=f"{best.inferences_per_s:.3g}/s {best.method}, {best.model}")


def load_claims(path: Path) -> tuple[str, str, list[Claim]]:
    """(device, created, claims) of one bench run's report.json (or of the directory holding it)."""
    path, doc = read_report(path)
    for name, kind in (("device", str), ("created", str), ("claims", list)):
        if not isinstance(doc.get(name), kind):
            raise ReportError(f"{path}: field {name!r} missing or not a {kind.__name__}")
    claims = []
    wanted = [f.name for f in Claim.__dataclass_fields__.values()]
    optional = {"caveat", "label", "figure"}  # reports before issue 12 lack the caveat, before 2026-12-06 the others
    for i, c in enumerate(doc["claims"]):
        missing = [k for k in wanted if k not in optional and (not isinstance(c, dict) or k not in c)]
        if missing:
            raise ReportError(f"{path}: claims[{i}] lacks field(s) {', '.join(missing)}")
        claims.append(Claim(**{k: c[k] for k in wanted if k in c}))
    return doc["device"], doc["created"], claims


def merge_claims(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The claims of several runs (one per device), each with the run it came from; repeats dropped."""
    out, seen = [], set()
    for p in paths:
        device, created, claims = load_claims(p)
        for c in claims:
            key = (c.claim, c.ours, c.definition)
            if key in seen:  # the size and accuracy claims repeat in every device's run
                continue
            seen.add(key)
            out.append({**asdict(c), "device": device, "created": created})
    return out


