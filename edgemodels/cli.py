"""`python -m edgemodels`: data stats, build, evaluate, claims, cache, info.

Every command prints a human summary, or one JSON object with --json (the contract scripts rely on).
Errors in the user's input exit with status 2 and a message naming what to fix; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from edgemodels import __version__


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def cmd_data_stats(args) -> int:
    from edgemodels import data

    ds = data.load(args.data, args.split, seed=args.seed, val_fraction=args.val_fraction)
    out = {"data": str(data.parse_spec(args.data)), "split": args.split, "examples": len(ds.examples),
           "labels": ds.label_counts(), "skipped": dict(ds.skipped), "fingerprint": ds.fingerprint,
           "majority_accuracy": ds.majority_accuracy()}
    human = "\n".join([
        f"{out['data']} [{args.split}]: {out['examples']} examples",
        "labels:  " + ", ".join(f"{k} {v}" for k, v in out["labels"].items()),
        "skipped: " + (", ".join(f"{k} {v}" for k, v in out["skipped"].items()) or "none"),
        f"fingerprint: {ds.fingerprint}",
    ])
    _emit(args, out, human)
    return 0


def cmd_build(args) -> int:
    _quiet_tf()
    from dataclasses import replace

    from edgemodels import cache, pipeline, train

    cfg = train.scale(args.scale)
    overrides = {k: v for k, v in dict(epochs=args.epochs, max_examples=args.max_examples,
                                       max_length=args.max_length, learning_rate=args.lr,
                                       class_weights=args.class_weights or None, seed=args.seed).items()
                 if v is not None}
    req = pipeline.BuildRequest(
        model=args.model, quant=args.quant, data=args.data, seq=args.seq, train=replace(cfg, **overrides),
        weights_dir=args.weights, group_split=args.group_split,
    )
    art = pipeline.build(req, cache.ArtifactCache(args.cache))
    out = art.summary()
    va = out.get("validation_accuracy")
    human = "\n".join([
        f"{art.tflite}",
        f"  {args.model} {args.quant} seq={req.seq_label}: {art.size_bytes / 1e6:.2f} MB"
        f" ({'cache hit' if art.cache_hit else 'built'})",
        f"  pretrained: {out['pretrained']} (weights: {out.get('weights_source')})",
        "  validation accuracy (TF, during training): "
        + (f"{va:.4f} (majority class {out.get('majority_accuracy', float('nan')):.4f})" if va is not None
           else "n/a - random init, not fine-tuned"),
    ])
    _emit(args, out, human)
    return 0


def cmd_evaluate(args) -> int:
    _quiet_tf()
    from edgemodels import data, evaluate, pipeline

    tflite = Path(args.tflite)
    if not tflite.is_file():
        raise FileNotFoundError(f"{tflite}: no such file; pass a .tflite built by `edgemodels build` (its path is "
                                "in the build's JSON as \"tflite\")")
    if args.tokenizer:
        tok_dir, max_length, pad = Path(args.tokenizer), args.max_length, args.pad_id
    else:
        mf = pipeline.manifest_for(tflite)
        tok_dir, max_length, pad = tflite.parent / pipeline.TOKENIZER_DIR, mf["max_length"], mf["pad_id"]
    ds = data.load(args.data, args.split, seed=args.seed, val_fraction=args.val_fraction)
    if args.limit and len(ds.examples) > args.limit:
        ds = ds.sample(args.limit, seed=args.seed)
    acc = evaluate.evaluate(tflite, ds, tokenizer_dir=tok_dir, max_length=max_length, pad=pad,
                            runtime_name=args.runtime, threads=args.threads)
    out = {**acc.as_dict(), "tflite": str(tflite), "data": args.data, "split": args.split}
    human = (f"{tflite}: accuracy {acc.accuracy:.4f}, macro-F1 {acc.macro_f1:.4f} on {acc.n} "
             f"{args.split} examples (majority class {acc.majority_accuracy:.4f}); "
             f"runtime {acc.runtime} {acc.runtime_version}")
    _emit(args, out, human)
    return 0


def cmd_cache(args) -> int:
    from edgemodels import cache

    store = cache.ArtifactCache(args.cache)
    if args.action == "clear":
        n = store.clear()
        _emit(args, {"root": str(store.root), "removed": n}, f"removed {n} entries from {store.root}")
        return 0
    rows = []
    for path, mf in store.entries():
        rows.append({"path": str(path), "kind": path.parent.name, "complete": mf is not None,
                     "size_bytes": sum(f["size"] for f in (mf or {}).get("files", {}).values()),
                     "model": (mf or {}).get("model"), "quant": (mf or {}).get("quant"),
                     "seq": (mf or {}).get("seq"), "created": (mf or {}).get("created")})
    if args.json:
        _emit(args, {"root": str(store.root), "entries": rows})
    else:
        from tabulate import tabulate

        print(f"cache: {store.root}")
        print(tabulate([[r["kind"], r["model"], r["quant"] or "", r["seq"] or "", f"{r['size_bytes'] / 1e6:.1f}",
                         "yes" if r["complete"] else "NO (will rebuild)", Path(r["path"]).name] for r in rows],
                       headers=["kind", "model", "quant", "seq", "MB", "complete", "entry"]))
    return 0


def cmd_info(args) -> int:
    from edgemodels import cache, data, models, runtime
    from edgemodels.pipeline import library_versions

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
    from edgemodels.report import merge_claims, merged_claims_table

    merged = merge_claims(args.reports)
    _emit(args, {"claims": merged}, merged_claims_table(merged))
    return 0


def parser() -> argparse.ArgumentParser:
    from edgemodels.convert import MODES
    from edgemodels.models import REGISTRY

    p = argparse.ArgumentParser(prog="edgemodels", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edgemodels {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--cache", type=Path, default=None,
                        help="artifact cache directory (default $EDGEMODELS_CACHE or the user cache dir)")
    split = argparse.ArgumentParser(add_help=False)
    split.add_argument("--data", default=None, help="builtin | replab:DIR | csv:FILE (default $EDGEMODELS_DATA or builtin)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--val-fraction", type=float, default=0.1)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="data set commands").add_subparsers(dest="action", required=True)
    s = d.add_parser("stats", parents=[common, split], help="examples, labels, skipped rows, fingerprint")
    s.add_argument("--split", choices=("all", "train", "validation", "test"), default="all",
                   help="all = the whole training material before the validation split (default)")
    s.set_defaults(func=cmd_data_stats)

    b = sub.add_parser("build", parents=[common, split], help="fine-tune, convert and quantize (cached)")
    b.add_argument("--model", required=True, choices=list(REGISTRY))
    b.add_argument("--quant", required=True, choices=list(MODES))
    b.add_argument("--seq", type=_seq, default=128, help="sequence length, or 'dynamic' (default 128)")
    b.add_argument("--scale", default="ci", choices=("ci", "paper"), help="training budget preset (default ci)")
    b.add_argument("--epochs", type=int)
    b.add_argument("--max-examples", type=int)
    b.add_argument("--max-length", type=int)
    b.add_argument("--lr", type=float)
    b.add_argument("--class-weights", action="store_true")
    b.add_argument("--group-split", action="store_true", help="validation = whole entities (RepLab)")
    b.add_argument("--weights", type=Path, help="local weights directory (config.json + weights)")
    b.set_defaults(func=cmd_build)

    e = sub.add_parser("evaluate", parents=[common, split], help="accuracy of a .tflite through the interpreter")
    e.add_argument("--tflite", required=True)
    e.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    e.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime", "tensorflow"))
    e.add_argument("--threads", type=int)
    e.add_argument("--limit", type=int, help="evaluate a seeded stratified sample of this many")
    e.add_argument("--tokenizer", help="tokenizer dir, for a .tflite not built by edgemodels")
    e.add_argument("--max-length", type=int, default=128)
    e.add_argument("--pad-id", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("cache", help="list or clear the artifact cache")
    c.add_argument("action", choices=("ls", "clear"))
    c.add_argument("--json", action="store_true")
    c.add_argument("--cache", type=Path, default=None)
    c.set_defaults(func=cmd_cache)

    r = sub.add_parser("claims", parents=[common], help="one paper-claims table from bench reports (e.g. one per device)")
    r.add_argument("reports", nargs="+", type=Path, help="bench --report-dir directories or their report.json")
    r.set_defaults(func=cmd_claims)

    i = sub.add_parser("info", parents=[common], help="versions, runtimes, weight sources")
    i.add_argument("--offline", action="store_true", help="do not try the hub")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edgemodels.convert import ConversionError
    from edgemodels.data import DataError, default_spec
    from edgemodels.models import WeightsError
    from edgemodels.report import ReportError
    from edgemodels.runtime import ModelLoadError, RuntimeUnavailable

    args = parser().parse_args(argv)
    if getattr(args, "data", "unset") is None:
        args.data = default_spec()
    try:
        if getattr(args, "json", False):
            # Progress (Keras, converters) goes to stderr so stdout holds exactly one JSON object.
            real_stdout = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                args.emit_to = real_stdout
                return args.func(args)
        return args.func(args)
    except (DataError, WeightsError, ModelLoadError, RuntimeUnavailable, ConversionError, ReportError,
            FileNotFoundError, ValueError) as exc:
        print(f"edgemodels: error: {exc}", file=sys.stderr)
        return 2
