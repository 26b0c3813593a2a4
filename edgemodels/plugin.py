"""The pytest plugin behind `pytest bench/ --device=X`: options, the session's lazy artifacts, the report.

Enabled by the repository's root conftest.py (`pytest_plugins`). Tests ask the `bench` fixture for what
they need (an artifact, its accuracy, the device placement); everything is built lazily through the
package's pipeline and cached, and each measurement lands in one shared report row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemodels import cache, data, devices, report, suite

BASELINE_DIR = Path("bench") / "baselines"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("edgemodels", "edgemodels bench suite")
    g.addoption("--device", default=None,
                help=f"target device: {', '.join(devices.NAMES)} (default: the Pi this runs on, else desktop)")
    g.addoption("--data", default=None,
                help="data spec: builtin | replab:DIR | csv:FILE (default $EDGEMODELS_DATA or builtin)")
    g.addoption("--edge-cache", default=None, type=Path,
                help="artifact cache directory (default $EDGEMODELS_CACHE or the user cache dir)")
    g.addoption("--scale", default="ci", choices=list(suite.SUITE_SCALES),
                help="ci (default): reduced training budget; paper: the full study; smoke: tiny-bert only")
    g.addoption("--runtime", default=None, choices=("ai-edge-litert", "tflite-runtime", "tensorflow"),
                help="host TFLite runtime (default: the device's runtime if installed, else the first found)")
    g.addoption("--threads", type=int, default=None,
                help="inference threads (default: the device's cores, capped by the host's); e.g. 1")
    g.addoption("--models", default=None, help="comma-separated model names to keep from the scale's matrix")
    g.addoption("--modes", default=None, help="comma-separated quantization modes to keep")
    g.addoption("--max-examples", type=int, default=None,
                help="override the scale's training budget (examples); for shrunk-budget experiments")
    g.addoption("--report-dir", default=Path("bench-report"), type=Path,
                help="where report.json and report.png go (default bench-report/)")
    g.addoption("--baseline-dir", default=BASELINE_DIR, type=Path, help="per-device baselines directory")
    g.addoption("--baseline-compare", action="store_true",
                help="fail on regressions vs the device's baseline (accuracy -0.5 pt, size +2 %%, "
                     "throughput -10 %% on the same machine)")
    g.addoption("--baseline-metrics", default="accuracy,size,throughput",
                help="metrics --baseline-compare gates on (default all three; throughput only on the same machine id)")
    g.addoption("--baseline-save", action="store_true", help="write this run's results as the device's baseline")


_MARKERS = (
    "accuracy: accuracy of .tflite artifacts through the interpreter",
    "size: artifact sizes and size ratios",
    "throughput: inferences/s with pytest-benchmark, against the device target",
    "memory: peak RSS of a fresh process, against the device's memory budget",
    "compat: loads and matches reference outputs on the device's runtime",
    "emulation: runs the device's ARM runtime under QEMU user-mode emulation",
    "paper: the paper's claims (size ratio, accuracy drop, speed)",
    "slow: takes more than ~15 s",
)

SESSION_KEY = pytest.StashKey["BenchSession"]()


def pytest_configure(config: pytest.Config) -> None:
    for m in _MARKERS:
        config.addinivalue_line("markers", m)
    device = config.getoption("--device") or devices.detect() or "desktop"
    if device not in devices.NAMES:
        raise pytest.UsageError(f"--device={device!r} is not a known device; valid: {', '.join(devices.NAMES)}")
    spec = config.getoption("--data") or data.default_spec()
    try:
        data.parse_spec(spec)
    except data.DataError as exc:
        raise pytest.UsageError(f"--data: {exc}") from None
    config.stash[SESSION_KEY] = BenchSession(config, device, spec)


class BenchSession:
    """One bench run's context: device placement, scale, data, cache, memoised artifacts, the report."""

    def __init__(self, config: pytest.Config, device: str, spec: str):
        self.config = config
        self.device = device
        self.data_spec = spec
        self.scale = suite.get_scale(config.getoption("--scale"))
        root = config.getoption("--edge-cache")
        self.cache = cache.ArtifactCache(root)
        self._artifacts: dict[suite.Case, Any] = {}
        self._conversion_failures: dict[suite.Case, str] = {}  # expected ones, met this session
        self._device_runs: dict[suite.Case, DeviceRun] = {}  # compat, throughput and memory all ask
        self._accuracy: dict[tuple[suite.Case, str], Any] = {}

    # -- where and how -------------------------------------------------------------------------
    @cached_property
    def placement(self) -> devices.Placement:
        return devices.place(self.device)

    @property
    def profile(self) -> devices.DeviceProfile:
        return self.placement.profile

    @cached_property
    def threads(self) -> int:
        return self.config.getoption("--threads") or self.profile.threads()

    @cached_property
    def host_runtime(self) -> tuple[str, str]:
        """(runtime, note): the device's own runtime when installed here, else the first available."""
        from edgemodels import runtime

        named = self.config.getoption("--runtime")
        found = {r.name: r for r in runtime.available()}
        if named:
            return named, ""
        if self.profile.runtime in found:
            return self.profile.runtime, ""
        if not found:
            raise runtime.RuntimeUnavailable("no TFLite runtime installed (pip install ai-edge-litert)")
        name = next(iter(found))
        return name, (f"host runs {name} {found[name].version}; {self.device} uses {self.profile.runtime} "
                      f"{self.profile.runtime_version} (checked under emulation by test_compat)")

    @cached_property
    def report(self) -> report.Report:
        info = report.machine_info()
        info.update(scale=self.scale.name, data=self.data_spec, placement=self.placement.method,
                    device_title=self.profile.title)
        return report.Report(self.device, info)

    def row(self, case: suite.Case) -> report.Row:
        return self.report.row(case.model, case.quant, case.seq_label)

    # -- artifacts (built lazily, cached on disk, memoised here) -------------------------------
    def artifact(self, case: suite.Case):
        if case not in self._artifacts:
            from edgemodels import pipeline
            from edgemodels.convert import ConversionError

            cfg = self.scale.train_config(case.model)
            if self.config.getoption("--max-examples"):
                cfg = replace(cfg, max_examples=self.config.getoption("--max-examples"))
            req = pipeline.BuildRequest(model=case.model, quant=case.quant, data=self.data_spec, seq=case.seq,
                                        train=cfg, from_scratch=self.scale.from_scratch)
            expected = suite.expected_conversion_failure(case)
            if case in self._conversion_failures:  # known this session: do not pay for the conversion again
                pytest.xfail(self._conversion_failures[case])
            try:
                art = pipeline.build(req, self.cache)
            except ConversionError as exc:
                if not expected:
                    raise
                why = f"{case.id} does not convert: {expected} ({str(exc).splitlines()[0][:160]}...)"
                self._conversion_failures[case] = why
                self.row(case).notes.append(f"does not convert to TFLite builtins: {expected}")
                pytest.xfail(why)
            if expected:
                pytest.fail(f"{case.id} converts now: remove it from suite.EXPECTED_CONVERSION_FAILURES")
            self._artifacts[case] = art
            row = self.row(case)
            row.size_bytes = art.size_bytes
            row.pretrained = art.pretrained
        return self._artifacts[case]

    @cached_property
    def eval_set(self) -> data.Dataset:
        spec = data.parse_spec(self.data_spec)
        ds = data.load(spec, spec.evaluation_split)
        n = self.scale.eval_examples
        return ds.sample(n) if n and len(ds.examples) > n else ds

    def accuracy(self, case: suite.Case, runtime_name: str | None = None):
        """Accuracy of the case's .tflite on the evaluation split, through the host interpreter."""
        from edgemodels import evaluate

        from edgemodels import runtime

        rt = runtime_name or self.host_runtime[0]
        if (case, rt) not in self._accuracy:
            art = self.artifact(case)
            version = next((r.version for r in runtime.available() if r.name == rt), "unknown")
            key = cache.Key("accuracy", case.id, {"artifact": art.manifest["key"]["digest"],
                                                  "data": self.eval_set.fingerprint, "runtime": [rt, version]})

            def compute() -> dict:
                try:
                    acc = evaluate.evaluate(art.tflite, self.eval_set, tokenizer_dir=art.tokenizer_dir,
                                            max_length=art.manifest["max_length"], pad=art.manifest["pad_id"],
                                            runtime_name=rt, threads=self.threads)
                except runtime.ModelLoadError as exc:  # e.g. drq on tflite-runtime 2.14 (the pi3 tox env)
                    expected = suite.expected_refusal(rt, version, case.quant, case.model)
                    (pytest.xfail if expected else pytest.fail)(str(exc))
                return asdict(acc)

            result, _ = self.cache.memo_json(key, compute)
            result["confusion"] = tuple(tuple(r) for r in result["confusion"])
            self._accuracy[(case, rt)] = evaluate.Accuracy(**result)
        return self._accuracy[(case, rt)]

    def reference_fp32(self):
        """The largest model's fp32 artifact at seq 128: the 'ratio' column's denominator-of-record."""
        for model in ("bert-large", "mpnet-base"):
            c = self.case(model, "fp32", 128)
            if c is not None:
                return self.artifact(c)
        return None

    def named_ratio(self, defn: suite.RatioDefinition) -> tuple[float, str]:
        """One of the paper's size-ratio readings, from real files; skips when the run lacks an input."""
        from edgemodels import pipeline

        need = {"large": self.case("bert-large", "fp32"), "drq": self.case("mobilebert", "drq")}
        if None in need.values():
            pytest.skip(f"{defn.name}: needs bert-large fp32 and mobilebert drq in this run's matrix")
        large, small = self.artifact(need["large"]), self.artifact(need["drq"])
        compat_case = self.case("mobilebert", "drq-compat")
        compat = self.artifact(compat_case).size_bytes if compat_case else None
        ckpt = None
        if defn.name == "checkpoint":
            req = pipeline.BuildRequest(model="bert-large", quant="fp32", data=self.data_spec,
                                        train=self.scale.train_config("bert-large"))
            ckpt = pipeline.training_checkpoint(req, self.cache).manifest["size_bytes"]
        value, detail = suite.ratio_value(defn, suite.RatioInputs(
            large.size_bytes, large.manifest["weight_bytes"], small.size_bytes, small.manifest["weight_bytes"],
            compat, ckpt))
        if value is None:
            pytest.skip(f"{defn.name}: {detail}")
        self.report.add_claim(report.Claim(
            claim="quantized MobileBERT ~160x smaller than BERT-Large", paper="160x",
            ours=f"{value:.1f}x ({detail})", definition=f"{defn.name}: {defn.numerator} / {defn.denominator}",
            holds=value >= suite.PAPER_RATIO_HOLDS))
        return value, detail

    def claim_accuracy(self, large: str, compact: str, a_big, a_small, drop: float) -> report.Claim:
        return report.Claim(
            claim="compressed model loses 4.1 accuracy points", paper=f"-{suite.PAPER_DROP_PTS} pt",
            ours=f"{-drop:+.2f} pt ({compact} drq {a_small.accuracy:.4f} vs {large} fp32 {a_big.accuracy:.4f}, "
                 f"n={a_big.n}, {self.data_spec})",
            definition=f"{compact} drq .tflite vs {large} fp32 .tflite, same evaluation split",
            holds=drop <= suite.PAPER_DROP_PTS)

    # -- speed, memory, device runtime ---------------------------------------------------------
    def feeds(self, case: suite.Case, n: int | None = None) -> list[dict]:
        """Real tweets from the evaluation split, encoded for the artifact (padded, or at own length)."""
        from edgemodels import convert, evaluate

        art = self.artifact(case)
        ds = self.eval_set if n is None else self.eval_set.sample(min(n, len(self.eval_set.examples)))
        ids = evaluate.encode_dataset(ds, art.tokenizer_dir, case.seq or art.manifest["max_length"])
        return [convert.to_feeds(x, case.seq, art.manifest["pad_id"]) for x in ids]

    def skip_if_device_refuses(self, case: suite.Case) -> None:
        """When the host runs another runtime than the device, a mode the device cannot load is not timed.

        Uses the device runtime's verdict from test_compat (emulated, cached); without emulation the
        figure is kept and the row says the host runtime differs.
        """
        from edgemodels import emulation

        if not self.host_runtime[1] or emulation.TARGETS.get(self.device) is None or not emulation.availability()[0]:
            return
        verdict = self.device_run(case)
        if not verdict.loads:
            expected = suite.expected_refusal(self.profile.runtime, self.profile.runtime_version, case.quant, case.model)
            (pytest.xfail if expected else pytest.fail)(
                f"{self.profile.runtime} {self.profile.runtime_version} on {self.device} cannot load {case.id} "
                f"({verdict.method}): {verdict.error}")

    def throughput_runner(self, case: suite.Case):
        """A zero-argument callable running one inference (cycling through real tweets)."""
        from edgemodels import runtime

        self.skip_if_device_refuses(case)
        art = self.artifact(case)
        rt, note = self.host_runtime
        try:
            model = runtime.load(art.tflite, runtime=rt, num_threads=self.threads)
        except runtime.ModelLoadError as exc:
            self.row(case).notes.append(f"{rt} cannot load it")
            expected = suite.expected_refusal(self.profile.runtime, self.profile.runtime_version, case.quant, case.model)
            (pytest.xfail if expected else pytest.fail)(str(exc))
        if note:
            self.row(case).notes.append(note)
        feeds = self.feeds(case, 64)
        state = {"i": 0}

        def run():
            model.run(feeds[state["i"] % len(feeds)])
            state["i"] += 1

        self._last_runtime = model.info
        return run

    def record_throughput(self, case: suite.Case, stats, extra_info: dict):
        from edgemodels import measure

        proj = measure.project(stats.inferences_per_s, self.placement, host_threads=self.threads)
        scale = 1.0 if proj.factor is None else 1.0 / proj.factor  # projected latency = host latency / factor
        row = self.row(case)
        row.inferences_per_s, row.method, row.threads = proj.value, proj.method, self.threads
        row.p50_ms, row.p90_ms, row.p99_ms = (1e3 * v * scale for v in (stats.p50_s, stats.p90_s, stats.p99_s))
        row.runtime, row.runtime_version = self._last_runtime.name, self._last_runtime.version
        extra_info.update(device=self.device, method=proj.method, basis=proj.basis, threads=self.threads,
                          inferences_per_s=proj.value, host_inferences_per_s=stats.inferences_per_s,
                          p50_ms=row.p50_ms, p90_ms=row.p90_ms, p99_ms=row.p99_ms,
                          runtime=f"{row.runtime} {row.runtime_version}", seq=case.seq_label)
        return proj

    def memory(self, case: suite.Case):
        from edgemodels import measure

        self.skip_if_device_refuses(case)
        art = self.artifact(case)
        rt, _ = self.host_runtime
        res = measure.peak_rss_of_run(art.tflite, runtime=rt, threads=self.threads,
                                      seq_len=case.seq or art.manifest["max_length"],
                                      budget_bytes=self.profile.memory_budget_bytes)
        row = self.row(case)
        row.peak_rss_bytes, row.memory_budget_bytes, row.fits = res.peak_rss_bytes, res.budget_bytes, res.fits
        if not self.placement.on_device:
            row.notes.append(f"memory: host RSS ({res.runtime} {res.runtime_version}) vs {self.device} budget")
        return res

    def device_run(self, case: suite.Case) -> "DeviceRun":
        """The artifact on the device's own runtime: here if on the device, else under QEMU."""
        from edgemodels import emulation, runtime

        if case in self._device_runs:
            return self._device_runs[case]

        art = self.artifact(case)
        target = emulation.TARGETS.get(self.device)
        emulate = not self.placement.on_device and target is not None
        infer = case.compact and art.size_bytes <= suite.EMULATE_INFERENCE_MAX_BYTES
        feeds = self.feeds(case, self.scale.emulation_examples)
        if emulate:
            ok, why = emulation.availability()
            if not ok:
                pytest.skip(f"ARM emulation unavailable: {why}")
            used = feeds if infer else feeds[:0]
            key = cache.Key("emulated", f"{self.device}-{case.id}", {
                "artifact": art.manifest["key"]["digest"], "target": asdict(target),
                "feeds": cache.digest({"n": len(used), "data": self.eval_set.fingerprint})})

            def compute() -> dict:
                rootfs = emulation.ensure_rootfs(target, self.cache.root)
                run = emulation.run_model(target, rootfs, art.tflite, used, num_threads=min(2, target.cores))
                return {"loads": run.loads, "error": run.error, "runtime_version": run.runtime_version,
                        "arch": run.arch, "outputs": None if run.outputs is None else run.outputs.tolist()}

            run, _ = self.cache.memo_json(key, compute)
            outputs = None if run["outputs"] is None else np.asarray(run["outputs"], dtype=np.float32)
            result = DeviceRun(run["loads"], run["error"], outputs, target.method,
                               f"{target.runtime} {run['runtime_version']} ({run['arch']})")
        else:
            rt = self.profile.runtime if self.placement.on_device else self.host_runtime[0]
            try:
                m = runtime.load(art.tflite, runtime=rt, num_threads=self.threads)
                outs = np.concatenate([m.run(f) for f in feeds]) if infer else None
                result = DeviceRun(True, None, outs, "measured" if self.placement.on_device else "host",
                                   f"{m.runtime_name} {m.runtime_version}")
            except runtime.ModelLoadError as exc:
                result = DeviceRun(False, str(exc), None, "host", rt)
        row = self.row(case)
        row.arm_loads, row.arm_error, row.arm_method = result.loads, result.error, result.method
        if result.outputs is not None:
            ref = self._reference_outputs(case, feeds)
            result.max_abs_diff = float(np.max(np.abs(result.outputs - ref)))
            row.arm_max_abs_diff = result.max_abs_diff
            sample = self.eval_set.sample(min(self.scale.emulation_examples, len(self.eval_set.examples)))
            y = sample.label_ids()
            host = self._host_outputs(case, feeds)
            row.arm_accuracy = float(np.mean(result.outputs.argmax(1) == y))
            row.x86_accuracy_sample = float(np.mean(host.argmax(1) == y))
        elif result.loads and not infer:
            row.notes.append("emulated: load only (inference too slow under emulation for this size)")
        self._device_runs[case] = result
        return result

    def _host_outputs(self, case: suite.Case, feeds: list[dict]) -> np.ndarray:
        from edgemodels import runtime

        m = runtime.load(self.artifact(case).tflite, runtime=self.host_runtime[0], num_threads=self.threads)
        return np.concatenate([m.run(f) for f in feeds])

    def _reference_outputs(self, case: suite.Case, feeds: list[dict]) -> np.ndarray:
        """x86 outputs of the same model's fp32 artifact (same length), or of the artifact itself."""
        ref = self.case(case.model, "fp32", case.seq)
        return self._host_outputs(ref or case, feeds)

    def cases(self) -> tuple[suite.Case, ...]:
        keep_models = _csv(self.config.getoption("--models"))
        keep_modes = _csv(self.config.getoption("--modes"))
        return tuple(c for c in self.scale.cases
                     if (not keep_models or c.model in keep_models) and (not keep_modes or c.quant in keep_modes))

    def case(self, model: str, quant: str, seq: int | None = 128) -> suite.Case | None:
        """A case of this run's matrix (None when the scale or the filters leave it out)."""
        c = suite.Case(model, quant, seq)
        return c if c in self.cases() else None


