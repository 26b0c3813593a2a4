"""Expected outcomes as data: known losses, claim misses, conversion failures, memory misses, runtime refusals.

Each is one `Expected` record: which test(s) it is about, what it matches (data kind, scale, model, mode, seq,
device, runtime, runtime version; "any" by default), its kind, and the measured reason quoted in the xfail.
Why data and not code in each test: every test used to hand-write "xfail when known, fail when it stops", and the
tables sat in four places. Two ways a record is applied:

* at collection (kinds in COLLECTION_KINDS): the plugin (`edgemodels.bench.plugin`) adds
  `pytest.mark.xfail(strict=True, raises=AssertionError)` to each bench item it matches, so the test just asserts;
  a plain assertion failing is the expected outcome, anything else (a skip, a `pytest.fail`, an error) stays what
  it is, and a pass is an XPASS(strict), i.e. a failure that says to remove the record;
* at run time (kinds "conversion", "memory", "refusal"): what happens is only known while the test runs (does the
  build convert, does the file fit, does this runtime load it), so `BenchSession` asks `refusal()`,
  `memory_miss()` and `conversion_failure()` and xfails or fails there.

Refusal records are not written here: one record per mode stays the source (`edgemodels.build.modes.Refusal`), turned
into `Expected` records by `refusals_from_modes()`. A conftest.py adds records of any kind through the hook
`pytest_edgemodels_add_expected_outcomes` (edgemodels/bench/hookspec.py); the bench session holds them in an `Outcomes`.
Pure data: imports no TensorFlow and no pytest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgemodels.build import modes
from edgemodels.errors import EdgeModelsError

ANY = "any"

SELECTORS: tuple[str, ...] = ("data", "scale", "model", "versus", "mode", "seq", "device", "runtime",
                              "runtime_version")
"""What a record may match on; each defaults to ANY."""

COLLECTION_KINDS: tuple[str, ...] = ("loss", "claim-miss", "strict-miss", "speed")
"""Decidable from the test id and the run's options: applied as xfail markers at collection (strict, except a
"speed" record whose figure sits at the target within timing noise: `strict=False`)."""

RUNTIME_KINDS: tuple[str, ...] = ("conversion", "memory", "refusal")
"""Known only while a test runs; looked up by the bench session (they apply to every test meeting the case)."""

KINDS: tuple[str, ...] = (*COLLECTION_KINDS, *RUNTIME_KINDS)


class ExpectedError(EdgeModelsError, ValueError):
    """A malformed expected-outcome record (e.g. one a conftest.py hook returned)."""


@dataclass(frozen=True)
class Expected:
    """One expected outcome. Selectors left at "any" match everything; a specific one matches only that value
    (and never a test where the value is not known, e.g. `model` for test_strict_ratio)."""

    kind: str  # one of KINDS
    reason: str  # the measured figure, how and when: quoted in the xfail (one line)
    tests: tuple[str, ...] = ()  # test function names (collection kinds: required; runtime kinds: must be empty)
    data: str = ANY  # data kind: builtin | replab | csv
    scale: str = ANY  # smoke | ci | paper
    model: str = ANY  # the case's model (test_compact_vs_large: the compact one)
    versus: str = ANY  # test_compact_vs_large: the large model of the pair
    mode: str = ANY  # quantization mode
    seq: str = ANY  # seq label: "128", "64", "dynamic"
    device: str = ANY  # --device
    runtime: str = ANY  # the device's runtime (collection: the device profile's; refusals: the runtime that ran)
    runtime_version: str = ANY
    crash: bool = False  # a refusal that is the runtime crashing (SIGSEGV): the bench runs the case in a child first
    instead: str | None = None  # a refusal: the mode that runtime should use
    strict: bool = True  # False only for a "speed" record at the target within timing noise: an XPASS is no failure
    floor: float | None = None  # a non-strict speed record: below this (inferences/s) it is a real slowdown and fails

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: kind {self.kind!r} is not one of "
                                f"{', '.join(KINDS)}")
        if isinstance(self.tests, str):
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: tests must be a tuple of test function "
                                f"names, e.g. ({self.tests!r},), not a string")
        if self.kind in COLLECTION_KINDS and not self.tests:
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: a {self.kind!r} record names the test "
                                "function(s) it is about, e.g. tests=('test_drop_vs_fp32',)")
        if self.kind in RUNTIME_KINDS and self.tests:
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: a {self.kind!r} record applies to every "
                                "test meeting the case: leave tests empty")
        if not self.strict and self.kind != "speed":
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: only a 'speed' record (a figure at the "
                                "target within timing noise) may be non-strict; a known loss or miss stays strict")
        if not self.strict and not self.floor:
            raise ExpectedError(f"expected outcome {self.reason[:60]!r}: a non-strict speed record needs a floor "
                                "(inferences/s below which it fails): without one the test could never fail")
        if not self.reason.strip() or "\n" in self.reason:
            raise ExpectedError(f"expected outcome of kind {self.kind!r}: the reason must be one non-empty line")
        for name in SELECTORS:
            if not isinstance(getattr(self, name), str):
                raise ExpectedError(f"expected outcome {self.reason[:60]!r}: {name} must be a string (or {ANY!r})")

    @property
    def specificity(self) -> int:
        """How many selectors are set: the most specific record wins a lookup."""
        return sum(getattr(self, n) != ANY for n in SELECTORS)

    def matches(self, test: str | None = None, **facets: str | None) -> bool:
        """Whether this record applies to `test` (None: any test) with these facets (a selector name -> value;
        None or absent = not known for this test, which a specific selector never matches)."""
        bad = set(facets) - set(SELECTORS)
        if bad:
            raise TypeError(f"unknown facet(s) {', '.join(sorted(bad))}; valid: {', '.join(SELECTORS)}")
        if test is not None and self.tests and test not in self.tests:
            return False
        return all(getattr(self, n) == ANY or facets.get(n) == getattr(self, n) for n in SELECTORS)

    def describe(self) -> str:
        """The selectors that are set, e.g. 'data=builtin scale=ci model=minilm-l6 mode=int8'."""
        sel = " ".join(f"{n}={getattr(self, n)}" for n in SELECTORS if getattr(self, n) != ANY)
        return f"{self.kind} [{', '.join(self.tests) or 'any test'}{'; ' + sel if sel else ''}]"


def refusals_from_modes() -> tuple[Expected, ...]:
    """The registry's refusals (`edgemodels.build.modes`: one record per mode) as `Expected` records."""
    return tuple(Expected(kind="refusal", reason=r.reason, mode=m.name, model=r.model or ANY, runtime=r.runtime,
                          runtime_version=r.version, crash=r.crash, instead=r.instead)
                 for m in modes.MODES.values() for r in m.refusals)


