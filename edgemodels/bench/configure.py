"""From pytest's options to a BenchSession, with every check that can fail made before collection.

Why up front: a bad option used to surface as the same failure in 13-26 tests after minutes of building. Values
are checked by their converters at parse time (edgemodels/options.py); what needs the world (the data file has rows,
the cache and report directories are writable, a model source is usable, the export is this run's) is checked here,
once, as a usage error naming the option and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import pytest

from edgemodels import devices
from edgemodels.bench.artifacts import SOURCE_PREFIXES, BuiltArtifacts, ExportedArtifacts
from edgemodels.bench.session import BenchSession
from edgemodels.errors import EdgeModelsError
from edgemodels.study import expected as expected_mod
from edgemodels.study import matrix


def hook_additions(config: pytest.Config):
    """(device profiles, model sources by name, expected outcomes) that conftest.py files added through the hooks."""
    from edgemodels.build import sources
    from edgemodels.build.models import REGISTRY

    added = expected_mod.check_added(
        r for answer in config.hook.pytest_edgemodels_add_expected_outcomes() for r in (answer or ()))
    extra_devices = devices.merge_extra(config.hook.pytest_edgemodels_add_devices())
    named: dict[str, str] = {}
    for answer in config.hook.pytest_edgemodels_add_model_sources():
        for name, spec in dict(answer or {}).items():
            if name in named or name in REGISTRY or sources.is_source_spec(name):
                raise pytest.UsageError(f"pytest_edgemodels_add_model_sources: model name {name!r} is given twice, "
                                        "is a registered model, or looks like a spec (dir:/hf:/tflite:); give each "
                                        "source its own plain name")
            named[name] = str(spec)
    outcomes = expected_mod.Outcomes(added, aliases=tuple((spec, name) for name, spec in named.items()))
    return extra_devices, named, outcomes


def check_filters(scale: matrix.Scale, models: tuple[str, ...] | None, modes: tuple[str, ...] | None, named=None, *,
                  tokenizer: str | None = None, labels: str | None = None) -> dict:
    """A misspelt --models/--modes name is a usage error listing the valid ones. Model sources (dir:/hf:/tflite:, or
    a conftest.py's names) are parsed and checked here. Returns the tflite: sources by the --models entry naming
    them (--tokenizer/--labels apply to them)."""
    from edgemodels.build import sources as sources_mod

    asked_models = set(models or ())
    specs = {m for m in asked_models if m.startswith(SOURCE_PREFIXES) or m in (named or {})}
    asked_models -= specs
    ready = {}
    for m in sorted(specs):
        try:
            src = sources_mod.check(m, named=named, tokenizer=tokenizer, labels=labels)
        except sources_mod.SourceError as exc:
            raise pytest.UsageError(f"--models: {exc}") from None
        if src.kind == "tflite":
            ready[m] = src
    if (tokenizer or labels) and not ready:
        raise pytest.UsageError("--tokenizer/--labels describe a ready .tflite: use them with --models tflite:PATH")
    asked_modes = set(modes or ())
    for opt, asked, field in (("--models", asked_models, "model"), ("--modes", asked_modes, "quant")):
        valid = list(dict.fromkeys(getattr(c, field) for c in scale.cases))
        bad = [x for x in sorted(asked) if x not in valid]
        if not bad:
            continue
        scales_with = {x: [n for n, sc in matrix.SUITE_SCALES.items() if any(getattr(c, field) == x for c in sc.cases)]
                       for x in bad}
        elsewhere = [f"{x!r} is in --scale={'/'.join(names)}" for x, names in scales_with.items() if names]
        raise pytest.UsageError(
            f"{opt}: {', '.join(map(repr, bad))} not in the {scale.name} scale's matrix; valid: {', '.join(valid)}"
            f"{' (' + '; '.join(elsewhere) + ')' if elsewhere else ''}")
    if (asked_models or asked_modes) and not specs and not any(
            (not asked_models or c.model in asked_models) and (not asked_modes or c.quant in asked_modes)
            for c in scale.cases):
        raise pytest.UsageError(
            f"--models/--modes: no case of the {scale.name} scale is {'/'.join(sorted(asked_models)) or 'any model'} "
            f"in {'/'.join(sorted(asked_modes)) or 'any mode'}; its cases: {', '.join(c.id for c in scale.cases)}")
    return ready


def _open_export(opt, device: str):
    """The --artifacts export, checked against --device/--scale/--data; None without the option."""
    root = opt("--artifacts")
    if root is None:
        return None
    from edgemodels.build import export

    if opt("--remote"):
        raise pytest.UsageError("--artifacts runs on this machine from an export; --remote drives a device from "
                                "the workstation's cache: pass one of them")
    exported = export.Export.open(root, device=device, scale=opt("--scale"))
    asked = opt("--data")
    if asked and asked != exported.data_spec:
        raise pytest.UsageError(f"--data {asked}: --artifacts {root} was exported from --data {exported.data_spec}; "
                                "drop --data (the export carries its evaluation feeds) or export that data set")
    if opt("--models") and any(m.startswith(SOURCE_PREFIXES) for m in opt("--models")):
        raise pytest.UsageError(f"--models {','.join(opt('--models'))}: --artifacts runs only what the export holds; "
                                "bench a ready .tflite without --artifacts (copy it and its tokenizer/ to the device)")
    return exported


def _check_dirs(opt, *, built: bool) -> Path | None:
    """The report directory and (for a run that builds) the cache, usable before anything runs."""
    from edgemodels.report import rows
    from edgemodels.store import entries

    rows.check_report_dir(opt("--report-dir"))
    if not built:
        return None
    root = entries.check_root(opt("--edge-cache") or entries.default_root())
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"--edge-cache {root}: not writable (the cache holds every built artifact); name a "
                                "writable directory with --edge-cache DIR or $EDGEMODELS_CACHE")
    return root


def session(config: pytest.Config) -> BenchSession:
    """Everything a bench run needs, checked; raises pytest.UsageError (or an EdgeModelsError) naming the fix."""
    opt = config.getoption
    device = opt("--device") or devices.detect() or "desktop"
    try:
        extra_devices, named_sources, outcomes = hook_additions(config)
    except (expected_mod.ExpectedError, devices.DeviceProfileError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if device not in devices.NAMES and device not in extra_devices:
        raise pytest.UsageError(f"--device={device!r} is not a known device; valid: "
                                f"{', '.join((*devices.NAMES, *extra_devices))}")
    scale = matrix.get_scale(opt("--scale"))
    exported = _open_export(opt, device)
    cache_root = _check_dirs(opt, built=exported is None)
    os.environ.setdefault("EDGEMODELS_QUIET", "1")  # runtimes' start-up lines off; EDGEMODELS_QUIET=0 shows them
    if exported is not None:
        source = ExportedArtifacts(exported)
    else:
        from edgemodels.build import data, sources
        from edgemodels.store.cache import ArtifactCache

        spec = opt("--data") or data.default_spec()
        try:
            data.check_loadable(spec)  # the file's rows, each split non-empty: not 26 failures later
        except data.DataError as exc:
            raise pytest.UsageError(f"--data: {exc}") from None
        ready = check_filters(scale, opt("--models"), opt("--modes"), named_sources, tokenizer=opt("--tokenizer"),
                              labels=opt("--labels"))
        ready = {m: sources.open_tflite(src, runtime_name=opt("--runtime")) for m, src in ready.items()}
        source = BuiltArtifacts(ArtifactCache(cache_root), scale, spec, opt("--max-examples"), MappingProxyType(ready),
                                MappingProxyType(named_sources))
    if opt("--remote"):
        from edgemodels.lab import places

        places.check_remote(opt("--remote"), identity=opt("--remote-identity"), python=opt("--remote-python"))

    def make_side():
        return _side(config, device, extra_devices, cache_root, emulate=exported is None)

    def make_report(s: BenchSession):
        from edgemodels.report.machine import machine_info
        from edgemodels.report.rows import Report

        info = machine_info()
        info.update(scale=scale.name, data=s.data_spec, placement=s.side.method, device_title=s.profile.title)
        info.update(s.side.report_info())
        if s.source.summary() is not None:
            info["artifacts"] = s.source.summary()
        return Report(device, info, s.profile.target_inferences_per_s)

    return BenchSession(device=device, scale=scale, source=source, make_side=make_side, expected=outcomes,
                        make_report=make_report, keep_models=set(opt("--models") or ()),
                        keep_modes=set(opt("--modes") or ()), extra_devices=extra_devices)


def _side(config: pytest.Config, device: str, extra, cache_root: Path, *, emulate: bool):
    """The device side: a --remote device (reached and checked now), else this host."""
    from edgemodels.bench.device import HostSide, RemoteSide, SideError

    opt = config.getoption
    try:
        if opt("--remote"):
            from edgemodels.lab import places

            target = places.remote_target(config)  # labgrid://: the place stays locked until the session ends
            return RemoteSide(target, device, extra=extra, threads=opt("--threads"), runtime=opt("--runtime"),
                              install_hint=f"{opt('--remote-python') or 'python3'} -m pip install '.[device]' in a "
                                           "copy of the edgemodels repository (it is not on PyPI)")
        return HostSide(devices.place(device, extra=extra), threads=opt("--threads"), runtime=opt("--runtime"),
                        cache_root=cache_root, emulate=emulate)
    except (SideError, EdgeModelsError, ValueError) as exc:
        pytest.exit(f"{'--remote: ' if opt('--remote') else ''}{exc}", returncode=2)