@dataclass
class DeviceRun:
    loads: bool
    error: str | None
    outputs: Any  # np.ndarray [n, labels] or None
    method: str  # "emulated ARM (qemu, cortex-a72)" | "measured" | "host"
    runtime: str
    max_abs_diff: float | None = None


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if value else set()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = metafunc.config.stash[SESSION_KEY].cases()
        wanted = getattr(metafunc.function, "case_filter", None)
        if wanted is not None:
            cases = tuple(c for c in cases if wanted(c))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def case_filter(predicate):
    """Decorator: parametrize a test only over the cases for which predicate(case) is true."""
    def mark(fn):
        fn.case_filter = predicate
        return fn
    return mark


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> BenchSession:
    return request.config.stash[SESSION_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash.get(SESSION_KEY, None)
    if s is None:
        return []
    p = s.placement
    return [f"edgemodels: device={s.device} ({p.profile.title}); figures {p.method}"
            f"{'' if p.on_device else ' (off the device: throughput projected, memory and runtime emulated)'}; "
            f"scale={s.scale.name}; data={s.data_spec}; cache={s.cache.root}"]


def _session_used(s: BenchSession) -> bool:
    return "report" in s.__dict__ and bool(s.report.rows())


def _speed_claim(s: BenchSession) -> report.Claim | None:
    """'>= 1 tweet/s' for this device: the quantized compact models the device's runtime can run."""
    rows = [r for r in s.report.rows() if r.model in ("mobilebert", "minilm-l6") and r.seq == "128"
            and suite.Case(r.model, r.mode).candidate and r.inferences_per_s is not None]
    if not rows:
        return None
    shown = "; ".join(f"{r.model} {r.mode} {r.inferences_per_s:.3g}/s" for r in rows)
    paper_mode = [r for r in rows if r.model == "mobilebert"] or rows
    best = max(paper_mode, key=lambda r: r.inferences_per_s)
    return report.Claim(
        claim=f">= 1 tweet/s on {s.device}", paper=">= 1/s (Pi 3, Pi 4, desktop)",
        ours=f"{best.model} {best.mode}: {best.inferences_per_s:.3g}/s ({best.method}) [{shown}]",
        definition=f"batch 1, seq 128, {best.threads} thread(s), {best.runtime} {best.runtime_version}",
        holds=best.inferences_per_s >= s.profile.target_inferences_per_s)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None or not _session_used(s) or hasattr(session.config, "workerinput"):
        return
    speed = _speed_claim(s)
    if speed is not None:
        s.report.add_claim(speed)
    out = session.config.getoption("--report-dir")
    s.report_paths = s.report.write(out)
    # Baselines are per data kind and scale: accuracy on RepLab says nothing about the built-in set.
    base_dir = Path(session.config.getoption("--baseline-dir")) / data.parse_spec(s.data_spec).kind / s.scale.name
    mid = report.machine_id()
    s.regressions, s.baseline_notes = [], []
    if session.config.getoption("--baseline-compare"):
        regressions, s.baseline_notes = report.compare_baseline(s.report, base_dir, mid)
        gated = _csv(session.config.getoption("--baseline-metrics"))
        s.regressions = [r for r in regressions if r.metric in gated]
        s.baseline_notes += [f"not gated (--baseline-metrics): {r}" for r in regressions if r.metric not in gated]
        if s.regressions and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.getoption("--baseline-save"):
        s.baseline_notes.append(f"baseline saved: {report.save_baseline(s.report, base_dir, mid)}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = config.stash.get(SESSION_KEY, None)
    if s is None or not _session_used(s):
        return
    tr = terminalreporter
    tr.section(f"edgemodels report: {s.device} ({s.placement.method}; scale {s.scale.name}; data {s.data_spec})")
    tr.write_line(s.report.table())
    if s.report.claims:
        tr.write_line("")
        tr.write_line("Paper claims")
        tr.write_line(report.claims_table(s.report.claims))
    for p in getattr(s, "report_paths", []):
        tr.write_line(f"wrote {p}")
    for note in getattr(s, "baseline_notes", []):
        tr.write_line(f"baseline: {note}")
    if getattr(s, "regressions", None):
        tr.write_line(report.format_regressions(s.regressions), red=True, bold=True)
