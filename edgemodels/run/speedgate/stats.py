"""The throughput gate's statistics: the median's confidence interval, a sample digest, and the decision.

Pure numpy + the standard library, no timing and no runtime: a worker on a device (or a report read later)
computes and compares the same figures.

Why the order-statistic interval of the median (not a bootstrap): per-inference times on a shared machine are
skewed and often bimodal (a round that met another process's time slice is slower), and the interval
[x_(j), x_(n-j+1)] covers the true median with probability >= 95 % for ANY continuous distribution of
independent rounds, exactly (the binomial count of samples below the median), with no resampling, no random seed
and no tuning. The bootstrap of a median is known to be erratic (the resampled medians take few distinct values)
and costs thousands of resamples per look; the order-statistic interval costs one sort.

Why the decision combines the two digests' intervals in log space: the baseline is a digest in a JSON file, not a
sample. Each median is asymptotically normal, so ln(current median / baseline median) is too, with a variance that
is the sum of the two; each side's variance is read off its own distribution-free interval (its half-width / z).
The combined interval keeps each side's asymmetry (the upper bound of the ratio uses the current's upper and the
baseline's lower half-width). tests/test_speedgate.py checks its coverage on samples with the noise measured here.

What the interval does not hold: the spread between processes (a fresh process places the same file's weights
and threads differently). Measured at 1 thread it is well under the threshold, which is what absorbs it; the
unit tests simulate the decision with both noises, and scripts/speed-study measures the error rates directly.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

from edgemodels.errors import EdgeModelsError

CONFIDENCE = 0.95
SCHEMA = 1
QUANTILE_STEPS = 20
"""The digest keeps the relative speed's quantiles at every 5 % (21 values): the sample's shape, compactly."""


class DigestError(EdgeModelsError, ValueError):
    """A digest read from a report or baseline file is malformed; the message names the field."""


class Incomparable(EdgeModelsError, ValueError):
    """Two digests that must not be compared (other yardstick, other thread count): re-save the baseline."""


def _z(confidence: float) -> float:
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


@lru_cache(maxsize=4096)
def order_statistic_rank(n: int, confidence: float = CONFIDENCE) -> int | None:
    """The 1-based rank j with [x_(j), x_(n+1-j)] covering the median at >= confidence, or None if n is too small.

    j is the largest rank with P(Binomial(n, 1/2) <= j - 1) <= (1 - confidence) / 2: the same interval as
    scipy.stats.quantile_test(...).confidence_interval() for the median.
    """
    if n < 1:
        return None
    alpha_half = (1.0 - confidence) / 2.0
    k = np.arange(n + 1)
    log_pmf = (np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
               - n * math.log(2.0))
    cdf = np.cumsum(np.exp(log_pmf))
    ok = np.nonzero(cdf <= alpha_half * (1 + 1e-12))[0]  # P(B <= j - 1) <= alpha/2, i.e. j - 1 in ok
    if ok.size == 0:
        return None
    return int(ok[-1]) + 1


@dataclass(frozen=True)
class Estimate:
    """A median with its distribution-free interval and the median absolute deviation (a robust spread)."""

    median: float
    low: float
    high: float
    mad: float
    n: int

    @property
    def half_width(self) -> float:
        """The larger relative distance from the median to a bound (0.02 = +-2 %); inf when there is no interval."""
        if not (self.median > 0 and self.low > 0 and math.isfinite(self.high)):
            return math.inf
        return max(self.high / self.median - 1.0, 1.0 - self.low / self.median)

    @classmethod
    def of(cls, samples: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> "Estimate":
        x = np.sort(np.asarray(samples, dtype=np.float64))
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("samples must be non-empty and finite")
        med = float(np.median(x))
        mad = float(np.median(np.abs(x - med)))
        j = order_statistic_rank(x.size, confidence)
        if j is None:  # too few rounds for this confidence: no interval (the gate never stops on one)
            return cls(med, -math.inf, math.inf, mad, int(x.size))
        return cls(med, float(x[j - 1]), float(x[x.size - j]), mad, int(x.size))


@dataclass(frozen=True)
class Load:
    """What else the machine ran while a case was timed, in cores (1.0 = one core fully busy)."""

    others_cores: float  # mean CPU of other processes over the case's timing
    others_cores_max: float  # the busiest sampling window
    steal_cores: float  # time the hypervisor gave our vCPUs to someone else
    cores: int  # logical CPUs of the machine
    windows: int  # sampling windows behind the figures
    others_cores_before: float | None = None  # during the warm-up, at normal priority: the demand we met
    load_average_1m: float | None = None  # the kernel's run-queue average at the end


@dataclass(frozen=True)
class Digest:
    """What report.json keeps of one case's timing: enough for a later comparison without a rerun.

    relative: the case's speed relative to the yardstick, per round (yardstick time / case time, per inference):
    2.0 = the case runs twice as fast as the yardstick. case_ms / yardstick_ms: per-inference latency.
    """

    relative: Estimate
    case_ms: Estimate
    yardstick_ms: Estimate
    rounds: int
    seconds: float  # wall time of the whole measurement, warm-up and yardstick included
    threads: int | None
    stopped: str  # "target" | "decided" | "cap"
    yardstick_sha256: str
    relative_quantiles: tuple[float, ...]  # at 0, 5, ..., 100 %
    load: Load | None = None
    priority: str = "normal"  # "realtime" (SCHED_RR) or "normal (<why>)": see speedgate.timer
    confidence: float = CONFIDENCE
    schema: int = SCHEMA

    @property
    def inferences_per_s(self) -> float:
        return 1e3 / self.case_ms.median

    def to_json(self) -> dict[str, Any]:
        """A plain dict for strict JSON: floats to 6 significant digits (a committed baseline stays readable),
        a missing interval bound as null."""
        return _rounded(asdict(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "digest") -> "Digest":
        """Read a digest back (from report.json or a baseline); a malformed one names its field."""
        if not isinstance(data, Mapping):
            raise DigestError(f"{where}: expected an object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise DigestError(f"{where}.schema: {data.get('schema')!r} is not {SCHEMA}; re-save the baseline "
                              "with this version (--baseline-save)")

        def est(key: str) -> Estimate:
            e = data.get(key)
            try:
                low = -math.inf if e["low"] is None else float(e["low"])
                high = math.inf if e["high"] is None else float(e["high"])
                return Estimate(float(e["median"]), low, high, float(e["mad"]), int(e["n"]))
            except (TypeError, KeyError, ValueError) as exc:
                raise DigestError(f"{where}.{key}: needs median, low, high, mad, n ({exc!r})") from None

        try:
            load = data.get("load")
            return cls(
                relative=est("relative"), case_ms=est("case_ms"), yardstick_ms=est("yardstick_ms"),
                rounds=int(data["rounds"]), seconds=float(data["seconds"]),
                threads=None if data.get("threads") is None else int(data["threads"]),
                stopped=str(data["stopped"]), yardstick_sha256=str(data["yardstick_sha256"]),
                relative_quantiles=tuple(float(q) for q in data["relative_quantiles"]),
                load=None if load is None else Load(**load),
                priority=str(data.get("priority", "normal")),
                confidence=float(data.get("confidence", CONFIDENCE)),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise DigestError(f"{where}: missing or malformed field ({exc!r})") from None


def _rounded(x: Any) -> Any:
    if isinstance(x, float):  # an interval too few rounds had (+-inf) is written as null: strict JSON
        return float(f"{x:.6g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def _compact(x: np.ndarray) -> tuple[float, ...]:
    qs = np.quantile(x, np.linspace(0.0, 1.0, QUANTILE_STEPS + 1))
    return tuple(float(f"{q:.5g}") for q in qs)


def digest(case_s: Sequence[float], yardstick_s: Sequence[float], relative: Sequence[float] | None = None, *,
           seconds: float, threads: int | None, stopped: str, yardstick_sha256: str, load: Load | None = None,
           confidence: float = CONFIDENCE) -> Digest:
    """Summarise per-round, per-inference times (seconds) and the per-round relative speeds.

    relative: yardstick time / case time of each round (default: yardstick_s / case_s, pairwise); the timer passes
    its order-balanced figure (see speedgate.timer).
    """
    c = np.asarray(case_s, dtype=np.float64)
    y = np.asarray(yardstick_s, dtype=np.float64)
    if c.shape != y.shape or c.size == 0:
        raise ValueError(f"need as many case as yardstick rounds, at least one (got {c.size} and {y.size})")
    if np.any(c <= 0) or np.any(y <= 0):
        raise ValueError("per-inference times must be > 0 seconds")
    rel = y / c if relative is None else np.asarray(relative, dtype=np.float64)
    if rel.shape != c.shape or np.any(rel <= 0):
        raise ValueError("need one relative speed > 0 per round")
    return Digest(relative=Estimate.of(rel, confidence), case_ms=Estimate.of(1e3 * c, confidence),
                  yardstick_ms=Estimate.of(1e3 * y, confidence), rounds=int(c.size), seconds=float(seconds),
                  threads=threads, stopped=stopped, yardstick_sha256=yardstick_sha256,
                  relative_quantiles=_compact(rel), load=load, confidence=confidence)


def pool(digests: Sequence[Digest]) -> Digest:
    """One digest standing for several runs of the same file (a history baseline of N runs): the median of their
    medians, an interval from the lowest low to the highest high, so the spread between the runs widens it (the
    noise the runs show sets the interval), and the worst priority any ran at. All must share yardstick and threads."""
    if not digests:
        raise ValueError("pool needs at least one digest")
    first = digests[0]
    for d in digests[1:]:
        check_comparable(first, d.yardstick_sha256, d.threads)
    if len(digests) == 1:
        return first

    def est(key: str) -> Estimate:
        es = [getattr(d, key) for d in digests]
        return Estimate(float(np.median([e.median for e in es])), min(e.low for e in es), max(e.high for e in es),
                        float(np.median([e.mad for e in es])), sum(e.n for e in es))

    normal = [d.priority for d in digests if d.priority != "realtime"]
    return replace(first, relative=est("relative"), case_ms=est("case_ms"), yardstick_ms=est("yardstick_ms"),
                   rounds=sum(d.rounds for d in digests), seconds=sum(d.seconds for d in digests),
                   stopped=f"pooled over {len(digests)} runs", priority=normal[0] if normal else "realtime")


# --- the decision -------------------------------------------------------------------------------

PASS, REGRESSION, INCONCLUSIVE = "pass", "regression", "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """current/baseline of the yardstick-relative speed, its interval, and what it means against the limit."""

    decision: str  # pass | regression | inconclusive
    ratio: float  # current / baseline relative speed (0.85 = 15 % slower)
    low: float
    high: float
    limit: float  # the ratio below which it is a regression: 1 - threshold, widened across machines
    basis: str  # "same machine" | "cross-machine (...)"
    confidence: float
    absolute_ratio: float  # current / baseline inferences per second, reported beside, never decided on
    notes: tuple[str, ...] = field(default=())  # the measured noise of both sides, and priority caveats

    @property
    def conclusive(self) -> bool:
        return self.decision != INCONCLUSIVE

    def to_json(self) -> dict:
        """As a bench row's throughput_decision holds it."""
        return {"decision": self.decision, "ratio": self.ratio, "low": self.low, "high": self.high,
                "limit": self.limit, "basis": self.basis, "confidence": self.confidence,
                "absolute_ratio": self.absolute_ratio, "notes": list(self.notes)}

    def describe(self) -> str:
        pct = (self.ratio - 1.0) * 100.0
        return (f"{self.decision}: relative speed {self.ratio:.3f}x of the baseline ({pct:+.1f} %), "
                f"{self.confidence:.0%} interval [{self.low:.3f}, {self.high:.3f}], limit {self.limit:.3f} "
                f"({self.basis}); absolute {self.absolute_ratio:.3f}x")


