"""The run side's commands: evaluate (accuracy through the interpreter) and measure (a .tflite timed and its memory
read here, on a device over SSH, or on a labgrid place)."""

from __future__ import annotations

import sys
from pathlib import Path

from edgemodels import options
from edgemodels.cli import common


def add_parsers(sub, parents) -> None:
    common_, split = parents
    e = sub.add_parser("evaluate", parents=[common_, split], help="accuracy of a .tflite through the interpreter")
    e.add_argument("--tflite", required=True)
    e.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    options.add_to_parser(e, "--runtime", "--threads", "--tokenizer", "--labels", threads={
        "help": "threads per interpreter (default: chosen with --workers to use every core)"})
    e.add_argument("--workers", type=options.positive_int,
                   help="processes, one interpreter each (default: one per core for compact models, "
                        "1 with every core as a thread for models over 200 MB)")
    e.add_argument("--limit", type=options.positive_int, help="evaluate a seeded stratified sample of this many")
    e.add_argument("--max-length", type=options.seq_length, default=128)
    e.add_argument("--pad-id", type=options.non_negative_int, default=None, help="default: the tokenizer's pad id")
    options.add_to_parser(e, "--history")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("measure", parents=[common_],
                       help="time a .tflite here or on a remote device (--remote ssh://... or labgrid://PLACE): "
                            "latency and peak RSS")
    m.add_argument("--tflite", required=True)
    options.add_to_parser(m, "--threads", "--runtime", *options.REMOTE, threads={
        "help": "interpreter threads (default: the target's cores)"}, runtime={
        "help": "default: the first installed on the target"})
    m.add_argument("--rounds", type=options.positive_int, default=20, help="timed runs (default 20)")
    m.add_argument("--warmup", type=options.non_negative_int, default=2, help="untimed runs first (default 2)")
    m.add_argument("--seq-len", type=options.positive_int, help="input length for a dynamic-length model (default 128)")
    options.add_to_parser(m, "--history")
    m.set_defaults(func=cmd_measure)


def cmd_evaluate(args) -> int:
    common.quiet_tf(args, start_tf=False)  # a TFLite runtime only; its own start-up line is handled in runtime.load
    from edgemodels.build import data, models, pipeline, sources
    from edgemodels.run import evaluate

    tflite = Path(args.tflite.removeprefix("tflite:"))
    if not tflite.is_file():
        raise common.OptionError(f"{tflite}: no such file; pass a .tflite built by `edgemodels build` (its path is in "
                          "the build's JSON as \"tflite\"), or your own with --tokenizer DIR and --labels a,b,c")
    labels = sources.given_labels(tflite, args.labels)  # --labels against the manifest's order: a conflict is an error
    if args.tokenizer:
        tok_dir, max_length = Path(args.tokenizer), args.max_length
        pad = args.pad_id if args.pad_id is not None else models.pad_id(models.load_tokenizer(tok_dir))
        if labels is None:  # never assume a foreign model's output order
            raise common.OptionError(f"{tflite}: no edgemodels manifest beside it names its classes; pass --labels a,b,c "
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
    out["history_run"] = _record(args, "evaluate", tflite, {
        "accuracy": acc.accuracy, "macro_f1": acc.macro_f1, "runtime": acc.runtime,
        "runtime_version": acc.runtime_version}, data_fingerprint=ds.fingerprint, machine={"data": args.data})
    human = (f"{tflite}: accuracy {acc.accuracy:.4f}, macro-F1 {acc.macro_f1:.4f} on {acc.n} "
             f"{args.split} examples (majority class {acc.majority_accuracy:.4f}); "
             f"runtime {acc.runtime} {acc.runtime_version}; {acc.tweets_per_s:.1f} tweets/s "
             f"({acc.workers} process(es) x {acc.threads} thread(s), {acc.seconds:.1f} s)")
    common.emit(args, out, human)
    return 0


def cmd_measure(args) -> int:
    """Time a .tflite here or on a remote device: one fresh worker for latency, another for peak RSS."""
    from edgemodels.run import targets

    tflite = Path(args.tflite.removeprefix("tflite:"))
    if not tflite.is_file():
        raise common.OptionError(f"--tflite {tflite}: no such file")
    kw = dict(identity=args.remote_identity, python=args.remote_python, dir=args.remote_dir,
              known_hosts=args.remote_known_hosts, connect_timeout_s=args.connect_timeout)
    try:
        if args.remote and args.remote.startswith("labgrid://"):  # the place is locked for both runs, then freed
            from edgemodels.lab import places

            opened = places.open_target(args.remote, notify=lambda line: print(f"edgemodels: {line}", file=sys.stderr),
                                        **kw)
        else:
            opened = targets.from_options(args.remote, **kw)
        with opened as target:
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
        common.emit(args, out, f"{tflite}: does not load on {timed.identity.label}: {timed.error}")
        return 1
    out = targets.measurement(timed, memory)
    out["history_run"] = _record(args, "measure", tflite, {
        k: out[k] for k in ("inferences_per_s", "p50_ms", "p90_ms", "p99_ms", "peak_rss_bytes", "runtime",
                            "runtime_version", "threads")} | {"method": out["method"], "notes": [out["label"]]},
        machine={"remote": out["where"]} if args.remote else {})
    if out["inferences_per_s"] is None:
        human = f"{tflite}: {out['label']}: loads; no timing reported ({out.get('note', '')})"
    else:
        rss = out["peak_rss_bytes"]
        human = (f"{tflite}: {out['inferences_per_s']:.3g} inferences/s, p50 {out['p50_ms']:.3g} ms, "
                 f"p90 {out['p90_ms']:.3g} ms, p99 {out['p99_ms']:.3g} ms, peak RSS "
                 f"{'n/a' if rss is None else f'{rss / 2**20:.0f} MiB'} ({out['label']}; {out['runtime']} "
                 f"{out['runtime_version']}, {out['threads']} thread(s), {out['rounds']} rounds)")
    common.emit(args, out, human)
    return 0


def _record(args, source: str, tflite: Path, fields: dict, *, machine: dict, data_fingerprint: str | None = None):
    """Append this command's figures to the results history as a one-row run (edgemodels/store/history/auto.py);
    returns the run id (None where it was not recorded, said on stderr)."""
    from datetime import datetime, timezone

    import json

    from edgemodels.report.machine import machine_info
    from edgemodels.store.history import auto

    try:  # the mode an edgemodels manifest beside the very file records (its size must match)
        mf = json.loads((tflite.parent / "manifest.json").read_text(encoding="utf-8"))
        mode = str(mf["quant"]) if mf.get("size_bytes") == tflite.stat().st_size else "as-is"
    except (OSError, ValueError, KeyError, TypeError):
        mode = "as-is"
    doc = {"device": "native" if not getattr(args, "remote", None) else args.remote, "created":
           datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {**machine_info(), **machine},
           "rows": [{"device": "native", "model": f"tflite:{tflite}", "mode": mode, "seq": "as-is", **fields}]}
    run_id, note = auto.record(args.history, doc, options={"command": source}, data_fingerprint=data_fingerprint,
                               source=source)
    print(f"edgemodels: {note}", file=sys.stderr)
    return run_id
