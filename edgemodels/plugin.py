"""The pytest plugin behind `pytest bench/ --device=X`: options, the session's lazy artifacts, the report.

Enabled by the repository's root conftest.py (`pytest_plugins`). Tests ask the `bench` fixture for what
they need (an artifact, its accuracy, the device placement); everything is built lazily through the
package's pipeline and cached, and each measurement lands in one shared report row.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pytest

from edgemodels import cache, claims, data, devices, quiet, report, suite
from edgemodels import expected as expected_mod
from edgemodels.errors import EdgeModelsError

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
    g.addoption("--models", default=None,
                help="comma-separated models to keep from the scale's matrix, e.g. minilm-l6,mobilebert "
                     "(a name not in it is an error listing the valid ones)")
    g.addoption("--modes", default=None,
                help=f"comma-separated quantization modes to keep: {', '.join(suite.ALL_MODES)} "
                     "(those in the scale's matrix; a dir:/hf: model is built in each)")
    g.addoption("--tokenizer", default=None, metavar="DIR",
                help="for --models tflite:PATH: the model's tokenizer directory (default: tokenizer/ beside the file)")
    g.addoption("--labels", default=None, metavar="A,B,...",
                help="for --models tflite:PATH: its class names in output order (default: an edgemodels "
                     "manifest.json beside it)")
    g.addoption("--max-examples", type=int, default=None,
                help="override the scale's training budget (examples); for shrunk-budget experiments")
    g.addoption("--report-dir", default=Path("bench-report"), type=Path,
                help="where report.json and report.png go (default bench-report/)")
    g.addoption("--baseline-dir", default=None, type=Path,
                help="per-device baselines directory (default bench/baselines under the rootdir)")
    g.addoption("--baseline-compare", action="store_true",
                help="fail on regressions vs the device's baseline (accuracy -0.5 pt, size +2 %%, "
                     "throughput -10 %% on the same machine)")
    g.addoption("--baseline-metrics", default="accuracy,size,throughput",
                help="metrics --baseline-compare gates on (default all three; throughput only on the same machine id)")
    g.addoption("--baseline-save", action="store_true", help="write this run's results as the device's baseline")
    g.addoption("--remote", default=None, metavar="ssh://[user@]host[:port] | labgrid://PLACE",
                help="run throughput, memory and compat on this device over SSH (this host builds and uploads); "
                     "labgrid://PLACE locks a labgrid place for the session and takes its board's NetworkService")
    g.addoption("--remote-python", default=None, metavar="CMD", help="python on the remote (default python3)")
    g.addoption("--remote-identity", default=None, metavar="KEY", help="private key file for the SSH login")
    g.addoption("--remote-dir", default=None, metavar="DIR",
                help="content-addressed upload directory on the remote (default ~/.cache/edgemodels/remote)")
    g.addoption("--remote-known-hosts", default=None, metavar="FILE",
                help="known_hosts for the remote's host key (default ~/.ssh/known_hosts; new hosts are added)")
    g.addoption("--artifacts", default=None, type=Path, metavar="DIR",
                help="run from an export (python -m edgemodels export --device D DIR): no build, no tokenizer, "
                     "no TensorFlow; on the device itself every figure is measured")


def pytest_addhooks(pluginmanager) -> None:
    """Hooks a user's conftest.py implements to add device profiles and model sources (edgemodels/hookspec.py)."""
    from edgemodels import hookspec

    pluginmanager.add_hookspecs(hookspec)


def _hook_additions(config: pytest.Config):
    """(device profiles, model sources by name, expected outcomes) that conftest.py files added through the hooks;
    the outcomes are the built-in records plus theirs (edgemodels.expected.Outcomes)."""
    from edgemodels import expected, sources

    try:
        added = expected.check_added(
            r for answer in config.hook.pytest_edgemodels_add_expected_outcomes() for r in (answer or ()))
    except expected.ExpectedError as exc:
        raise pytest.UsageError(str(exc)) from None

    try:
        extra_devices = devices.merge_extra(config.hook.pytest_edgemodels_add_devices())
    except devices.DeviceProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    named: dict[str, str] = {}
    for answer in config.hook.pytest_edgemodels_add_model_sources():
        for name, spec in dict(answer or {}).items():
            from edgemodels.models import REGISTRY

            if name in named or name in REGISTRY or sources.is_source_spec(name):
                raise pytest.UsageError(f"pytest_edgemodels_add_model_sources: model name {name!r} is given twice, "
                                        "is a registered model, or looks like a spec (dir:/hf:/tflite:); give each "
                                        "source its own plain name")
            named[name] = str(spec)
    outcomes = expected.Outcomes(added, aliases=tuple((spec, name) for name, spec in named.items()))
    return extra_devices, named, outcomes


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


_DEFERRED_ERROR = pytest.StashKey[pytest.UsageError]()


def pytest_configure(config: pytest.Config) -> None:
    """Bench options are checked only for runs that collect bench tests: `pytest tests/` with a bad
    $EDGEMODELS_DATA must still run the unit tests (issue 10); a bench run still fails at start-up."""
    try:
        try:
            _configure_bench(config)
        except EdgeModelsError as exc:  # e.g. --edge-cache naming a file
            raise pytest.UsageError(str(exc)) from None
    except pytest.UsageError as exc:
        if _bench_requested(config):
            raise
        config.stash[_DEFERRED_ERROR] = exc  # raised in pytest_collection_modifyitems if bench tests turn up


def _bench_requested(config: pytest.Config) -> bool:
    """Whether the command line names the bench folder, a file in it, or a folder containing it."""
    bench_dir = (Path(config.rootpath) / "bench").resolve()
    for arg in config.args:
        p = Path(str(arg).split("::")[0])
        p = (p if p.is_absolute() else Path(config.invocation_params.dir) / p).resolve()
        if p == bench_dir or bench_dir in p.parents or p in bench_dir.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    err = config.stash.get(_DEFERRED_ERROR, None)
    if err is not None and any({"bench", "case"} & set(getattr(i, "fixturenames", ())) for i in items):
        raise err
    s = config.stash.get(SESSION_KEY, None)
    if s is not None:
        _mark_expected(s, items)


def _mark_expected(s: BenchSession, items: list) -> None:
    """Expected outcomes decidable from the test id and the options (edgemodels.expected.COLLECTION_KINDS: known
    losses, claim misses, strict misses) become strict xfail markers, so the bench tests simply assert. Only a
    assertion of the test function failing is the expected outcome (_assertion_in): a pytest.fail (a random init that
    should be pretrained, a bad floor table) or an error stays a failure; a pass is an XPASS(strict) failure whose
    reason says to remove the record. Refusals, memory misses and conversion failures stay run-time lookups."""
    try:  # the profile's runtime, never the --remote's (not reached at collection)
        profile = devices.get(s.device, s.extra_devices)
    except ValueError:
        profile = None
    for item in items:
        if "bench" not in getattr(item, "fixturenames", ()):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, compact = params.get("case"), params.get("compact")
        facets = {"data": s.data_kind, "scale": s.scale.name, "device": s.device,
                  "runtime": profile.runtime if profile else None,
                  "runtime_version": profile.runtime_version if profile else None}
        if isinstance(case, suite.Case):
            facets.update(model=case.model, mode=case.quant, seq=case.seq_label)
        elif compact is not None:  # test_compact_vs_large: the compact model's drq at 128 vs the large fp32
            facets.update(model=compact, versus=params.get("large"), mode="drq", seq="128")
        test = getattr(item, "originalname", item.name)
        rec = s.expected.for_test(test, **facets)
        if rec is not None:
            item.add_marker(pytest.mark.xfail(strict=rec.strict, raises=_assertion_in(test),
                                              reason=s.expected.marker_reason(rec, test)))