_ACCURACY_TESTS = ("test_accuracy_floor", "test_drop_vs_fp32")

BUILTIN: tuple[Expected, ...] = (
    # -- known losses: modes measured to lose more than their tolerance (test_drop_vs_fp32) and to fall below the
    # model's floor (test_accuracy_floor, study/criteria.py FLOORS). Full-integer int8 collapses to or below the
    # majority class: post-training int8 of the softmax and layer-norm activations breaks these encoders; use drq
    # (docs/measurements.md#known-losses).
    Expected("loss", "measured -15.3 points (2026-11-24): int8 predicts the majority class", _ACCURACY_TESTS,
             data="builtin", scale="ci", model="minilm-l6", mode="int8"),
    Expected("loss", "measured -41.9 points (2026-11-24): int8 falls below the majority class", _ACCURACY_TESTS,
             data="replab", scale="paper", model="minilm-l6", mode="int8"),
    Expected("loss", "measured -18.2 points (2026-11-24): int8 predicts the majority class", _ACCURACY_TESTS,
             data="replab", scale="paper", model="mpnet-base", mode="int8"),
    # -- claim misses: where the paper's -4.1 points does NOT hold (test_compact_vs_large; model = the compact
    # model, versus = the large one). These are findings, not defects: the claims table says "DOES NOT HOLD".
    # None known.
    # -- strict misses: where the strict 160x (issue 12) is not reached (test_strict_ratio). At CI scale on the
    # built-in data every artifact small enough is more than 4.1 points behind the large reference; at paper scale
    # on RepLab one is within them (docs/measurements.md#strict-miss).
    Expected("strict-miss", "measured 2026-12-02 (CI budget, built-in data): against mpnet-base fp32 at 83.3 % the "
             "160x artifact (minilm-l6 pruned-w4, 77.5 %) is 5.8 points behind; within 4.1 points only ~58x (drq, w8)",
             ("test_strict_ratio",), data="builtin", scale="ci"),
    # -- speed: deployable modes whose projected speed on a device sits at its target (test_throughput). Weight-only
    # int8 (w8, pruned-w8) runs float kernels after DEQUANTIZE, so it runs at fp32's speed; on a Pi 3 that projects
    # to ~1/s. At the target within the run-to-run spread, so not strict; the floor 0.75/s is the lower of two lone
    # runs less that spread: below it the mode got slower, and the test fails (docs/measurements.md#pi3-w8-speed).
    *(Expected("speed", "weight-only int8 runs float kernels (DEQUANTIZE, then fp32): on a Pi 3 it projects at fp32's "
               "~1.0/s (w8 0.999/s and 1.32/s in two runs, fp32 1.007/s, 2026-12-01), at the 1/s target within timing noise; there use "
               "drq-compat (MobileBERT 1.9/s, MiniLM-L6 4.6/s projected)", ("test_throughput",), device="pi3",
               mode=m, strict=False, floor=0.75) for m in ("w8", "pruned-w8")),
    # -- conversion failures: (model, seq) the TFLite converter cannot turn into builtin ops (TF 2.21:
    # `ERROR_NEEDS_FLEX_OPS`; docs/measurements.md#conversion-failures).
    Expected("conversion", "MPNet computes its relative-position buckets in float64 (tf.Log, tf.RealDiv) from the "
                           "run-time length: not TFLite builtins (they need Flex ops); at a fixed length they fold "
                           "into constants", model="mpnet-base", seq="dynamic"),
    # -- memory misses: devices where a large (non-compact) model may not fit the memory budget. There the memory
    # test xfails with its numbers; on any other device a large model that does not fit fails like a compact one.
    # Only the 1 GB Pi 3 misses: BERT-Large fp32 is far over its budget, MPNet-base fp32 just under it
    # (docs/measurements.md#memory-misses).
    Expected("memory", "a 1 GB board (717 MiB for one application): BERT-Large fp32 needs 1,140 MB", device="pi3"),
)
"""The built-in records, runtime refusals aside (those are `refusals_from_modes()`)."""

