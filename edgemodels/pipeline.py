"""data -> models -> train -> convert, with each stage's output cached.

Two cache kinds: `trained` (fine-tuned weights + tokenizer, shared by every conversion of that model) and
`tflite` (one FlatBuffer per mode and sequence length, self-contained: tokenizer files travel with it,
so the directory can be copied to a device and evaluated there).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from edgemodels import LABELS
from edgemodels import cache as cache_mod
from edgemodels import convert, data, models, modes, progress, sources
from edgemodels.train import TrainConfig

TFLITE_NAME = "model.tflite"
TOKENIZER_DIR = "tokenizer"


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("tensorflow", "tf-keras", "transformers", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass(frozen=True)
class BuildRequest:
    model: str  # a model spec (sources.py): a registered name, dir:PATH or hf:ORG/NAME
    quant: str = "drq"
    data: str = "builtin"
    seq: int | None = 128  # None: dynamic length ([1, None] inputs)
    train: TrainConfig = field(default_factory=TrainConfig)
    weights_dir: Path | None = None
    val_fraction: float = 0.1
    group_split: bool = False
    representative_examples: int = 100
    from_scratch: bool = False  # also fine-tune random-init models (tiny-bert smoke runs); never for size claims

    def __post_init__(self):
        src = sources.parse(self.model)
        if src.kind == "tflite":
            raise sources.SourceError(f"model {src}: a tflite: source is used as it is and never built; evaluate, "
                                      "measure or bench it, or build from a dir: or hf: source")
        convert.check_mode(self.quant)

    @property
    def source(self) -> sources.ModelSource:
        return sources.parse(self.model)

    @property
    def seq_label(self) -> str:
        return "dynamic" if self.seq is None else str(self.seq)


@dataclass(frozen=True)
class Artifact:
    tflite: Path
    manifest: dict[str, Any]
    cache_hit: bool

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])

    @property
    def pretrained(self) -> bool:
        return bool(self.manifest["pretrained"])

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes of the model's outputs, in order (entries built before labels were recorded: polarity)."""
        return tuple(self.manifest.get("labels") or LABELS)

    @property
    def tokenizer_dir(self) -> Path:
        return self.tflite.parent / TOKENIZER_DIR

    def summary(self) -> dict[str, Any]:
        """The manifest plus where the file is and whether this call built it (the CLI's JSON)."""
        keep = {k: v for k, v in self.manifest.items() if k not in ("files", "key")}
        return {**keep, "labels": list(self.labels), "tflite": str(self.tflite), "cache_hit": self.cache_hit}


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in models.TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def _splits(req: BuildRequest) -> tuple[data.Dataset, data.Dataset]:
    kw = dict(seed=req.train.seed, val_fraction=req.val_fraction, group_split=req.group_split)
    return data.load(req.data, "train", **kw), data.load(req.data, "validation", **kw)


def trained(req: BuildRequest, store: cache_mod.ArtifactCache) -> tuple[cache_mod.Entry, models.Weights]:
    """Fine-tuned weights for req.model on req.data; random-init models are stored untrained."""
    src = req.source
    weights = sources.resolve(src, cache_root=store.root, weights_dir=req.weights_dir)
    parts: dict[str, Any] = {"weights": weights.identity, "libs": library_versions()}
    if src.registered:  # the key dict of a registered model is what it was before sources existed
        parts = {"spec": asdict(models.get(req.model)) | {"config": dict(models.get(req.model).config)}, **parts}
    else:  # the weights' identity (content digest or hub revision) keeps two directories apart
        parts = {"source": src.kind, **parts}
    labels = data.classes(req.data)
    if labels != LABELS:  # recorded only where it differs from the default: existing keys stay byte-identical
        parts["labels"] = list(labels)
    train_set = val_set = None
    fine_tune = weights.pretrained or req.from_scratch
    if fine_tune:
        train_set, val_set = _splits(req)
        parts.update(data=[train_set.fingerprint, val_set.fingerprint], train=req.train.key())
    else:
        parts.update(seed=req.train.seed)
    key = cache_mod.Key("trained", src.slug, parts)

    def build(tmp: Path) -> dict[str, Any]:
        from edgemodels import train as train_mod

        model = models.build_classifier(weights, seed=req.train.seed, labels=labels)
        fields: dict[str, Any] = {
            "model": req.model, "source": str(src), "labels": list(labels),
            "pretrained": weights.pretrained, "trained": fine_tune,
            "weights_source": weights.source,
            "weights_trail": list(weights.trail), "params": models.count_params(model),
            "libs": parts["libs"],
        }
        if fine_tune:
            tok = models.load_tokenizer(weights.tokenizer_path)
            result = train_mod.fine_tune(model, tok, train_set, val_set, req.train)
            fields.update(data=req.data, train_config=req.train.key(), **asdict(result),
                          majority_accuracy=val_set.majority_accuracy())
        else:
            fields.update(validation_accuracy=None, train_seconds=0.0,
                          note="random init from the exact config: valid for size/speed/memory, not accuracy")
        model.save_pretrained(str(tmp / "weights"))
        _copy_tokenizer(weights.tokenizer_path, tmp / TOKENIZER_DIR)
        return fields

    return store.get_or_build(key, build), weights


