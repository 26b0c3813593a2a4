"""One bench run: the matrix, one artifact source, one device side, the expected outcomes, the report rows.

The plugin builds it at configure time (edgemodels/bench/configure.py); the suites ask it for a case's artifact,
whether this machine's runtime runs it, its accuracy and its report row, and the metric modules
(edgemodels/bench/metrics/) do the rest. Nothing here branches on where artifacts come from or where the device is:
the source and the side answer for themselves.
"""

from __future__ import annotations

from functools import cached_property

import pytest

from edgemodels.bench import outcome
from edgemodels.bench.artifacts import NotConverted
from edgemodels.report.rows import Report, Row
from edgemodels.run.targets import LocalTarget, WorkerResult
from edgemodels.study import criteria
from edgemodels.study.matrix import Case, Scale


class BenchSession:
    """What the `bench` fixture hands the suites."""

    def __init__(self, *, device: str, scale: Scale, source, make_side, expected, make_report,
                 keep_models: set[str], keep_modes: set[str], extra_devices=None):
        self.device, self.scale, self.source, self.expected = device, scale, source, expected
        self.extra_devices = extra_devices or {}  # profiles a conftest.py added
        self._make_side, self._make_report = make_side, make_report  # a remote is reached at session start
        self.keep_models, self.keep_modes = keep_models, keep_modes
        self.here = LocalTarget()
        self._artifacts: dict[Case, object] = {}
        self._not_converted: dict[Case, str] = {}
        self._host_runs: dict[Case, WorkerResult] = {}
        self.device_runs: dict[Case, object] = {}  # edgemodels.bench.metrics.compat: compat, speed and memory ask
        self._accuracy: dict[Case, object] = {}
        self.gate_baselines: dict | None = None  # (model, mode, seq) -> (gate digest, machine) when throughput is gated
        self.gate_threshold = criteria.Thresholds().throughput_drop

    # -- what the run is --------------------------------------------------------------------------------------
    @cached_property
    def side(self):
        """Where the device figures come from (edgemodels.bench.device); a --remote is reached on first use."""
        return self._make_side()

    @cached_property
    def report(self) -> Report:
        return self._make_report(self)

    @cached_property
    def host_runtime(self) -> tuple[str, str]:
        """(name, version) of the runtime that runs models on this machine (accuracy, x86 references)."""
        return self.side.here_runtime()

    @property
    def profile(self):
        return self.side.profile

    @property
    def data_spec(self) -> str:
        return self.source.data_spec

    @property
    def data_kind(self) -> str:
        return self.source.data_kind

    @property
    def max_examples(self) -> int | None:
        return self.source.max_examples

    def cases(self) -> tuple[Case, ...]:
        """This run's matrix: the scale's cases the filters keep, and the user's model sources."""
        if "_cases" not in self.__dict__:
            self._cases = self.source.cases(self.keep_models, self.keep_modes)
        return self._cases

    def case(self, model: str, quant: str, seq: int | None = 128) -> Case | None:
        """A case of this run's matrix (None when the scale or the filters leave it out)."""
        c = Case(model, quant, seq)
        return c if c in self.cases() else None

    def row(self, case: Case) -> Row:
        return self.report.row(case.model, case.quant, case.seq_label)

    def ready_file(self, case: Case):
        """The ready .tflite a tflite: case runs as it is, or None for a built (or exported) case."""
        return self.source.ready_file(case)

    # -- artifacts --------------------------------------------------------------------------------------------
    def artifact(self, case: Case):
        if case in self._artifacts:
            return self._artifacts[case]
        record = self.expected.conversion_failure(case)
        if case in self._not_converted:  # known this session: do not pay for the conversion again
            pytest.xfail(self._not_converted[case])
        try:
            art = self.source.artifact(case)
        except NotConverted as exc:
            if record is None:
                raise
            self._not_converted[case] = f"{case.id} does not convert: {record.reason} ({exc})"
            self.row(case).notes.append(f"does not convert to TFLite builtins: {record.reason}")
            pytest.xfail(self._not_converted[case])
        if record is not None:
            pytest.fail(f"{case.id} converts now: remove its conversion record from edgemodels/study/expected.py")
        row = self.row(case)
        row.size_bytes, row.pretrained = art.size_bytes, art.pretrained
        if self.ready_file(case) is not None:
            row.notes.append(f"{art.tflite.name} as it is (sha256 {art.manifest['key']['digest'][:12]}); mode "
                             + ("from its edgemodels manifest" if art.mode != "as-is" else "not recorded"))
        self._artifacts[case] = art
        return art

    def feeds(self, case: Case, n: int | None = None) -> list[dict]:
        return self.source.feeds(case, n)

    def refusal(self, case: Case, runtime: str, version: str):
        """The record expecting `runtime` to refuse `case`, or None."""
        return self.expected.refusal(runtime, version, case.quant, case.model)

    def device_refusal(self, case: Case):
        """The record expecting the device's own runtime (its profile's) to refuse `case`, or None."""
        return self.refusal(case, self.profile.runtime, self.profile.runtime_version)

    # -- does this machine's runtime run it? -------------------------------------------------------------------
    def infer_compat(self, case: Case) -> bool:
        """Whether the compat check runs inference (not only a load): compact models and ready files of a size
        emulation affords; on the device itself (or from an export) every model that fits."""
        from edgemodels.study.matrix import EMULATE_INFERENCE_MAX_BYTES

        art = self.artifact(case)
        small = (case.compact or self.ready_file(case) is not None) and art.size_bytes <= EMULATE_INFERENCE_MAX_BYTES
        return small or (self.side.measured_on_device and (self.source.holds_references or self.side.remote))

    def host_run(self, case: Case) -> WorkerResult:
        """The case's file on this machine's runtime, in a fresh worker, on the compat sample (one tweet where the
        compat check only loads it): memoised, and asked first by every suite that runs the model here, so a
        runtime's refusal, failure at the first invoke or crash is met once, never inside the pytest process."""
        if case not in self._host_runs:
            art = self.artifact(case)
            self.too_big(case, art)
            feeds = self.feeds(case, self.source.compat_examples)
            self._host_runs[case] = self.here.run(art.tflite, runtime=self.host_runtime[0], threads=self.side.threads,
                                                  feeds=feeds if self.infer_compat(case) else feeds[:1])
        return self._host_runs[case]

    def require_host_run(self, case: Case) -> WorkerResult:
        """host_run, with the outcome rule applied: a refusal is an xfail where expected, else a failure."""
        res = self.host_run(case)
        if not res.loads or res.error:
            rt, version = self.host_runtime
            self.row(case).notes.append(f"{rt} {version} {'loads it, then fails to run it' if res.loads else 'refuses it'}")
            outcome.runtime_refused(self.refusal(case, rt, version), case.id, f"{rt} {version}", loaded=res.loads,
                                    error=res.error)
        return res

    def too_big(self, case: Case, art, what: str = "") -> None:
        """On the device itself never load a file larger than its memory budget (BERT-Large fp32's 1.3 GB on a 1 GB
        Pi 3): it is reported as does-not-fit (xfail where expected), not crashed into. Off the device the host
        loads it and its RSS is measured against the budget."""
        budget = self.profile.memory_budget_bytes
        if not self.side.measured_on_device or art.size_bytes <= budget:
            return
        row = self.row(case)
        row.memory_budget_bytes, row.fits = budget, False
        row.notes.append(f"not loaded on the device: file {art.size_bytes / 2**20:.0f} MiB > memory budget "
                         f"{budget / 2**20:.0f} MiB")
        outcome.settle(self.expected.memory_miss(self.device, case),
                       f"{case.id} does not fit {self.side.where()}{': ' + what if what else ''}: the file alone "
                       f"({art.size_bytes / 2**20:.0f} MiB) exceeds the memory budget ({budget / 2**20:.0f} MiB); "
                       "not loaded")

    # -- accuracy -----------------------------------------------------------------------------------------------
    def accuracy(self, case: Case):
        """Accuracy of the case's file on the evaluation split through this machine's runtime (memoised)."""
        if case not in self._accuracy:
            rt, version = self.host_runtime
            art = self.artifact(case)
            self.too_big(case, art, "accuracy")
            try:
                self._accuracy[case] = self.source.accuracy(case, rt, version, lambda: self.require_host_run(case))
            except RuntimeError as exc:  # loaded in the worker, failed in the evaluation's processes
                outcome.runtime_refused(self.refusal(case, rt, version), case.id, f"{rt} {version}", loaded=True,
                                        error=str(exc))
        return self._accuracy[case]

    def reference_fp32(self):
        """The largest model's fp32 artifact at seq 128: the 'ratio' column's denominator-of-record."""
        for model in criteria.RATIO_REFERENCES:
            c = self.case(model, "fp32", 128)
            if c is not None:
                return self.artifact(c)
        return None

    def claim_caveat(self, large: str, a_big, a_small) -> str | None:
        """Why this run cannot test an accuracy claim against `large` (claims.caveat), or None."""
        from edgemodels.report import claims

        big = self.case(large, "fp32")
        trained = big is not None and bool(self.artifact(big).manifest.get("trained"))
        return claims.caveat(self.scale.name, self.data_kind, trained, a_big.accuracy, a_small.accuracy,
                             a_big.majority_accuracy, max_examples=self.max_examples)

    def close(self) -> None:
        self.side.close()
