"""`python -m edgemodels`: data stats, build, evaluate, measure, export, claims, cache, info, history, compare.

Every command prints a human summary, or one JSON object with --json (the contract scripts rely on).
Errors in the user's input exit with status 2 and a message naming what to fix; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from edgemodels import __version__
from edgemodels.errors import EdgeModelsError


def _quiet_tf(args, *, start_tf: bool = True) -> None:
    """Keep TensorFlow's, absl's and transformers' start-up lines off the terminal unless -v/--verbose.

    TF_CPP_MIN_LOG_LEVEL only reaches lines logged after absl::InitializeLog; the oneDNN and CUDA probe
    lines come before it, straight to fd 2, at import and at the first device query. So TensorFlow is
    started here with fd 2 set aside (edgemodels.quiet), before the command needs it.
    """
    from edgemodels import quiet

    if getattr(args, "verbose", False) or not quiet.quiet():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not start_tf:
        return
    with quiet.native_stderr():
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) logs here, not at import
        except ImportError:
            return  # the command itself says how to install it
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "Some layers ... were not used", deprecation notices


def _set_quiet(args) -> None:
    """Quiet by default (an exported EDGEMODELS_QUIET wins); -v shows everything, in worker processes too."""
    from edgemodels import quiet

    if args.verbose:
        quiet.set_quiet(False)
    elif quiet.ENV not in os.environ:
        quiet.set_quiet(True)


def _emit(args, obj: dict[str, Any], human: str | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str), file=getattr(args, "emit_to", sys.stdout))
    else:
        print(human if human is not None else json.dumps(obj, indent=2, default=str))


def _seq(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seq must be a positive integer or 'dynamic', not {value!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError("--seq must be at least 2")
    return n


def _number(value: str, kind, what: str, ok) -> Any:
    try:
        n = kind(value)
    except ValueError:
        n = None
    if n is None or n != n or not ok(n):  # n != n: NaN
        raise argparse.ArgumentTypeError(f"must be {what}, not {value!r}")
    return n


def _unit_float(value: str) -> float:
    return _number(value, float, "a number from 0 to 1", lambda n: 0 <= n <= 1)


def _non_negative_int(value: str) -> int:
    return _number(value, int, "an integer >= 0", lambda n: n >= 0)


def _positive_float(value: str) -> float:
    return _number(value, float, "a positive number", lambda n: 0 < n < float("inf"))


def _fraction(value: str) -> float:
    return _number(value, float, "a number strictly between 0 and 1", lambda n: 0 < n < 1)


def _seq_length(value: str) -> int:
    return _number(value, int, "an integer >= 2", lambda n: n >= 2)


def max_positions(model: str) -> int | None:
    """How many token positions `model` can embed: the most --seq/--max-length may ask for (None: not known
    before its config is fetched, e.g. an hf: source). 512 is MobileBertConfig's default; RoBERTa-style
    positions (MPNet) start after padding_idx (1), hence 2 fewer."""
    from edgemodels.build import sources

    return sources.max_positions(sources.parse(model))


class OptionError(EdgeModelsError):
    """Options that parse but cannot work together (e.g. --seq beyond the model's positions)."""


def check_options(args) -> None:
    """Checks argparse cannot make alone: against the model's positions and the data spec (parse time)."""
    from edgemodels.build import data

    if getattr(args, "data", None) is not None and args.command in ("build", "evaluate", "data", "export"):
        data.parse_spec(args.data)  # DataError naming the spec: even where the model would never read it
    if args.command in ("build", "export"):  # an unusable file (no rows, one class) stops here, before TensorFlow
        data.check_loadable(args.data, seed=getattr(args, "seed", 0), val_fraction=getattr(args, "val_fraction", 0.1),
                            group_split=getattr(args, "group_split", False))
    if args.command == "build":
        from edgemodels.build import sources

        sources.check(args.model)  # a dir: source's config and weights (a truncated tf_model.h5), before TensorFlow
        limit = max_positions(args.model)  # also parses --model: a bad spec is a one-line error here
        for flag, value in (("--seq", args.seq), ("--max-length", args.max_length)):
            if limit is not None and value is not None and value > limit:
                raise OptionError(f"{flag} {value}: {args.model} has {limit} token positions; use {flag} {limit} "
                                  "or less" + (" (or --seq dynamic)" if flag == "--seq" else ""))
        from edgemodels.build.pipeline import teacher_name

        if (args.kd_temperature is not None or args.kd_alpha is not None) and teacher_name(args.model) is None:
            from edgemodels.build.models import REGISTRY

            distilled = ", ".join(n for n, r in REGISTRY.items() if r.teacher)
            raise OptionError(f"--kd-temperature/--kd-alpha: {args.model} is not distilled (it has no teacher); "
                              f"they apply to a distilled model: {distilled}")


def cmd_data_stats(args) -> int:
    from edgemodels.build import data

    ds = data.load(args.data, args.split, seed=args.seed, val_fraction=args.val_fraction)
    spec = data.parse_spec(args.data)
    dups = data.cross_split_duplicates(spec, seed=args.seed, val_fraction=args.val_fraction)
    out = {"data": str(spec), "split": args.split, "examples": len(ds.examples),
           "labels": ds.label_counts(), "skipped": dict(ds.skipped), "fingerprint": ds.fingerprint,
           "majority_accuracy": ds.majority_accuracy(), "label_mapping": spec.label_mapping,
           "label_rule": spec.label_rule, "cross_split_duplicates": dups}
    human = "\n".join([
        f"{out['data']} [{args.split}]: {out['examples']} examples",
        "labels:  " + ", ".join(f"{k} {v}" for k, v in out["labels"].items()),
        f"label mapping: {spec.label_rule}",
        "skipped: " + (", ".join(f"{k} {v}" for k, v in out["skipped"].items()) or "none"),
        "cross-split duplicates (exact text also in training; dropped from the evaluation split): "
        + ", ".join(f"{k} {v}" for k, v in dups.items()),
        f"fingerprint: {ds.fingerprint}",
    ])
    _emit(args, out, human)
    return 0


def cmd_build(args) -> int:
    _quiet_tf(args)
    from dataclasses import replace

    from edgemodels.build import pipeline, train
    from edgemodels.store import cache
    from edgemodels.study import matrix as suite

    # smoke: the smoke bench's budget, and a random init (tiny-bert) trained from scratch, as that bench does
    cfg = suite.get_scale("smoke").train_config(args.model) if args.scale == "smoke" else train.scale(args.scale)
    overrides = {k: v for k, v in dict(epochs=args.epochs, max_examples=args.max_examples,
                                       max_length=args.max_length, learning_rate=args.lr,
                                       class_weights=args.class_weights or None, seed=args.seed,
                                       frozen_layers=args.freeze_layers).items()
                 if v is not None}
    kd = {k: v for k, v in dict(temperature=args.kd_temperature, alpha=args.kd_alpha).items() if v is not None}
    given = [flag for flag, value in (
        ("--epochs", args.epochs), ("--max-examples", args.max_examples), ("--lr", args.lr),
        ("--class-weights", args.class_weights or None), ("--freeze-layers", args.freeze_layers),
        ("--group-split", args.group_split or None), ("--kd-temperature", args.kd_temperature),
        ("--kd-alpha", args.kd_alpha),
        ("--max-length", args.max_length if args.seq is not None else None),  # a dynamic model's length: used
    ) if value is not None]
    req = pipeline.BuildRequest(
        model=args.model, quant=args.quant, data=args.data, seq=args.seq, train=replace(cfg, **overrides),
        weights_dir=args.weights, group_split=args.group_split, val_fraction=args.val_fraction,
        distill=replace(train.DistillConfig(), **kd), from_scratch=args.scale == "smoke", train_options=tuple(given),
    )
    art = pipeline.build(req, cache.ArtifactCache(args.cache))
    out = art.summary()
    va = out.get("validation_accuracy")
    human = "\n".join([
        f"{art.tflite}",
        f"  {args.model} {args.quant} seq={req.seq_label}: {art.size_bytes / 1e6:.2f} MB"
        f" ({'cache hit' if art.cache_hit else 'built'})",
        f"  classes: {', '.join(art.labels)}",
        f"  pretrained: {out['pretrained']} (weights: {out.get('weights_source')})",
        "  validation accuracy (TF, during training): "
        + (f"{va:.4f} (majority class {out.get('majority_accuracy', float('nan')):.4f})" if va is not None
           else "n/a - random init, not fine-tuned"),
    ])
    _emit(args, out, human)
    return 0


def _positive_int(value: str) -> int:
    return _number(value, int, "a positive integer", lambda n: n >= 1)


def cmd_evaluate(args) -> int:
    _quiet_tf(args, start_tf=False)  # a TFLite runtime only; its own start-up line is handled in runtime.load
    from edgemodels.build import data, models, pipeline, sources
    from edgemodels.run import evaluate

    tflite = Path(args.tflite.removeprefix("tflite:"))
    if not tflite.is_file():
        raise OptionError(f"{tflite}: no such file; pass a .tflite built by `edgemodels build` (its path is in "
                          "the build's JSON as \"tflite\"), or your own with --tokenizer DIR and --labels a,b,c")
    labels = sources.given_labels(tflite, args.labels)  # --labels against the manifest's order: a conflict is an error
    if args.tokenizer:
        tok_dir, max_length = Path(args.tokenizer), args.max_length
        pad = args.pad_id if args.pad_id is not None else models.pad_id(models.load_tokenizer(tok_dir))
        if labels is None:  # never assume a foreign model's output order
            raise OptionError(f"{tflite}: no edgemodels manifest beside it names its classes; pass --labels a,b,c "
                              "in the order of the model's outputs")
    elif (tflite.parent / "manifest.json").is_file() or not (tflite.parent / pipeline.TOKENIZER_DIR).is_dir():
        mf = pipeline.manifest_for(tflite)
        tok_dir, max_length, pad = tflite.parent / pipeline.TOKENIZER_DIR, mf["max_length"], mf["pad_id"]
    else:  # a foreign .tflite with its tokenizer/ beside it: pad from the tokenizer, length from the model
        src = sources.parse(f"tflite:{tflite}", labels=args.labels)
        tok_dir, max_length = src.tokenizer, args.max_length
        pad = args.pad_id if args.pad_id is not None else models.pad_id(models.load_tokenizer(src.tokenizer))
        labels = src.labels
    ds = data.load(args.data, args.split, seed=args.seed, val_fraction=args.val_fraction)
    if args.limit and len(ds.examples) > args.limit:
        ds = ds.sample(args.limit, seed=args.seed)
    acc = evaluate.evaluate(tflite, ds, tokenizer_dir=tok_dir, max_length=max_length, pad=pad,
                            runtime_name=args.runtime, threads=args.threads, workers=args.workers,
                            quiet=args.json, labels=labels)
    out = {**acc.as_dict(), "tflite": str(tflite), "data": args.data, "split": args.split}
    human = (f"{tflite}: accuracy {acc.accuracy:.4f}, macro-F1 {acc.macro_f1:.4f} on {acc.n} "
             f"{args.split} examples (majority class {acc.majority_accuracy:.4f}); "
             f"runtime {acc.runtime} {acc.runtime_version}; {acc.tweets_per_s:.1f} tweets/s "
             f"({acc.workers} process(es) x {acc.threads} thread(s), {acc.seconds:.1f} s)")
    _emit(args, out, human)
    return 0


def cmd_cache(args) -> int:
    """ls (fast: no hashing), verify (hashes every file), clear (only our entries and leftovers; asks first)."""
    from edgemodels.store import cache

    store = cache.ArtifactCache(args.cache)
    if args.action == "clear":
        return _cache_clear(args, store)
    if args.action == "verify":
        if store.root.exists():
            store.require_cache("verify")
        rows, unhashed = [], 0
        for e in store.listing():
            if e.state == "corrupt" or (e.state == "complete" and e.manifest is not None):
                try:
                    store.verify(e.path, rehash=True)
                    rows.append({"path": str(e.path), "kind": e.kind, "intact": True, "why": ""})
                except cache.CorruptEntry as exc:
                    rows.append({"path": str(e.path), "kind": e.kind, "intact": False, "why": str(exc)})
            elif e.state == "complete":  # ARM user-lands, unpacked weights: built without a manifest of hashes
                unhashed += 1
        bad = [r for r in rows if not r["intact"]]
        human = "\n".join([f"verified {len(rows)} entries in {store.root} (sha256 of every file): "
                           f"{len(bad)} damaged (rebuilt on next use)"
                           + (f"; {unhashed} more have no file hashes (ARM user-lands, unpacked weights): "
                              "complete by their marker" if unhashed else ""),
                           *[f"  {r['why']}" for r in bad]])
        _emit(args, {"root": str(store.root), "verified": len(rows), "damaged": bad, "unhashed": unhashed}, human)
        return 1 if bad else 0
    rows = []
    for e in store.listing():
        mf = e.manifest or {}
        rows.append({"path": str(e.path), "kind": e.kind, "state": e.state, "complete": e.state == "complete",
                     "size_bytes": e.size_bytes, "model": mf.get("model"), "quant": mf.get("quant"),
                     "seq": mf.get("seq"), "created": mf.get("created"), "why": e.why})
    if args.json:
        _emit(args, {"root": str(store.root), "entries": rows})
    else:
        from tabulate import tabulate

        shown = {"complete": "yes", "corrupt": "NO (will rebuild)", "building": "build temp dir (cache clear removes it)",
                 "unrecognised": "not an entry (left alone)"}
        print(f"cache: {store.root}")
        print(tabulate([[r["kind"], r["model"] or "", r["quant"] or "", r["seq"] or "", f"{r['size_bytes'] / 1e6:.1f}",
                         shown[r["state"]], Path(r["path"]).name] for r in rows],
                       headers=["kind", "model", "quant", "seq", "MB", "complete", "entry"]))
    return 0


def _cache_clear(args, store) -> int:
    from edgemodels.store import cache

    if store.root.exists() and not store.is_cache():
        store.clear()  # raises CacheError naming the directory
    doomed = [e for e in store.listing() if e.state != "unrecognised"]
    if doomed and not args.yes and sys.stdin is not None and sys.stdin.isatty():
        mb = sum(e.size_bytes for e in doomed) / 1e6
        prompt = f"remove {len(doomed)} entries and build leftovers ({mb:.1f} MB) from {store.root}? [y/N] "
        print(prompt, end="", flush=True, file=sys.stderr)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("nothing removed", file=sys.stderr)
            return 1
    res: cache.Cleared = store.clear()
    out = {"root": str(store.root), "removed": len(res.removed), "leftovers": len(res.leftovers),
           "busy": [str(p) for p in res.busy], "kept": [str(p) for p in res.kept]}
    human = (f"removed {len(res.removed)} entries and {len(res.leftovers)} build leftovers from {store.root}"
             + (f"; {len(res.busy)} in use by a running build, left alone" if res.busy else "")
             + (f"; {len(res.kept)} directories without an entry marker left alone" if res.kept else ""))
    _emit(args, out, human)
    return 0


def cmd_info(args) -> int:
    from edgemodels.store import cache
    from edgemodels.build import data, models
    from edgemodels.run import runtime
    from edgemodels.build.pipeline import library_versions

    store = cache.ArtifactCache(args.cache)
    weights = {}
    for name in models.REGISTRY:
        try:
            w = models.resolve(name, cache_root=store.root, offline=True if args.offline else None)
            weights[name] = {"source": w.source, "pretrained": w.pretrained,
                             "path": str(w.path) if w.path else None, "why": list(w.trail)}
        except Exception as exc:  # noqa: BLE001 - info reports, never fails
            weights[name] = {"error": str(exc)}
    out = {"edgemodels": __version__, "python": sys.version.split()[0], "libraries": library_versions(),
           "runtimes": [f"{r.name} {r.version}" for r in runtime.available()],
           "cache": str(store.root), "data_default": data.default_spec(), "weights": weights,
           "hf_hub_offline": models.hub_offline()}
    human = "\n".join([
        f"edgemodels {__version__} (python {out['python']})",
        "libraries: " + ", ".join(f"{k} {v}" for k, v in out["libraries"].items()),
        "runtimes:  " + (", ".join(out["runtimes"]) or "none installed"),
        f"cache:     {out['cache']}",
        f"data:      {out['data_default']} (default)",
        "weights:",
        *[f"  {k:11s} {v.get('source', 'error')}{'' if v.get('pretrained', True) else ' (random init: ' + '; '.join(v['why']) + ')'}"
          for k, v in weights.items()],
    ])
    _emit(args, out, human)
    return 0


def cmd_claims(args) -> int:
    from edgemodels.report.claims import merge_claims
    from edgemodels.report.tables import merged_claims_table

    merged = merge_claims(args.reports)
    _emit(args, {"claims": merged}, merged_claims_table(merged))
    return 0


def cmd_measure(args) -> int:
    """Time a .tflite here or on a remote device: one fresh worker for latency, another for peak RSS."""
    from edgemodels.run import targets

    tflite = Path(args.tflite.removeprefix("tflite:"))
    if not tflite.is_file():
        raise OptionError(f"--tflite {tflite}: no such file")
    try:
        with targets.from_options(args.remote, identity=args.remote_identity, python=args.remote_python,
                                  dir=args.remote_dir, known_hosts=args.remote_known_hosts,
                                  connect_timeout_s=args.connect_timeout) as target:
            timed = target.run(tflite, runtime=args.runtime, threads=args.threads,
                               timing=targets.Timing(rounds=args.rounds, warmup=args.warmup, seq_len=args.seq_len))
            memory = None
            if timed.loads:
                memory = target.run(tflite, runtime=timed.identity.runtime, threads=timed.threads,
                                    memory_runs=3, seq_len=args.seq_len)
    except targets.TargetError as exc:
        print(f"edgemodels: error: {exc}", file=sys.stderr)
        return 2
    if not timed.loads:
        out = {"method": timed.identity.method, "loads": False, "error": timed.error,
               "where": timed.identity.as_dict()}
        _emit(args, out, f"{tflite}: does not load on {timed.identity.label}: {timed.error}")
        return 1
    out = targets.measurement(timed, memory)
    if out["inferences_per_s"] is None:
        human = f"{tflite}: {out['label']}: loads; no timing reported ({out.get('note', '')})"
    else:
        rss = out["peak_rss_bytes"]
        human = (f"{tflite}: {out['inferences_per_s']:.3g} inferences/s, p50 {out['p50_ms']:.3g} ms, "
                 f"p90 {out['p90_ms']:.3g} ms, p99 {out['p99_ms']:.3g} ms, peak RSS "
                 f"{'n/a' if rss is None else f'{rss / 2**20:.0f} MiB'} ({out['label']}; {out['runtime']} "
                 f"{out['runtime_version']}, {out['threads']} thread(s), {out['rounds']} rounds)")
    _emit(args, out, human)
    return 0


def cmd_export(args) -> int:
    """Build what `pytest bench/ --device=D --artifacts DIR` needs on the device and write it to DIR (atomic)."""
    from edgemodels.store import cache
    from edgemodels.build import export

    req = export.ExportRequest(device=args.device, scale=args.scale, data=args.data,
                               models=tuple(_csv_list(args.models)), modes=tuple(_csv_list(args.modes)),
                               max_examples=args.max_examples)
    exp = export.export(req, args.dir, cache.ArtifactCache(args.cache), log=lambda m: print(m, file=sys.stderr))
    out = {**exp.summary(), "files": len(exp.index["files"]), "kept": list(exp.kept),
           "bytes": sum(exp.root.joinpath(rel).stat().st_size for rel in exp.index["files"])}
    _emit(args, out, f"exported {len(out['cases'])} case(s) for --device={args.device} --scale={args.scale} to "
                     f"{exp.root} ({out['bytes'] / 2**20:.1f} MiB, {out['files']} files with sha256); on the device: "
                     f"pytest bench/ --device={args.device} --scale={args.scale} --artifacts {exp.root.name}")
    return 0


def _csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {n}")
    return n


def add_remote_options(p: argparse.ArgumentParser) -> None:
    """--remote and its companions (shared by measure; the pytest plugin has the same names)."""
    p.add_argument("--remote", metavar="ssh://[user@]host[:port]", help="run on this device over SSH")
    p.add_argument("--remote-identity", metavar="KEY", help="private key file for the SSH login")
    p.add_argument("--remote-python", metavar="CMD", help="python on the remote (default python3)")
    p.add_argument("--remote-dir", metavar="DIR",
                   help="content-addressed upload directory on the remote (default ~/.cache/edgemodels/remote)")
    p.add_argument("--remote-known-hosts", metavar="FILE",
                   help="known_hosts to check the remote's host key against (default ~/.ssh/known_hosts; a new "
                        "host is added, a changed key is refused)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the remote's SSH answer (default 10)")


def parser() -> argparse.ArgumentParser:
    from edgemodels.build.convert import MODES
    from edgemodels.build.models import REGISTRY
    from edgemodels.build.train import DistillConfig

    p = argparse.ArgumentParser(prog="edgemodels", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edgemodels {__version__}")
    verbose_help = ("show third-party start-up output (TensorFlow/absl/CUDA lines, the TFLite runtime's "
                    "delegate messages); also EDGEMODELS_QUIET=0")
    p.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    common = argparse.ArgumentParser(add_help=False)
    # also after the command (`edgemodels build ... -v`); SUPPRESS keeps a -v given before it
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--cache", type=Path, default=None,
                        help="artifact cache directory (default $EDGEMODELS_CACHE or the user cache dir)")
    split = argparse.ArgumentParser(add_help=False)
    split.add_argument("--data", default=None, help="builtin | replab:DIR | csv:FILE (default $EDGEMODELS_DATA or builtin)")
    split.add_argument("--seed", type=_non_negative_int, default=0)
    split.add_argument("--val-fraction", type=_fraction, default=0.1,
                       help="share of the training material held out for validation, in (0, 1) (default 0.1)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="data set commands").add_subparsers(dest="action", required=True)
    s = d.add_parser("stats", parents=[common, split], help="examples, labels, skipped rows, fingerprint")
    s.add_argument("--split", choices=("all", "train", "validation", "test"), default="all",
                   help="all = the whole training material before the validation split (default)")
    s.set_defaults(func=cmd_data_stats)

    b = sub.add_parser("build", parents=[common, split], help="fine-tune, convert and quantize (cached)")
    b.add_argument("--model", required=True, metavar="MODEL",
                   help=f"a registered name ({', '.join(REGISTRY)}), dir:PATH (a Hugging Face format directory), "
                        "or hf:ORG/NAME (the hub or its cache)")
    b.add_argument("--quant", required=True, choices=list(MODES))
    b.add_argument("--seq", type=_seq, default=128, help="sequence length, or 'dynamic' (default 128)")
    b.add_argument("--scale", default="ci", choices=("smoke", "ci", "paper"),
                   help="training budget preset (default ci); smoke: the smoke bench's, and a model without pretrained "
                        "weights (tiny-bert) is trained from scratch instead of built untrained")
    b.add_argument("--epochs", type=_positive_int)
    b.add_argument("--max-examples", type=_positive_int)
    b.add_argument("--max-length", type=_seq_length, help="training truncation length, 2 .. the model's positions")
    b.add_argument("--lr", type=_positive_float)
    b.add_argument("--class-weights", action="store_true")
    b.add_argument("--freeze-layers", type=_non_negative_int, metavar="N",
                   help="keep the embeddings and the bottom N encoder layers pretrained: a cheaper fine-tune on a CPU "
                        "(default 0: train them all; the bench's CI scale freezes MPNet-base's bottom 9 of 12)")
    b.add_argument("--group-split", action="store_true", help="validation = whole entities (RepLab)")
    b.add_argument("--kd-temperature", type=_positive_float, metavar="T",
                   help=f"a distilled model's softmax temperature (default {DistillConfig.temperature}; part of its "
                        "cache key)")
    b.add_argument("--kd-alpha", type=_unit_float, metavar="A",
                   help=f"a distilled model's weight on the labels' loss, 1 - A on the teacher's "
                        f"(default {DistillConfig.alpha})")
    b.add_argument("--weights", type=Path, help="local weights directory (config.json + weights)")
    b.set_defaults(func=cmd_build)

    e = sub.add_parser("evaluate", parents=[common, split], help="accuracy of a .tflite through the interpreter")
    e.add_argument("--tflite", required=True)
    e.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    e.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime", "tensorflow"))
    e.add_argument("--threads", type=_positive_int,
                   help="threads per interpreter (default: chosen with --workers to use every core)")
    e.add_argument("--workers", type=_positive_int,
                   help="processes, one interpreter each (default: one per core for compact models, "
                        "1 with every core as a thread for models over 200 MB)")
    e.add_argument("--limit", type=_positive_int, help="evaluate a seeded stratified sample of this many")
    e.add_argument("--tokenizer", help="tokenizer dir, for a .tflite not built by edgemodels")
    e.add_argument("--labels", metavar="A,B,...",
                   help="the model's class names in the order of its outputs (default: from its manifest)")
    e.add_argument("--max-length", type=_seq_length, default=128)
    e.add_argument("--pad-id", type=_non_negative_int, default=None, help="default: the tokenizer's pad id")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("cache", help="list (no hashing), verify (sha256 of every file) or clear the artifact cache")
    c.add_argument("action", choices=("ls", "verify", "clear"))
    c.add_argument("--json", action="store_true")
    c.add_argument("-y", "--yes", action="store_true", help="clear without asking (it asks only on a terminal)")
    c.add_argument("--cache", type=Path, default=None)
    c.set_defaults(func=cmd_cache)

    r = sub.add_parser("claims", parents=[common], help="one paper-claims table from bench reports (e.g. one per device)")
    r.add_argument("reports", nargs="+", type=Path, help="bench --report-dir directories or their report.json")
    r.set_defaults(func=cmd_claims)

    m = sub.add_parser("measure", parents=[common],
                       help="time a .tflite here or on a remote device (--remote ssh://...): latency and peak RSS")
    m.add_argument("--tflite", required=True)
    m.add_argument("--threads", type=_positive, help="interpreter threads (default: the target's cores)")
    m.add_argument("--rounds", type=_positive, default=20, help="timed runs (default 20)")
    m.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    m.add_argument("--seq-len", type=_positive, help="input length for a dynamic-length model (default 128)")
    m.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime", "tensorflow"),
                   help="default: the first installed on the target")
    add_remote_options(m)
    m.set_defaults(func=cmd_measure)

    from edgemodels.devices import NAMES as DEVICES
    from edgemodels.study.matrix import SUITE_SCALES

    x = sub.add_parser("export", parents=[common],
                       help="write a device's bench artifacts, pre-tokenized feeds and x86 reference outputs to DIR "
                            "(then on the device: pytest bench/ --device=D --artifacts DIR)")
    x.add_argument("--device", required=True, choices=list(DEVICES), help="the device the export is for")
    x.add_argument("--scale", default="ci", choices=list(SUITE_SCALES), help="the bench matrix (default ci)")
    x.add_argument("--data", default=None, help="builtin | replab:DIR | csv:FILE (default $EDGEMODELS_DATA or builtin)")
    x.add_argument("--models", help="comma-separated models to keep from the scale's matrix")
    x.add_argument("--modes", help="comma-separated quantization modes to keep")
    x.add_argument("--max-examples", type=_positive, help="override the scale's training budget (as the bench's)")
    x.add_argument("dir", type=Path, metavar="DIR", help="a new or empty directory, or an earlier export to replace")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", parents=[common], help="versions, runtimes, weight sources")
    i.add_argument("--offline", action="store_true", help="do not try the hub")
    i.set_defaults(func=cmd_info)

    from edgemodels.store.history import cli as history_cli  # history, compare (issue 26)

    history_cli.add_parsers(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _main(argv)
        sys.stdout.flush()  # here, not at exit: a reader that went away is a BrokenPipeError we can still catch
        return rc
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise  # another pipe (an SSH channel, a worker): a bug or a failure to show, not the terminal's reader
        # `cache ls | head -1`: the reader has what it wanted. Stop quietly, as `ls` or `cat` do, with their
        # status (128 + SIGPIPE); the interpreter's own flush at exit goes to /dev/null (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _reader_gone(stream) -> bool:
    """Whether `stream` is a pipe whose reading end was closed (poll reports an error on it)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # a captured stream (tests, a notebook): not a pipe
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _main(argv: Sequence[str] | None) -> int:
    from edgemodels import progress
    from edgemodels.build.data import default_spec

    args = parser().parse_args(argv)
    _set_quiet(args)
    if getattr(args, "data", "unset") is None:
        args.data = default_spec()
    try:
        check_options(args)
        if getattr(args, "json", False):
            bars_were = os.environ.get(progress.ENV)
            os.environ[progress.ENV] = "0"  # a script reads the output: no bars (build stages, evaluate)
            # Progress (Keras, converters) goes to stderr so stdout holds exactly one JSON object.
            real_stdout = sys.stdout
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    args.emit_to = real_stdout
                    return args.func(args)
            finally:  # main() may be called in-process (tests, a notebook): leave the environment as found
                if bars_were is None:
                    os.environ.pop(progress.ENV, None)
                else:
                    os.environ[progress.ENV] = bars_were
        return args.func(args)
    except EdgeModelsError as exc:  # the user's input: one line, exit 2; anything else is a bug (traceback)
        print(f"edgemodels: error: {exc}", file=sys.stderr)
        return 2