def _calibration_set(req: BuildRequest) -> data.Dataset:
    """The int8 representative set: a seeded stratified sample of the training split."""
    train_set = data.load(req.data, "train", seed=req.train.seed, val_fraction=req.val_fraction,
                          group_split=req.group_split)
    return train_set.sample(min(req.representative_examples, len(train_set.examples)), seed=req.train.seed)


def saved_model(req: BuildRequest, base: cache_mod.Entry, store: cache_mod.ArtifactCache) -> cache_mod.Entry:
    """The SavedModel of a trained entry with the serving signature for req.seq, shared by every mode."""
    key = cache_mod.Key("savedmodel", f"{req.source.slug}-{req.seq_label}",
                        {"trained": base.manifest["key"]["digest"], "seq": req.seq_label, "libs": library_versions()})

    def build(tmp: Path) -> dict[str, Any]:
        import tensorflow as tf  # noqa: F401
        from transformers import TFAutoModelForSequenceClassification

        model = TFAutoModelForSequenceClassification.from_pretrained(str(base.file("weights")))
        with progress.stage(f"SavedModel {req.source.slug} seq {req.seq_label}"):
            convert.export_saved_model(model, tmp / "savedmodel", req.seq)
        return {"model": req.model, "seq": req.seq_label}

    return store.get_or_build(key, build)