def _assertion_in(test: str):
    """xfail's `raises` for a collection-time record: an AssertionError raised by the test function itself. A bare
    assert failing deeper (in the package, a fixture) is a bug, not the expected outcome, and stays a failure.
    pytest < 9 has no RaisesExc check in xfail: there any AssertionError counts (README, limitations)."""
    if int(pytest.__version__.split(".")[0]) < 9 or not hasattr(pytest, "RaisesExc"):
        return AssertionError
    import traceback

    return pytest.RaisesExc(AssertionError, check=lambda e: traceback.extract_tb(e.__traceback__)[-1].name == test)


def _configure_bench(config: pytest.Config) -> None:
    for m in _MARKERS:
        config.addinivalue_line("markers", m)
    device = config.getoption("--device") or devices.detect() or "desktop"
    extra_devices, named_sources, outcomes = _hook_additions(config)
    if device not in devices.NAMES and device not in extra_devices:
        raise pytest.UsageError(f"--device={device!r} is not a known device; valid: "
                                f"{', '.join((*devices.NAMES, *extra_devices))}")
    exported = _open_export(config, device)
    if exported is not None:  # the export's data: its path need not exist here (the feeds are in DIR)
        spec = exported.data_spec
    else:
        spec = config.getoption("--data") or data.default_spec()
        try:
            data.parse_spec(spec)
        except data.DataError as exc:
            raise pytest.UsageError(f"--data: {exc}") from None
    ready = check_filters(suite.get_scale(config.getoption("--scale")), config.getoption("--models"),
                          config.getoption("--modes"), named_sources, tokenizer=config.getoption("--tokenizer"),
                          labels=config.getoption("--labels"))
    if ready and exported is not None:
        raise pytest.UsageError(f"--models {', '.join(ready)}: --artifacts runs only what the export holds; bench a "
                                "ready .tflite without --artifacts (copy it and its tokenizer/ to the device)")
    ready = {spec: _open_ready(src, config) for spec, src in ready.items()}
    os.environ.setdefault(quiet.ENV, "1")  # runtimes' start-up lines off; EDGEMODELS_QUIET=0 shows them
    if config.getoption("--remote"):
        from edgemodels import lab, targets

        try:
            lab.check_remote(config.getoption("--remote"), identity=config.getoption("--remote-identity"))
        except targets.RemoteError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = BenchSession(config, device, spec, exported)
    config.stash[SESSION_KEY].extra_devices = extra_devices
    config.stash[SESSION_KEY].named_sources = named_sources
    config.stash[SESSION_KEY].expected = outcomes
    config.stash[SESSION_KEY].ready = MappingProxyType(ready)


def _open_ready(src, config: pytest.Config):
    """A tflite: source opened once at start-up (its length and mode decide its case); a bad file is a usage error."""
    from edgemodels import sources

    try:
        return sources.open_tflite(src, runtime_name=config.getoption("--runtime"))
    except sources.SourceError as exc:
        raise pytest.UsageError(f"--models: {exc}") from None


def _open_export(config: pytest.Config, device: str):
    """The --artifacts export, checked against --device/--scale/--data; None without the option."""
    root = config.getoption("--artifacts")
    if root is None:
        return None
    from edgemodels import export

    if config.getoption("--remote"):
        raise pytest.UsageError("--artifacts runs on this machine from an export; --remote drives a device from "
                                "the workstation's cache: pass one of them")
    try:
        exported = export.Export.open(root, device=device, scale=config.getoption("--scale"))
    except export.ExportError as exc:
        raise pytest.UsageError(str(exc)) from None
    asked = config.getoption("--data")
    if asked and asked != exported.data_spec:
        raise pytest.UsageError(f"--data {asked}: --artifacts {root} was exported from --data {exported.data_spec}; "
                                "drop --data (the export carries its evaluation feeds) or export that data set")
    return exported


MODEL_SOURCE_PREFIXES = ("dir:", "hf:", "tflite:")
"""--models entries that name a model source rather than a registry model; checked where they are resolved."""


def check_filters(scale: suite.Scale, models: str | None, modes: str | None, named=None, *,
                  tokenizer: str | None = None, labels: str | None = None) -> dict:
    """A misspelt --models/--modes name is a usage error listing the valid ones (it used to collect `[NOTSET]`).

    Model sources (dir:/hf:/tflite:, or names a conftest.py added) are parsed here: a bad one is a one-line usage
    error. Returns the tflite: sources by the --models entry that names them (--tokenizer/--labels apply to them)."""
    asked_models = _csv(models)
    sources = {m for m in asked_models if m.startswith(MODEL_SOURCE_PREFIXES) or m in (named or {})}
    asked_models -= sources
    ready = {}
    for m in sorted(sources):
        from edgemodels import sources as sources_mod

        try:
            src = sources_mod.parse(m, named=named, tokenizer=tokenizer, labels=labels)
        except sources_mod.SourceError as exc:
            raise pytest.UsageError(f"--models: {exc}") from None
        if src.kind == "tflite":
            ready[m] = src
    if (tokenizer or labels) and not ready:
        raise pytest.UsageError("--tokenizer/--labels describe a ready .tflite: use them with --models tflite:PATH")
    asked_modes = _csv(modes)
    for opt, asked, field in (("--models", asked_models, "model"), ("--modes", asked_modes, "quant")):
        valid = list(dict.fromkeys(getattr(c, field) for c in scale.cases))
        bad = [x for x in sorted(asked) if x not in valid]
        if not bad:
            continue
        scales_with = {x: [n for n, sc in suite.SUITE_SCALES.items() if any(getattr(c, field) == x for c in sc.cases)]
                       for x in bad}
        elsewhere = [f"{x!r} is in --scale={'/'.join(names)}" for x, names in scales_with.items() if names]
        raise pytest.UsageError(
            f"{opt}: {', '.join(map(repr, bad))} not in the {scale.name} scale's matrix; valid: {', '.join(valid)}"
            f"{' (' + '; '.join(elsewhere) + ')' if elsewhere else ''}")
    if (asked_models or asked_modes) and not sources and not any(
            (not asked_models or c.model in asked_models) and (not asked_modes or c.quant in asked_modes)
            for c in scale.cases):
        raise pytest.UsageError(
            f"--models/--modes: no case of the {scale.name} scale is {'/'.join(sorted(asked_models)) or 'any model'} "
            f"in {'/'.join(sorted(asked_modes)) or 'any mode'}; its cases: {', '.join(c.id for c in scale.cases)}")
    return ready


