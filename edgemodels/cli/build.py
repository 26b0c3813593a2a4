"""The build side's commands: data stats, build (fine-tune, convert, quantize; cached) and export."""

from __future__ import annotations

import sys
from pathlib import Path

from edgemodels import options
from edgemodels.cli import common


def add_parsers(sub, parents) -> None:
    from edgemodels.build.convert import MODES
    from edgemodels.build.models import REGISTRY
    from edgemodels.build.train import DistillConfig
    from edgemodels.devices import NAMES as DEVICES

    common_, split = parents
    d = sub.add_parser("data", help="data set commands").add_subparsers(dest="action", required=True)
    s = d.add_parser("stats", parents=[common_, split], help="examples, labels, skipped rows, fingerprint")
    s.add_argument("--split", choices=("all", "train", "validation", "test"), default="all",
                   help="all = the whole training material before the validation split (default)")
    s.set_defaults(func=cmd_data_stats)

    b = sub.add_parser("build", parents=[common_, split], help="fine-tune, convert and quantize (cached)")
    b.add_argument("--model", required=True, metavar="MODEL",
                   help=f"a registered name ({', '.join(REGISTRY)}), dir:PATH (a Hugging Face format directory), "
                        "or hf:ORG/NAME (the hub or its cache)")
    b.add_argument("--quant", required=True, choices=list(MODES))
    b.add_argument("--seq", type=options.seq, default=128, help="sequence length, or 'dynamic' (default 128)")
    options.add_to_parser(b, "--scale", "--max-examples", scale={
        "help": "training budget preset (default ci); smoke: the smoke bench's, and a model without pretrained "
                "weights (tiny-bert) is trained from scratch instead of built untrained"})
    b.add_argument("--epochs", type=options.positive_int)
    b.add_argument("--max-length", type=options.seq_length, help="training truncation length, 2 .. the model's positions")
    b.add_argument("--lr", type=options.positive_float)
    b.add_argument("--class-weights", action="store_true")
    b.add_argument("--freeze-layers", type=options.non_negative_int, metavar="N",
                   help="keep the embeddings and the bottom N encoder layers pretrained: a cheaper fine-tune on a CPU "
                        "(default 0: train them all; the bench's CI scale freezes MPNet-base's bottom 9 of 12)")
    b.add_argument("--group-split", action="store_true", help="validation = whole entities (RepLab)")
    b.add_argument("--kd-temperature", type=options.positive_float, metavar="T",
                   help=f"a distilled model's softmax temperature (default {DistillConfig.temperature}; part of its "
                        "cache key)")
    b.add_argument("--kd-alpha", type=options.unit_float, metavar="A",
                   help=f"a distilled model's weight on the labels' loss, 1 - A on the teacher's "
                        f"(default {DistillConfig.alpha})")
    b.add_argument("--weights", type=Path, help="local weights directory (config.json + weights)")
    b.set_defaults(func=cmd_build, check=check_options)

    x = sub.add_parser("export", parents=[common_],
                       help="write a device's bench artifacts, pre-tokenized feeds and x86 reference outputs to DIR "
                            "(then on the device: pytest bench/ --device=D --artifacts DIR)")
    x.add_argument("--device", required=True, choices=list(DEVICES), help="the device the export is for")
    options.add_to_parser(x, "--scale", "--data", "--models", "--modes", "--max-examples")
    x.add_argument("dir", type=Path, metavar="DIR", help="a new or empty directory, or an earlier export to replace")
    x.set_defaults(func=cmd_export, check=check_options)


def max_positions(model: str) -> int | None:
    """How many token positions `model` can embed: the most --seq/--max-length may ask for (None: not known
    before its config is fetched, e.g. an hf: source). 512 is MobileBertConfig's default; RoBERTa-style
    positions (MPNet) start after padding_idx (1), hence 2 fewer."""
    from edgemodels.build import sources

    return sources.max_positions(sources.parse(model))



def check_options(args) -> None:
    """Checks argparse cannot make alone: against the model's positions and the data spec (parse time)."""
    from edgemodels.build import data

    # an unusable file (no rows, one class) stops here, before TensorFlow
    data.check_loadable(args.data, seed=getattr(args, "seed", 0), val_fraction=getattr(args, "val_fraction", 0.1),
                        group_split=getattr(args, "group_split", False))
    if args.command == "build":
        from edgemodels.build import sources

        sources.check(args.model)  # a dir: source's config and weights (a truncated tf_model.h5), before TensorFlow
        limit = max_positions(args.model)  # also parses --model: a bad spec is a one-line error here
        for flag, value in (("--seq", args.seq), ("--max-length", args.max_length)):
            if limit is not None and value is not None and value > limit:
                raise common.OptionError(f"{flag} {value}: {args.model} has {limit} token positions; use {flag} {limit} "
                                  "or less" + (" (or --seq dynamic)" if flag == "--seq" else ""))
        from edgemodels.build.pipeline import teacher_name

        if (args.kd_temperature is not None or args.kd_alpha is not None) and teacher_name(args.model) is None:
            from edgemodels.build.models import REGISTRY

            distilled = ", ".join(n for n, r in REGISTRY.items() if r.teacher)
            raise common.OptionError(f"--kd-temperature/--kd-alpha: {args.model} is not distilled (it has no teacher); "
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
    common.emit(args, out, human)
    return 0


def cmd_build(args) -> int:
    common.quiet_tf(args)
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
    common.emit(args, out, human)
    return 0


def cmd_export(args) -> int:
    """Build what `pytest bench/ --device=D --artifacts DIR` needs on the device and write it to DIR (atomic)."""
    from edgemodels.store import cache
    from edgemodels.build import export

    req = export.ExportRequest(device=args.device, scale=args.scale, data=args.data,
                               models=tuple(args.models or ()), modes=tuple(args.modes or ()),
                               max_examples=args.max_examples)
    exp = export.export(req, args.dir, cache.ArtifactCache(args.cache), log=lambda m: print(m, file=sys.stderr))
    out = {**exp.summary(), "files": len(exp.index["files"]), "kept": list(exp.kept),
           "bytes": sum(exp.root.joinpath(rel).stat().st_size for rel in exp.index["files"])}
    common.emit(args, out, f"exported {len(out['cases'])} case(s) for --device={args.device} --scale={args.scale} to "
                     f"{exp.root} ({out['bytes'] / 2**20:.1f} MiB, {out['files']} files with sha256); on the device: "
                     f"pytest bench/ --device={args.device} --scale={args.scale} --artifacts {exp.root.name}")
    return 0