def build(req: BuildRequest, store: cache_mod.ArtifactCache | None = None) -> Artifact:
    """The .tflite for req, building (and caching) whatever is missing."""
    store = store or cache_mod.ArtifactCache()
    mode = modes.get(req.quant)
    base, _ = trained(req, store)
    if mode.prune_vocab:  # the pruned model is its own cached stage; everything after keys on it
        from edgemodels import prune

        base = prune.pruned(req, base, store, mode.prune_min_count)
    parts = {"trained": base.manifest["key"]["digest"], "quant": req.quant, "seq": req.seq_label,
             "max_length": req.seq or req.train.max_length, "libs": library_versions()}
    if mode.calibration:  # the calibration set is drawn from the data: key on its content
        parts.update(data=_calibration_set(req).fingerprint, representative=req.representative_examples)
    source: Artifact | None = None
    if mode.recipe is not None:  # quantized from another mode's .tflite: key on that file and the recipe
        from edgemodels import quantize

        source = build(replace(req, quant=mode.source), store)
        parts.update(mode.key_parts(), source=source.manifest["key"]["digest"],
                     quantizer=quantize.quantizer_version())
    key = cache_mod.Key("tflite", f"{req.source.slug}-{req.quant}-{req.seq_label}", parts)

    def build_tflite(tmp: Path) -> dict[str, Any]:
        tok = models.load_tokenizer(base.file(TOKENIZER_DIR))
        if source is not None:
            from edgemodels import quantize

            blob = quantize.quantize_tflite(source.tflite.read_bytes(), mode.recipe)
        else:
            sm = saved_model(req, base, store)
            representative = None
            if mode.calibration:
                sample = _calibration_set(req)
                ids = models.encode(tok, sample.texts(), req.seq or req.train.max_length)
                representative = convert.representative_feeds(ids, req.seq, models.pad_id(tok))
            with progress.stage(f"convert {req.source.slug} {req.quant} seq {req.seq_label}"):
                blob = convert.convert(sm.file("savedmodel"), req.quant, representative)
        (tmp / TFLITE_NAME).write_bytes(blob)
        shutil.copytree(base.file(TOKENIZER_DIR), tmp / TOKENIZER_DIR)
        info = convert.inspect(blob)
        keep = ("pretrained", "trained", "weights_source", "weights_trail", "params", "validation_accuracy",
                "majority_accuracy", "train_seconds", "epochs_run", "n_train", "n_validation", "note")
        return {
            **{k: base.manifest.get(k) for k in keep if k in base.manifest},
            "model": req.model, "source": str(req.source), "labels": list(base.manifest.get("labels") or LABELS),
            "quant": req.quant, "quant_description": convert.MODES[req.quant],
            "seq": req.seq_label, "max_length": req.seq or req.train.max_length,
            "pad_id": models.pad_id(tok), "data": req.data if base.manifest.get("trained") else None,
            "size_bytes": len(blob), "weight_bytes": info.weight_bytes,
            "ops": [f"{name}:v{v}" for name, v in info.ops],
            "trained_entry": str(base.path), "libs": parts["libs"],
            **({"recipe": mode.recipe.label, "quantizer": parts["quantizer"],
                "source_tflite": str(source.tflite)} if source is not None else {}),
            **({"vocab": base.manifest["vocab"]} if mode.prune_vocab else {}),
        }

    entry = store.get_or_build(key, build_tflite)
    return Artifact(entry.file(TFLITE_NAME), entry.manifest, entry.cache_hit)


def manifest_for(tflite: Path) -> dict[str, Any]:
    """The manifest beside a cached .tflite (how `evaluate --tflite` finds its tokenizer and length)."""
    mf = Path(tflite).parent / cache_mod.MANIFEST
    if not mf.is_file():
        raise cache_mod.CacheError(
            f"{tflite}: no {cache_mod.MANIFEST} beside it; pass the .tflite from `edgemodels build` "
            "(its directory holds the tokenizer) or name one with --tokenizer DIR and --max-length N"
        )
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        manifest, why = None, f"not valid JSON ({exc})"
    missing = [k for k in ("max_length", "pad_id") if not isinstance(manifest, dict) or k not in manifest]
    if manifest is None or missing:
        why = why if manifest is None else f"no {', '.join(missing)} in it"
        raise cache_mod.CacheError(
            f"{mf}: damaged manifest beside {Path(tflite).name}: {why}; rebuild it with `edgemodels build`, or pass "
            "--tokenizer DIR and --max-length N"
        )
    return manifest


def training_checkpoint(req: BuildRequest, store: cache_mod.ArtifactCache) -> cache_mod.Entry:
    """What a Keras fine-tuning run leaves on disk: weights + Adam slots (tf.train.Checkpoint).

    The paper's ~160x compares against a file like this, not against a deployable model: Adam keeps two
    fp32 slots per weight, so the checkpoint is ~3x the fp32 weights. One optimizer step on a dummy batch
    creates the slots; the values are irrelevant to the size.
    """
    base, _ = trained(req, store)
    key = cache_mod.Key("checkpoint", req.source.slug, {"trained": base.manifest["key"]["digest"],
                                                  "libs": library_versions()})

    def build(tmp: Path) -> dict[str, Any]:
        import numpy as np
        import tensorflow as tf
        import tf_keras
        from transformers import TFAutoModelForSequenceClassification

        model = TFAutoModelForSequenceClassification.from_pretrained(str(base.file("weights")))
        opt = tf_keras.optimizers.Adam(1e-5)
        x = {"input_ids": np.ones((1, 8), np.int32), "attention_mask": np.ones((1, 8), np.int32)}
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True).logits)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp / "ckpt"))
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        return {"model": req.model, "size_bytes": size, "optimizer": "Adam (2 slots per weight)",
                "params": base.manifest.get("params")}

    return store.get_or_build(key, build)