class BenchSession:
    """One bench run's context: device placement, scale, data, cache, memoised artifacts, the report."""

    exported = None  # export.Export with --artifacts (set in __init__); None: artifacts are built through the cache

    extra_devices: Mapping[str, devices.DeviceProfile] = MappingProxyType({})  # from pytest_edgemodels_add_devices
    named_sources: Mapping[str, str] = MappingProxyType({})  # from pytest_edgemodels_add_model_sources: name -> spec
    ready: Mapping[str, Any] = MappingProxyType({})  # --models tflite: entry -> sources.ReadyTflite (used as it is)
    expected: expected_mod.Outcomes = expected_mod.BUILTIN_OUTCOMES  # + pytest_edgemodels_add_expected_outcomes

    def __init__(self, config: pytest.Config, device: str, spec: str, exported=None):
        self.config = config
        self.device = device
        self.data_spec = spec
        self.exported = exported  # export.Export with --artifacts: artifacts and feeds come from it, never built
        self.scale = suite.get_scale(config.getoption("--scale"))
        root = config.getoption("--edge-cache")
        self.cache = cache.ArtifactCache(root)
        self._artifacts: dict[suite.Case, Any] = {}
        self._conversion_failures: dict[suite.Case, str] = {}  # expected ones, met this session
        self._device_runs: dict[suite.Case, DeviceRun] = {}  # compat, throughput and memory all ask
        self._accuracy: dict[tuple[suite.Case, str], Any] = {}
        self._crash_probes: dict[tuple[suite.Case, str], str | None] = {}  # crash_guard's child-process verdicts

    # -- where and how -------------------------------------------------------------------------
    @cached_property
    def target(self):
        """The --remote device (targets.SshTarget), reached and checked against --device once; None without it."""
        url = self.config.getoption("--remote")
        if not url:
            return None
        from edgemodels import lab, targets

        target = None
        try:
            target = lab.remote_target(self.config)  # labgrid://: the place stays locked until the session ends
            self.remote_identity = target.identity()
            targets.check_device(self.remote_identity, self.device)
        except targets.TargetError as exc:
            if target is not None:
                target.close()
            pytest.exit(f"--remote: {exc}", returncode=2)
        return target

    @cached_property
    def placement(self) -> devices.Placement:
        if self.target is not None:  # figures come from the remote: measured there (or emulated, never timed)
            from edgemodels import targets

            ident = self.remote_identity
            profile = targets.profile_for(ident) if self.device == "native" else devices.get(self.device,
                                                                                             self.extra_devices)
            return devices.Placement(profile, True, ident.method)
        return devices.place(self.device, extra=self.extra_devices)

    @property
    def profile(self) -> devices.DeviceProfile:
        return self.placement.profile

    @property
    def data_kind(self) -> str:
        """builtin | replab | csv (an export records it: its data path need not exist on the device)."""
        return self.exported.data_kind if self.exported is not None else data.parse_spec(self.data_spec).kind

    @property
    def max_examples(self) -> int | None:
        """--max-examples of this run, or of the export it reads: a training budget below the scale's."""
        return self.exported.max_examples if self.exported is not None else self.config.getoption("--max-examples")

    @property
    def compat_examples(self) -> int:
        """Tweets the compat check runs: the scale's, or what the export holds (made when the scale said otherwise)."""
        return self.exported.compat_n if self.exported is not None else self.scale.emulation_examples

    @property
    def measured_on_device(self) -> bool:
        """Whether figures are taken on the device itself (here, or a real --remote): then a model larger than
        its memory budget is not loaded at all."""
        if self.target is not None:
            return not self.remote_identity.emulated
        return self.placement.on_device

    @cached_property
    def threads(self) -> int:
        if self.target is not None:  # the remote's cores, not this host's
            return self.config.getoption("--threads") or max(1, min(self.profile.cpu.cores, self.remote_identity.cores))
        return self.config.getoption("--threads") or self.profile.threads()

    @cached_property
    def remote_runtime(self) -> str:
        """The runtime the remote runs: --runtime, else the device's own when installed there, else its first."""
        found = self.remote_identity.runtimes
        named = self.config.getoption("--runtime") or (self.profile.runtime if self.profile.runtime in found else None)
        if named:
            return named
        if not found:
            pytest.exit(f"--remote: no TFLite runtime on {self.remote_identity.via}; install one there: "
                        f"{self.config.getoption('--remote-python') or 'python3'} -m pip install '.[device]' in a copy of the "
                        "edgemodels repository (it is not on PyPI)",
                        returncode=2)
        return next(iter(found))

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
        if self.target is not None:
            info["remote"] = self.remote_identity.as_dict()  # the figures' machine; the rest is this host's
        if self.exported is not None:
            info["artifacts"] = self.exported.summary()
        return report.Report(self.device, info)

    def row(self, case: suite.Case) -> report.Row:
        return self.report.row(case.model, case.quant, case.seq_label)

    # -- artifacts (built lazily, cached on disk, memoised here) -------------------------------
    def ready_file(self, case: suite.Case):
        """The sources.ReadyTflite a tflite: case runs as it is, or None for a built (or exported) case."""
        return next((r for r in self.ready.values() if r.source.spec == case.model), None)

    def artifact(self, case: suite.Case):
        ready = self.ready_file(case) if case not in self._artifacts else None
        if ready is not None:  # never built, never copied: the user's file, checked at start-up
            self._artifacts[case] = ready
            row = self.row(case)
            row.size_bytes, row.pretrained = ready.size_bytes, ready.pretrained
            row.notes.append(f"{ready.tflite.name} as it is (sha256 {ready.manifest['key']['digest'][:12]}); mode "
                             + ("from its edgemodels manifest" if ready.mode != "as-is" else "not recorded"))
        if case not in self._artifacts and self.exported is not None:
            failed = self.exported.conversion_failure(case.id)
            if failed:
                why = _reason(self.expected.conversion_failure(case))
                self.row(case).notes.append(f"does not convert to TFLite builtins: {why}")
                pytest.xfail(failed)
            try:
                art = self.exported.artifact(case.id)
            except EdgeModelsError as exc:  # a file changed after export: one line naming it
                pytest.exit(str(exc), returncode=2)
            self._artifacts[case] = art
            row = self.row(case)
            row.size_bytes, row.pretrained = art.size_bytes, art.pretrained
        if case not in self._artifacts:
            from edgemodels import pipeline
            from edgemodels.convert import ConversionError

            req = pipeline.request_for(case, self.scale, self.data_spec, self.max_examples)
            expected = _reason(self.expected.conversion_failure(case))
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
                pytest.fail(f"{case.id} converts now: remove its conversion record from edgemodels/expected.py")
            self._artifacts[case] = art
            row = self.row(case)
            row.size_bytes = art.size_bytes
            row.pretrained = art.pretrained
        return self._artifacts[case]

    @cached_property
    def eval_set(self) -> data.Dataset:
        from edgemodels import evaluate

        return evaluate.evaluation_set(self.data_spec, self.scale.eval_examples)  # the sample an export holds

    def accuracy(self, case: suite.Case, runtime_name: str | None = None):
        """Accuracy of the case's .tflite on the evaluation split, through the host interpreter."""
        from edgemodels import evaluate

        rt = runtime_name or self.host_runtime[0]
        if (case, rt) not in self._accuracy and self.exported is not None:
            self.too_big_for_device(case, self.artifact(case), "accuracy")
            self.crash_guard(case, rt)
            try:  # no memo: the device has no build cache; the exported ids are the tokenizer's, verbatim
                self._accuracy[(case, rt)] = self.exported.accuracy(case.id, runtime_name=rt)
            except RuntimeError as exc:  # e.g. drq on a Pi 3's tflite-runtime 2.14 (load), w4 there (first invoke)
                self.runtime_refused(case, rt, exc)
        if (case, rt) not in self._accuracy:
            art = self.artifact(case)
            version = _installed_version(rt)
            key = cache.Key("accuracy", case.id, {"artifact": art.manifest["key"]["digest"],
                                                  "data": self.eval_set.fingerprint, "runtime": [rt, version],
                                                  "code": code_identity(*ACCURACY_CODE)})

            def compute() -> dict:
                self.crash_guard(case, rt)
                try:
                    acc = evaluate.evaluate(art.tflite, self.eval_set, tokenizer_dir=art.tokenizer_dir,
                                            max_length=art.manifest["max_length"], pad=art.manifest["pad_id"],
                                            labels=art.manifest.get("labels"),  # None (older builds): polarity
                                            runtime_name=rt)  # every host core; predictions do not
                    # depend on the thread or process count (tests/test_evaluate.py), so this is not --threads
                except RuntimeError as exc:  # drq on tflite-runtime 2.14 (the pi3 tox env); w4 there at invoke
                    self.runtime_refused(case, rt, exc)
                return asdict(acc)

            result, _ = self.cache.memo_json(key, compute)
            result["confusion"] = tuple(tuple(r) for r in result["confusion"])
            self._accuracy[(case, rt)] = evaluate.Accuracy(**result)
        return self._accuracy[(case, rt)]

    def runtime_refused(self, case: suite.Case, rt: str, exc: BaseException) -> None:
        """`rt` refused the case's file: xfail where edgemodels/expected.py expects it (drq on tflite-runtime 2.14), else fail.

        A refusal is a load failure (runtime.ModelLoadError) or, for a case the registry expects `rt` to refuse, a
        RuntimeError when the loaded file is run (tflite-runtime 2.14 loads w4 and fails at the first invoke:
        "Type not currently supported"). Any other error of an unexpected case is re-raised: it stays a failure."""
        from edgemodels import runtime

        version = _installed_version(rt)
        why = _reason(self.expected.refusal(rt, version, case.quant, case.model))
        if not why and not isinstance(exc, runtime.ModelLoadError):
            raise exc
        at = "refuses it" if isinstance(exc, runtime.ModelLoadError) else "loads it, then fails to run it"
        self.row(case).notes.append(f"{rt} {version} {at}")
        (pytest.xfail if why else pytest.fail)(f"{case.id}: {rt} {version} {at}"
                                               f"{f' (expected: {why})' if why else ''}: {_one_line(exc)}")

    def crash_guard(self, case: suite.Case, rt: str) -> None:
        """Where the registry expects `rt` to crash on this case (MobileBERT int8 on a Pi 3's tflite-runtime 2.14:
        SIGSEGV), run it first in a child process, so the crash is the refusal (an xfail quoting it) instead of
        the end of this pytest session. If the child runs it, the case goes on here, and test_compat fails it for
        loading where a refusal is expected. Costs nothing for every other case."""
        version = _installed_version(rt)
        refusal = self.expected.refusal(rt, version, case.quant, case.model)
        if refusal is None or not refusal.crash:
            return
        why = refusal.reason
        probes = self._crash_probes
        if (case, rt) not in probes:
            from edgemodels import measure

            art = self.artifact(case)
            self.too_big_for_device(case, art)
            res = measure.peak_rss_of_run(art.tflite, runtime=rt, threads=1, runs=1,
                                          seq_len=case.seq or art.manifest["max_length"],
                                          budget_bytes=self.profile.memory_budget_bytes)
            # A child stopped for memory did not crash: that is the memory test's finding, not this refusal.
            probes[(case, rt)] = None if "exceeded budget" in (res.error or "") else res.error
        if probes[(case, rt)]:
            self.row(case).notes.append(f"{rt} {version} fails on it in a child process")
            pytest.xfail(f"{case.id}: {rt} {version} fails on it in a child process (expected: {why}): "
                         f"{_one_line(probes[(case, rt)])}")

    def reference_fp32(self):
        """The largest model's fp32 artifact at seq 128: the 'ratio' column's denominator-of-record."""
        for model in ("bert-large", "mpnet-base"):
            c = self.case(model, "fp32", 128)
            if c is not None:
                return self.artifact(c)
        return None

    def named_ratio(self, defn: suite.RatioDefinition) -> tuple[float, str]:
        """One of the paper's size-ratio readings, from real files; skips when the run lacks an input."""
        need = {"large": self.case("bert-large", "fp32"), "drq": self.case("mobilebert", "drq")}
        if None in need.values():
            pytest.skip(f"{defn.name}: needs bert-large fp32 and mobilebert drq in this run's matrix")
        large, small = self.artifact(need["large"]), self.artifact(need["drq"])
        compat_case = self.case("mobilebert", "drq-compat")
        compat = self.artifact(compat_case).size_bytes if compat_case else None
        ckpt = None
        if defn.name == "checkpoint" and self.exported is not None:
            ckpt = self.exported.checkpoint_bytes("bert-large")
        elif defn.name == "checkpoint":
            from edgemodels import pipeline

            req = pipeline.request_for(need["large"], self.scale, self.data_spec, self.max_examples)
            ckpt = pipeline.training_checkpoint(req, self.cache).manifest["size_bytes"]
        value, detail = suite.ratio_value(defn, suite.RatioInputs(
            large.size_bytes, large.manifest["weight_bytes"], small.size_bytes, small.manifest["weight_bytes"],
            compat, ckpt))
        if value is None:
            pytest.skip(f"{defn.name}: {detail}")
        self.report.add_claim(claims.size_ratio(defn, value, detail))
        return value, detail

    def claim_caveat(self, large: str, a_big, a_small) -> str | None:
        """Why this run cannot test an accuracy claim against `large` (claims.caveat), or None."""
        big = self.case(large, "fp32")
        trained = big is not None and bool(self.artifact(big).manifest.get("trained"))
        return claims.caveat(self.scale.name, self.data_kind, trained, a_big.accuracy, a_small.accuracy,
                             a_big.majority_accuracy, max_examples=self.max_examples)

    # -- speed, memory, device runtime ---------------------------------------------------------
    def feeds(self, case: suite.Case, n: int | None = None) -> list[dict]:
        """Real tweets from the evaluation split, encoded for the artifact (padded, or at own length)."""
        from edgemodels import convert, evaluate

        if self.exported is not None:  # tokenized at export, the same seeded samples
            self.artifact(case)
            return self.exported.feeds(case.id, n)
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

        if (self.exported is not None or not self.host_runtime[1] or emulation.TARGETS.get(self.device) is None
                or not emulation.availability()[0]):
            return
        verdict = self.device_run(case)
        if not verdict.loads:
            expected = self.expected.refusal(self.profile.runtime, self.profile.runtime_version, case.quant, case.model)
            (pytest.xfail if expected else pytest.fail)(
                f"{self.profile.runtime} {self.profile.runtime_version} on {self.device} cannot load {case.id} "
                f"({verdict.method}): {verdict.error}")

    def throughput_runner(self, case: suite.Case):
        """A zero-argument callable running one inference (cycling through real tweets)."""
        from edgemodels import runtime

        self.skip_if_device_refuses(case)
        art = self.artifact(case)
        self.too_big_for_device(case, art, "throughput")
        rt, note = self.host_runtime
        self.crash_guard(case, rt)
        try:
            model = runtime.load(art.tflite, runtime=rt, num_threads=self.threads)
        except runtime.ModelLoadError as exc:
            self.row(case).notes.append(f"{rt} cannot load it")
            expected = self.expected.refusal(self.profile.runtime, self.profile.runtime_version, case.quant, case.model)
            (pytest.xfail if expected else pytest.fail)(str(exc))
        if note:
            self.row(case).notes.append(note)
        feeds = self.feeds(case, suite.THROUGHPUT_SAMPLE)
        try:  # one run before timing: a runtime that loads a file and fails at its first invoke refused it
            model.run(feeds[0])
        except RuntimeError as exc:
            self.runtime_refused(case, rt, exc)
        state = {"i": 0}

        def run():
            model.run(feeds[state["i"] % len(feeds)])
            state["i"] += 1

        self._last_runtime = model.info
        return run

    def record_throughput(self, case: suite.Case, stats, extra_info: dict):
        from edgemodels import measure

        try:
            proj = measure.project(stats.inferences_per_s, self.placement, host_threads=self.threads,
                                   runtime=self._last_runtime.name)
        except measure.ProjectionRefused as exc:
            self.row(case).notes.append(f"throughput {exc}")
            pytest.skip(f"{case.id} on {self.device}: {exc}")
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

    # -- on the --remote device ------------------------------------------------------------------
    def _remote_refused(self, case: suite.Case, res, what: str) -> None:
        """A model the remote's runtime refuses: xfail where edgemodels/expected.py expects it (drq on tflite-runtime 2.14)."""
        ident = res.identity
        self.row(case).notes.append(f"{what}: {ident.runtime or self.remote_runtime} cannot load it ({ident.label})")
        expected = self.expected.refusal(self.remote_runtime, ident.runtime_version or "", case.quant, case.model)
        (pytest.xfail if expected else pytest.fail)(f"{case.id} on {ident.label}: {res.error}")

    def too_big_for_device(self, case: suite.Case, art, what: str = "") -> None:
        """On the device itself (here or a real --remote), never load a file larger than its memory budget: the
        process's RSS would exceed it (BERT-Large fp32's 1.3 GB on a 1 GB Pi 3). Reported as does-not-fit (an
        xfail where edgemodels/expected.py expects the miss, a failure elsewhere), not crashed into. Off the device the host
        loads it and measures its RSS against the budget."""
        if not self.measured_on_device:
            return
        budget = self.profile.memory_budget_bytes
        if art.size_bytes <= budget:
            return
        row = self.row(case)
        row.memory_budget_bytes, row.fits = budget, False
        row.notes.append(f"not loaded on the device: file {art.size_bytes / 2**20:.0f} MiB > memory budget "
                         f"{budget / 2**20:.0f} MiB")
        where = self.remote_identity.label if self.target is not None else f"{self.device} ({self.profile.title})"
        msg = (f"{case.id} does not fit {where}{': ' + what if what else ''}: the file alone "
               f"({art.size_bytes / 2**20:.0f} MiB) exceeds the memory budget ({budget / 2**20:.0f} MiB); not loaded")
        expected = self.expected.memory_miss(self.device, case)
        (pytest.xfail if expected else pytest.fail)(msg)

    def remote_throughput(self, case: suite.Case, extra_info: dict):
        """Latency timed on the remote by the worker there (warm-up, then the scale's rounds, on real tweets)."""
        from edgemodels import measure, targets

        art = self.artifact(case)
        self.too_big_for_device(case, art)
        res = self.target.run(art.tflite, runtime=self.remote_runtime, threads=self.threads,
                              feeds=self.feeds(case, suite.THROUGHPUT_SAMPLE), outputs=False,
                              timing=targets.Timing(rounds=self.scale.throughput_rounds, warmup=1))
        if not res.loads:
            self._remote_refused(case, res, "throughput")
        ident, row = res.identity, self.row(case)
        if ident.emulated:
            row.notes.append(f"throughput: {ident.label}: no device timing")
            pytest.skip(f"{case.id} loads on {ident.label}; an emulator's timing is no device figure")
        stats = res.stats()
        row.inferences_per_s, row.method, row.threads = stats.inferences_per_s, "measured", res.threads
        row.p50_ms, row.p90_ms, row.p99_ms = (1e3 * v for v in (stats.p50_s, stats.p90_s, stats.p99_s))
        row.runtime, row.runtime_version = ident.runtime, ident.runtime_version
        row.notes.append(f"throughput {ident.label}")
        extra_info.update(device=self.device, method="measured", basis=ident.label, threads=res.threads,
                          inferences_per_s=stats.inferences_per_s, p50_ms=row.p50_ms, p90_ms=row.p90_ms,
                          p99_ms=row.p99_ms, runtime=f"{row.runtime} {row.runtime_version}", seq=case.seq_label)
        return measure.Projection(stats.inferences_per_s, "measured", None, ident.label)

    def _remote_memory(self, case: suite.Case):
        from edgemodels import measure

        art = self.artifact(case)
        self.too_big_for_device(case, art)
        res = self.target.run(art.tflite, runtime=self.remote_runtime, threads=self.threads, memory_runs=3,
                              seq_len=case.seq or art.manifest["max_length"])
        if not res.loads:
            self._remote_refused(case, res, "memory")
        ident, row = res.identity, self.row(case)
        if ident.emulated:
            row.notes.append(f"memory: {ident.label}: the emulator's RSS is no device figure")
            pytest.skip(f"{case.id} on {ident.label}: the emulator's RSS is no device figure")
        budget = self.profile.memory_budget_bytes
        peak = int(res.peak_rss_bytes or 0)
        row.notes.append(f"memory {ident.label}")
        return measure.MemoryResult(peak_rss_bytes=peak, budget_bytes=budget, fits=res.error is None and peak <= budget,
                                    returncode=0, error=res.error, runtime=ident.runtime or "",
                                    runtime_version=ident.runtime_version or "")

    def memory(self, case: suite.Case):
        from edgemodels import measure

        if self.target is not None:
            res = self._remote_memory(case)
        else:

            self.skip_if_device_refuses(case)
            art = self.artifact(case)
            self.too_big_for_device(case, art, "memory")
            rt, _ = self.host_runtime
            res = measure.peak_rss_of_run(art.tflite, runtime=rt, threads=self.threads,
                                          seq_len=case.seq or art.manifest["max_length"],
                                          budget_bytes=self.profile.memory_budget_bytes)
            # A child that fails prints no result line, so res.runtime_version is empty: the version is the
            # installed one's (it was "", so drq on a Pi 3's tflite-runtime 2.14 hard-failed, issue 9).
            version = res.runtime_version or _installed_version(rt)
            why = _reason(self.expected.refusal(res.runtime or rt, version, case.quant, case.model))
            if res.error and ("ModelLoadError" in res.error
                              or (why and "exceeded budget" not in res.error)):  # or failed at invoke
                self.row(case).notes.append(f"memory: {rt} {version} cannot load it")
                (pytest.xfail if why else pytest.fail)(
                    f"{case.id}: {rt} {version} refuses it{f' (expected: {why})' if why else ''}: {res.error}")
        row = self.row(case)
        row.peak_rss_bytes, row.memory_budget_bytes, row.fits = res.peak_rss_bytes, res.budget_bytes, res.fits
        if not self.placement.on_device:
            row.notes.append(f"memory: host RSS ({res.runtime} {res.runtime_version}) vs {self.device} budget")
        return res

    def device_run(self, case: suite.Case) -> "DeviceRun":
        """The artifact on the device's own runtime: here if on the device, else under QEMU (or, from an
        export off the device, this host's runtime: an export is for the device, not for emulation)."""
        from edgemodels import emulation, runtime

        if case in self._device_runs:
            return self._device_runs[case]

        art = self.artifact(case)
        target = emulation.TARGETS.get(self.device)
        remote = self.target is not None
        emulate = not self.placement.on_device and target is not None and not remote and self.exported is None
        infer = (case.compact or self.ready_file(case) is not None) and art.size_bytes <= suite.EMULATE_INFERENCE_MAX_BYTES
        if self.measured_on_device:
            self.too_big_for_device(case, art, "compat")
            # a real device runs every size that fits; with an export there is an x86 reference for each
            infer = infer or remote or self.exported is not None
        feeds = self.feeds(case, self.compat_examples)
        if remote:
            res = self.target.run(art.tflite, runtime=self.remote_runtime, threads=self.threads,
                                  feeds=feeds if infer else feeds[:0])
            ident = res.identity
            result = DeviceRun(res.loads, res.error, res.outputs, ident.label,
                               f"{ident.runtime or self.remote_runtime} {ident.runtime_version} ({ident.arch})")
        elif emulate:
            ok, why = emulation.availability()
            if not ok:
                pytest.skip(f"ARM emulation unavailable: {why}")
            used = feeds if infer else feeds[:0]
            key = cache.Key("emulated", f"{self.device}-{case.id}", {
                "artifact": art.manifest["key"]["digest"], "target": asdict(target),
                "feeds": feeds_digest(used), "code": code_identity(*EMULATION_CODE),
                "threads": EMULATED_THREADS})

            def compute() -> dict:
                rootfs = emulation.ensure_rootfs(target, self.cache.root)
                run = emulation.run_model(target, rootfs, art.tflite, used, num_threads=EMULATED_THREADS)
                return {"loads": run.loads, "error": run.error, "runtime_version": run.runtime_version,
                        "arch": run.arch, "outputs": None if run.outputs is None else run.outputs.tolist()}

            run, _ = self.cache.memo_json(key, compute)
            outputs = None if run["outputs"] is None else np.asarray(run["outputs"], dtype=np.float32)
            result = DeviceRun(run["loads"], run["error"], outputs, target.method,
                               f"{target.runtime} {run['runtime_version']} ({run['arch']})")
        else:
            rt = self.host_runtime[0]  # the device's own runtime where installed (on the device: its runtime)
            where = self._here_label()
            self.crash_guard(case, rt)
            try:
                m = runtime.load(art.tflite, runtime=rt, num_threads=self.threads)
            except runtime.ModelLoadError as exc:
                result = DeviceRun(False, str(exc), None, where, rt)
            else:
                try:
                    outs = np.concatenate([m.run(f) for f in feeds]) if infer else None
                    result = DeviceRun(True, None, outs, where, f"{m.runtime_name} {m.runtime_version}")
                except RuntimeError as exc:  # loaded, failed at invoke: a refusal (below)
                    result = DeviceRun(True, str(exc), None, where, f"{m.runtime_name} {m.runtime_version}")
        if result.loads and infer and feeds and result.outputs is None and result.error:
            # Loaded, then failed on a feed (tflite-runtime 2.14 on int4: "Type not currently supported" at the
            # first invoke): the runtime cannot run the file, which is what a refusal is to test_compat.
            result.loads = False
        row = self.row(case)
        row.arm_loads, row.arm_error, row.arm_method = result.loads, result.error, result.method
        if result.outputs is not None:
            # What the device's outputs are compared with: the same file on x86 (only the kernels differ, so ARM
            # drift is not hidden by quantization): this host's run under emulation or --remote, the exported
            # reference with --artifacts. On the device with neither there is no other side: nothing is compared
            # (it used to compare the device with itself and call that side "x86").
            host, reference = self._reference_outputs(case, feeds, emulate or remote)
            y = self._sample_labels(case, self.compat_examples)
            row.arm_accuracy = float(np.mean(result.outputs.argmax(1) == y))
            if host is not None:
                result.max_abs_diff = float(np.max(np.abs(result.outputs - host)))
                result.x86_max_abs = float(np.max(np.abs(host)))
                result.reference = reference
                row.arm_max_abs_diff, row.arm_reference = result.max_abs_diff, reference
                row.x86_accuracy_sample = float(np.mean(host.argmax(1) == y))
            elif self.exported is not None:
                row.notes.append(f"compat: outputs from this host, not the {self.device}: the export's x86 "
                                 "reference is not compared on a host of its own arch")
        elif result.loads and not infer:
            row.notes.append("emulated: load only (inference too slow under emulation for this size)" if emulate
                             else "compat: load only (no inference run for this model)")
        self._device_runs[case] = result
        return result

    def _here_label(self) -> str:
        """The side that ran here: 'measured on <this machine>' on the device, else the host, said to be so."""
        import platform
        import socket

        if self.placement.on_device:
            return f"measured here ({socket.gethostname()}, {platform.machine()})"
        return f"host ({socket.gethostname()}, {platform.machine()}; not the {self.device})"

    def _sample_labels(self, case: suite.Case, n: int) -> np.ndarray:
        if self.exported is not None:
            return self.exported.labels(case.id, n)
        return self.eval_set.sample(min(n, len(self.eval_set.examples))).label_ids()

    def _reference_outputs(self, case: suite.Case, feeds: list[dict], x86_here: bool) -> tuple[Any, str | None]:
        """(x86 outputs on the same feeds, what they are) or (None, None) when there is no other side.

        An export's reference is not compared on a host of its own arch off the device (an export opened on the x86
        workstation with --device=pi3): the outputs are x86 too, and x86 against x86 could not show ARM drift. An ARM
        board the device table does not name (a Pi 400, a CM4) still compares."""
        if self.exported is not None:
            import platform

            if not self.placement.on_device and platform.machine() == self.exported.index["built_on"]["arch"]:
                return None, None
            return self.exported.reference_outputs(case.id), self.exported.reference_label
        if x86_here:
            import platform

            rt = self.host_runtime[0]
            return self._host_outputs(case, feeds), f"x86 on this host ({platform.machine()}, {rt} {_installed_version(rt)})"
        return None, None

    def _host_outputs(self, case: suite.Case, feeds: list[dict]) -> np.ndarray:
        from edgemodels import runtime

        m = runtime.load(self.artifact(case).tflite, runtime=self.host_runtime[0], num_threads=self.threads)
        return np.concatenate([m.run(f) for f in feeds])

    def cases(self) -> tuple[suite.Case, ...]:
        keep_models = _csv(self.config.getoption("--models"))
        keep_modes = _csv(self.config.getoption("--modes"))
        exported = set(self.exported.case_ids()) if self.exported is not None else None  # what DIR holds
        return tuple(c for c in self.scale.cases
                     if (not keep_models or c.model in keep_models) and (not keep_modes or c.quant in keep_modes)
                     and (exported is None or c.id in exported)) + tuple(
            c for c in self.source_cases(keep_models, keep_modes) if exported is None or c.id in exported)

    def source_cases(self, keep_models: set[str], keep_modes: set[str]) -> tuple[suite.Case, ...]:
        """The user's models (--models dir:/hf:/a conftest.py name): each asked mode (default fp32 and drq) at
        the scale's fixed length; Case.model holds the source's spec, which BuildRequest resolves."""
        specs = [self.named_sources.get(m, m) for m in sorted(keep_models)
                 if (m.startswith(MODEL_SOURCE_PREFIXES) or m in self.named_sources) and m not in self.ready]
        # A ready .tflite is one case: the mode it was made in (or "as-is"), at its own input length; --modes
        # does not apply (nothing is built).
        files = tuple(suite.Case(r.source.spec, r.mode, r.seq) for r in self.ready.values())
        if not specs:
            return files
        seqs = [c.seq for c in self.scale.cases if c.seq is not None]
        seq = max(set(seqs), key=seqs.count) if seqs else 128
        modes = [m for m in suite.ALL_MODES if m in keep_modes] if keep_modes else ["fp32", "drq"]
        return tuple(suite.Case(spec, q, seq) for spec in specs for q in modes) + files

    def case(self, model: str, quant: str, seq: int | None = 128) -> suite.Case | None:
        """A case of this run's matrix (None when the scale or the filters leave it out)."""
        c = suite.Case(model, quant, seq)
        return c if c in self.cases() else None