def ratio_interval(current: Estimate, baseline: Estimate, confidence: float = CONFIDENCE,
                   interval_confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """current.median / baseline.median with its interval (see the module's docstring for why this way).

    interval_confidence: the level the two Estimates' intervals were computed at.
    """
    if not (math.isfinite(current.half_width) and math.isfinite(baseline.half_width)):
        return current.median / baseline.median, 0.0, math.inf
    scale = _z(confidence) / _z(interval_confidence)
    up_c, down_c = math.log(current.high / current.median), math.log(current.median / current.low)
    up_b, down_b = math.log(baseline.high / baseline.median), math.log(baseline.median / baseline.low)
    centre = math.log(current.median / baseline.median)
    return (math.exp(centre), math.exp(centre - scale * math.hypot(down_c, up_b)),
            math.exp(centre + scale * math.hypot(up_c, down_b)))


def check_comparable(baseline: Digest, yardstick_sha256: str, threads: int | None) -> None:
    """Raise Incomparable unless a run with this yardstick and thread count can be compared with baseline."""
    if yardstick_sha256 != baseline.yardstick_sha256:
        raise Incomparable(f"the baseline was timed against another yardstick ({baseline.yardstick_sha256[:12]}, "
                           f"now {yardstick_sha256[:12]}): re-save the throughput baseline")
    if threads != baseline.threads:
        raise Incomparable(f"the baseline was timed at {baseline.threads} thread(s), this run at {threads}: "
                           "relative speeds differ with the thread count; re-save the baseline or use its count")


def compare(current: Digest, baseline: Digest, *, threshold: float = 0.10, same_machine: bool = True,
            cross_machine_spread: float | None = None, spread_basis: str = "measured",
            process_spread: float = 0.0, process_basis: str = "", confidence: float = CONFIDENCE) -> Verdict:
    """pass / regression / inconclusive for current against baseline, on the yardstick-relative speed.

    Regression when the whole interval of current/baseline lies below the limit 1 - threshold; pass when it
    lies wholly above; inconclusive otherwise. Across machines the limit is lowered by the cross-CPU spread of
    relative speeds (cross_machine_spread, e.g. 0.25 = an unchanged file's relative speed moves by up to 25 %
    between CPU types; spread_basis: what that figure rests on), and the verdict says so. process_spread: how far
    the case's figure moves between processes on one machine beyond what its rounds show (a dynamic-length model);
    it lowers the limit the same way, said in the basis.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    check_comparable(baseline, current.yardstick_sha256, current.threads)
    limit = 1.0 - threshold
    basis = "same machine"
    if not same_machine:
        if cross_machine_spread is None:
            raise ValueError("a cross-machine comparison needs cross_machine_spread (the measured cross-CPU spread)")
        limit *= 1.0 - cross_machine_spread
        basis = (f"cross-machine: limit {1 - threshold:.2f} x {1 - cross_machine_spread:.2f} for a "
                 f"+-{cross_machine_spread:.0%} cross-CPU spread of relative speed ({spread_basis})")
    if process_spread:
        limit *= 1.0 - process_spread
        basis += (f"; limit x {1 - process_spread:.2f} for a +-{process_spread:.0%} spread between processes "
                  f"({process_basis})")
    ratio, low, high = ratio_interval(current.relative, baseline.relative, confidence, current.confidence)
    if high < limit:
        decision = REGRESSION
    elif low > limit:
        decision = PASS
    else:
        decision = INCONCLUSIVE
    absolute = baseline.case_ms.median / current.case_ms.median
    return Verdict(decision, ratio, low, high, limit, basis, confidence, absolute, _notes(current, baseline))


def _notes(current: Digest, baseline: Digest) -> tuple[str, ...]:
    """What a reader needs beside the figures: the measured noise, and anything that weakens them."""
    notes = []
    for name, d in (("this run", current), ("the baseline", baseline)):
        rel = d.relative
        notes.append(f"{name}: {d.rounds} rounds in {d.seconds:.2f} s ({d.stopped}), per-round spread (MAD) "
                     f"{rel.mad / rel.median:.1%}")
        if d.priority != "realtime":
            notes.append(f"{name} was timed at {d.priority}: other processes shared its cores")
    return tuple(notes)