def check_added(records: Iterable[object]) -> tuple[Expected, ...]:
    """The records conftest.py hooks returned, each checked to be an `Expected`."""
    out = []
    for r in records:
        if not isinstance(r, Expected):
            raise ExpectedError(f"pytest_edgemodels_add_expected_outcomes returned {r!r}: return "
                                "edgemodels.study.expected.Expected records")
        out.append(r)
    return tuple(out)


@dataclass(frozen=True)
class Outcomes:
    """The expected outcomes in force for one run: a conftest.py's records first (they win a tie), then the
    built-ins and the modes' refusals. A value the bench session holds, not process state: two sessions in one
    process (pytester) never see each other's records."""

    added: tuple[Expected, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (model spec, the plain name a conftest gave it): a record may use either

    @property
    def records(self) -> tuple[Expected, ...]:
        return (*self.added, *BUILTIN, *_MODE_REFUSALS)

    def _best(self, kinds: Iterable[str], test: str | None, facets: dict[str, str | None]) -> Expected | None:
        hits = [r for r in self.records if r.kind in kinds and r.matches(test, **facets)]
        return max(hits, key=lambda r: r.specificity) if hits else None  # max keeps the first of equals

    def _lookup(self, kinds: Iterable[str], test: str | None, facets: dict[str, str | None]) -> Expected | None:
        """The most specific record for these facets, the model named by its spec or (a conftest's source) by its
        plain name: a record naming either is as specific as the other, and beats one naming no model."""
        alias = dict(self.aliases).get(facets.get("model") or "")
        hits = [h for h in (self._best(kinds, test, facets),
                            self._best(kinds, test, {**facets, "model": alias}) if alias else None) if h is not None]
        return max(hits, key=lambda r: r.specificity) if hits else None  # max keeps the first of equals

    def find(self, kind: str, test: str | None = None, **facets: str | None) -> Expected | None:
        """The most specific record of `kind` matching; None when the outcome is not expected."""
        return self._lookup((kind,), test, facets)

    def for_test(self, test: str, **facets: str | None) -> Expected | None:
        """The collection-time record (COLLECTION_KINDS) for a bench test with these facets, or None."""
        return self._lookup(COLLECTION_KINDS, test, facets)

    def marker_reason(self, record: Expected, test: str) -> str:
        """The xfail reason: the record's kind and figure, and what to do when it stops happening for `test`
        (one line). A record may cover several tests: only this one's name comes out of it."""
        where = ("a conftest.py's pytest_edgemodels_add_expected_outcomes" if record in self.added
                 else "edgemodels/study/expected.py")
        fix = (f"drop {test} from the tests of the record {record.describe()}" if len(record.tests) > 1
               else f"remove the record {record.describe()}")
        if not record.strict:
            return (f"expected {record.kind} (not strict: at the target within timing noise): {record.reason}; "
                    f"a pass is an XPASS, not a failure; if it always passes, {fix} in {where}")
        return (f"expected {record.kind}: {record.reason}; if this XPASSes (strict: a failure), it no longer "
                f"happens: {fix} in {where}")

    def refusal(self, runtime: str, version: str, mode: str, model: str | None = None) -> Expected | None:
        """The record saying (runtime, version) does not run `mode` (of `model`), or None."""
        return self.find("refusal", runtime=runtime, runtime_version=version, mode=mode, model=model)

    def memory_miss(self, device: str, case) -> Expected | None:
        """The record saying `case` (a suite.Case) may not fit `device`'s memory budget, or None (then not fitting
        fails). A compact model must fit everywhere: no record excuses it."""
        if case.compact:
            return None
        return self.find("memory", device=device, model=case.model, mode=case.quant, seq=case.seq_label)

    def conversion_failure(self, case) -> Expected | None:
        """The record saying `case` (a suite.Case) cannot be converted to TFLite builtins, or None."""
        return self.find("conversion", model=case.model, mode=case.quant, seq=case.seq_label)


_MODE_REFUSALS: tuple[Expected, ...] = refusals_from_modes()  # the registry is immutable: built once

BUILTIN_OUTCOMES = Outcomes()
"""The built-in records alone: what the CLI and an export use (no conftest.py there)."""


def refusal(runtime: str, version: str, mode: str, model: str | None = None) -> Expected | None:
    """BUILTIN_OUTCOMES.refusal (for callers outside a bench session)."""
    return BUILTIN_OUTCOMES.refusal(runtime, version, mode, model)


def conversion_failure(case) -> Expected | None:
    """BUILTIN_OUTCOMES.conversion_failure (for callers outside a bench session)."""
    return BUILTIN_OUTCOMES.conversion_failure(case)