ACCURACY_CODE = ("evaluate", "runtime", "convert", "models", "data", "quiet", "progress")
"""Modules whose code decides an accuracy figure: interpreter binding, feeds, tokenizing, the evaluation split."""

EMULATED_THREADS = 1
"""Interpreter threads under QEMU. Measured 2026-11-25 (AMD EPYC host, qemu-aarch64 cortex-a72, ai-edge-litert
2.3.0 aarch64, MiniLM-L6 int8, the same 4 tweets): at 2 threads the logits changed from run to run (max
|diff| vs x86 up to 1.16), at 1 thread they equalled x86's exactly, run after run. Whether a real Pi 4 shows
the same is unknown (measure it with --remote); a numerics check must be reproducible, and emulation is never
timed, so it runs one thread."""

EMULATION_CODE = ("emulation", "arm_worker", "runtime", "quiet")
"""Modules whose code decides an emulated run's verdict and outputs (the feeds are keyed by their content)."""


@lru_cache(maxsize=None)
def code_identity(*modules: str) -> dict[str, str]:
    """The package version and a digest of the named edgemodels modules' source.

    Part of every memoised result's key, so a result computed by other code is never served (a warm cache
    kept a mutated evaluate() reporting the old accuracy). Not in artifact keys: retraining costs minutes.
    """
    import edgemodels

    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(f"{name}\0".encode())
        h.update(_module_source(name))
    return {"edgemodels": edgemodels.__version__, "source": h.hexdigest()}


