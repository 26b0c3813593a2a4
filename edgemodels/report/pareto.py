"""The Pareto view: what each artifact costs in bytes against what it gives (accuracy, speed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgemodels.study.criteria import LARGE_REFERENCE, STRICT_RATIO

if TYPE_CHECKING:
    from edgemodels.report.rows import Row

def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, value) points, True where no other point costs at most as much and gives at least as much,
    strictly better in one (equal points are all on the front)."""
    return [not any(c2 <= c and v2 >= v and (c2 < c or v2 > v) for j, (c2, v2) in enumerate(points) if j != i)
            for i, (c, v) in enumerate(points)]


@dataclass(frozen=True)
class ParetoRow:
    model: str
    mode: str
    seq: str
    size_bytes: int
    accuracy: float | None
    inferences_per_s: float | None
    method: str | None  # of the speed figure
    ratio_vs_large: float | None  # BERT-Large fp32 .tflite bytes (this run's) / size_bytes
    accuracy_front: bool  # on the accuracy-vs-bytes front
    speed_front: bool  # on the inferences/s-vs-bytes front


def large_fp32_bytes(rows: list[Row]) -> int | None:
    """This run's BERT-Large fp32 .tflite at seq 128 (the strict ratio's numerator), if it built one."""
    return next((r.size_bytes for r in rows if r.model == LARGE_REFERENCE and r.mode == "fp32" and r.seq == "128"
                 and r.size_bytes), None)


def pareto_rows(rows: list[Row]) -> list[ParetoRow]:
    """Every row with a size; front flags over the rows that have the figure (accuracy, speed)."""
    sized = [r for r in rows if r.size_bytes]
    large = large_fp32_bytes(rows)
    acc = [r for r in sized if r.accuracy is not None]
    spd = [r for r in sized if r.inferences_per_s is not None]
    acc_front = {id(r) for r, f in zip(acc, pareto_front([(r.size_bytes, r.accuracy) for r in acc])) if f}
    spd_front: set[int] = set()  # one front per method: a projected figure never pushes a measured one off it
    for method in {r.method for r in spd}:
        same = [r for r in spd if r.method == method]
        spd_front |= {id(r) for r, f in zip(same, pareto_front([(r.size_bytes, r.inferences_per_s) for r in same])) if f}
    return [ParetoRow(r.model, r.mode, r.seq, int(r.size_bytes), r.accuracy, r.inferences_per_s, r.method,
                      large / r.size_bytes if large else None, id(r) in acc_front, id(r) in spd_front)
            for r in sorted(sized, key=lambda r: r.size_bytes)]


def pareto_json(rows: list[Row]) -> dict[str, Any]:
    large = large_fp32_bytes(rows)
    return {"large_fp32_bytes": large, "target_ratio": STRICT_RATIO,
            "budget_bytes": int(large / STRICT_RATIO) if large else None,
            "rows": [asdict(p) for p in pareto_rows(rows)]}