def _module_source(name: str) -> bytes:
    """The source file of edgemodels.<name>, read without importing it (arm_worker runs on ARM)."""
    import importlib.util

    spec = importlib.util.find_spec(f"edgemodels.{name}")
    if spec is None or spec.origin is None:
        raise ValueError(f"code_identity: no module edgemodels.{name}")
    return Path(spec.origin).read_bytes()


def feeds_digest(feeds: list[dict]) -> str:
    """sha256 over the feeds' names, dtypes, shapes and bytes: what the interpreter is given, exactly."""
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}\0".encode())
            h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class DeviceRun:
    loads: bool
    error: str | None
    outputs: Any  # np.ndarray [n, labels] or None
    method: str  # "emulated ARM (qemu, cortex-a72)" | "measured" | "host"
    runtime: str
    max_abs_diff: float | None = None  # vs the same file's x86 outputs (None: nothing else to compare with)
    x86_max_abs: float | None = None  # the largest |x86 logit|: the scale suite.arm_diff_limit allows for
    reference: str | None = None  # what the outputs were compared with, e.g. "x86 reference exported from ws"


def _runtimes():
    from edgemodels import runtime

    return runtime.available()


def _installed_version(rt: str) -> str:
    """The version of runtime `rt` installed here ("unknown" when it is not)."""
    return next((r.version for r in _runtimes() if r.name == rt), "unknown")


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if value else set()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        s = metafunc.config.stash.get(SESSION_KEY, None)  # None: bad options, reported after collection
        cases = s.cases() if s is not None else ()
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
    lines = [f"edgemodels: device={s.device} ({p.profile.title}); figures {p.method}"
             f"{'' if p.on_device else ' (off the device: throughput projected, memory and runtime emulated)'}; "
             f"scale={s.scale.name}; data={s.data_spec}; "
             + (f"artifacts={s.exported.root} (exported on {s.exported.built_on}, {s.exported.index['created']})"
                if s.exported is not None else f"cache={s.cache.root}")]
    if not p.on_device:  # see pytest_benchmark_group_stats
        shown = "labelled HOST" if config.option.verbose > 0 else "hidden (-v shows it)"
        lines.append(f"edgemodels: pytest-benchmark's table times this host, not {s.device}: {shown}")
    return lines


def _reason(record) -> str | None:
    """An expected outcome's quoted reason, or None where none is expected."""
    return record.reason if record is not None else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Bench reasons on one line: a runtime's multi-line error ("...\nRegistration failed.") broke `-ra`."""
    rep = yield
    if "bench" not in getattr(item, "fixturenames", ()):
        return rep
    if getattr(rep, "wasxfail", None):
        exc = call.excinfo.value if call.excinfo is not None else None
        if isinstance(exc, AssertionError):  # a collection-time record (_mark_expected): quote this run's figures
            rep.wasxfail = f"{rep.wasxfail}; this run: {str(exc).splitlines()[0] if str(exc) else 'assert failed'}"
        rep.wasxfail = _one_line(rep.wasxfail)
    if rep.skipped and isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        path, lineno, reason = rep.longrepr
        rep.longrepr = (path, lineno, _one_line(reason))
    crash = getattr(rep.longrepr, "reprcrash", None)
    if rep.failed and crash is not None and isinstance(getattr(crash, "message", None), str):
        crash.message = _one_line(crash.message)  # the summary line only; the traceback keeps the original
    return rep


def _host_timing_label(s: BenchSession) -> str:
    import platform

    return (f"HOST timings ({platform.machine() or 'unknown arch'}, {s.threads} thread(s)), NOT {s.device}'s: "
            f"{s.placement.method} {s.device} figures in the edgemodels report")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks, group_by):
    """Off the device pytest-benchmark times this host: hide its table (like --benchmark-quiet), or label it (-v).

    Hidden, not dropped: --benchmark-compare-fail still gates, and --benchmark-json/--benchmark-save keep the
    stats (labelled by pytest_benchmark_update_json).
    """
    s = config.stash.get(SESSION_KEY, None)
    if s is None or s.placement.on_device:
        return None  # pytest-benchmark's own grouping: its figures are this device's
    from pytest_benchmark.plugin import pytest_benchmark_group_stats as default_groups

    groups = default_groups(config=config, benchmarks=benchmarks, group_by=group_by)
    bs = getattr(config, "_benchmarksession", None)
    if config.option.verbose < 1 and bs is not None:
        bs.quiet = True  # what --benchmark-quiet sets: display() skips the table but still checks regressions
    label = _host_timing_label(s)
    return [(f"{label}; {name}" if name else label, group) for name, group in groups]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """Say in pytest-benchmark's JSON whose timings its stats are; device figures are in each extra_info."""
    s = config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    p = s.placement
    output_json["edgemodels"] = {
        "device": s.device, "method": p.method,
        "stats_are": f"{s.device} timings (measured)" if p.on_device else _host_timing_label(s),
        "device_figures": "benchmarks[].extra_info: inferences_per_s, p50_ms, p90_ms, p99_ms, method, basis",
    }


def _session_used(s: BenchSession) -> bool:
    return "report" in s.__dict__ and bool(s.report.rows())


def _baseline_dir(config: pytest.Config, s: BenchSession) -> Path:
    """Baselines are per data kind and scale; the default is the rootdir's, never the working directory's."""
    named = config.getoption("--baseline-dir")
    root = Path(named) if named is not None else Path(config.rootpath) / BASELINE_DIR
    return root / s.data_kind / s.scale.name


def _gated_metrics(config: pytest.Config) -> tuple[str, ...]:
    return report.check_gate_metrics(sorted(_csv(config.getoption("--baseline-metrics"))))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse, before hours of building, a baseline gate that would compare against nothing."""
    config = session.config
    s = config.stash.get(SESSION_KEY, None)
    if s is not None and config.getoption("--remote") and not config.option.collectonly:
        s.target  # reach the remote and check it against --device now, not after building every artifact
    compare, save = config.getoption("--baseline-compare"), config.getoption("--baseline-save")
    if s is None or not (compare or save):
        return
    if getattr(config.option, "dist", "no") != "no" or hasattr(config, "workerinput"):
        raise pytest.UsageError(
            "--baseline-compare/--baseline-save cannot run under pytest-xdist (-n/--dist): each worker holds "
            "only its own tests' report rows and the controller none, so the gate would see nothing; run "
            "the bench without -n")
    if compare:
        try:
            _gated_metrics(config)
            report.require_baseline(_baseline_dir(config, s), s.device)
        except (ValueError, report.BaselineMissing) as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session.config.stash.get(SESSION_KEY, None)
    if s is None or hasattr(session.config, "workerinput"):
        return
    compare = session.config.getoption("--baseline-compare")
    if not _session_used(s):
        if compare and session.exitstatus == 0 and not session.config.option.collectonly:  # passed, no row
            s.baseline_error = "--baseline-compare: this run measured nothing, so nothing was compared"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    from edgemodels import lab

    locked = lab.release_for_report(s.__dict__.get("target"))  # timing is over: free the place, say when
    if locked is not None:
        s.report.machine["lab"] = locked
    speed = claims.speed(s.report.rows(), s.device, s.profile.target_inferences_per_s)
    if speed is not None:
        s.report.add_claim(speed)
    out = session.config.getoption("--report-dir")
    s.report_paths = s.report.write(out)
    # Baselines are per data kind and scale: accuracy on RepLab says nothing about the built-in set.
    base_dir = _baseline_dir(session.config, s)
    mid = report.machine_id()
    s.regressions, s.baseline_notes = [], []
    if compare:
        try:
            s.regressions, s.baseline_notes = report.compare_baseline(
                s.report, base_dir, mid, metrics=_gated_metrics(session.config))
        except (ValueError, report.BaselineMissing) as exc:  # e.g. deleted or corrupted during the run
            s.baseline_error = str(exc)
        if (s.regressions or getattr(s, "baseline_error", None)) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.getoption("--baseline-save"):
        s.baseline_notes.append(f"baseline saved: {report.save_baseline(s.report, base_dir, mid)}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = config.stash.get(SESSION_KEY, None)
    if s is None:
        return
    tr = terminalreporter
    error = getattr(s, "baseline_error", None)
    if not _session_used(s):
        if error:
            tr.write_line(f"baseline gate FAILED: {error}", red=True, bold=True)
        return
    tr.section(f"edgemodels report: {s.device} ({s.placement.method}; scale {s.scale.name}; data {s.data_spec})")
    tr.write_line(s.report.table())
    if s.report.claims:
        tr.write_line("")
        tr.write_line("Paper claims")
        tr.write_line(report.claims_table(s.report.claims))
    if any(r.size_bytes for r in s.report.rows()):
        tr.write_line("")
        tr.write_line("Pareto: bytes against accuracy and speed")
        tr.write_line(report.pareto_table(s.report.rows()))
    for p in getattr(s, "report_paths", []):
        tr.write_line(f"wrote {p}")
    for note in getattr(s, "baseline_notes", []):
        tr.write_line(f"baseline: {note}")
    if getattr(s, "regressions", None):
        tr.write_line(report.format_regressions(s.regressions), red=True, bold=True)
    if error:
        tr.write_line(f"baseline gate FAILED: {error}", red=True, bold=True)
