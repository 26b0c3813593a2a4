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
from edgemodels import progress
from edgemodels.build import convert, data, models, modes, sources
from edgemodels.build.train import DistillConfig, DistillError, TrainConfig
from edgemodels.errors import EdgeModelsError
from edgemodels.store import cache as cache_mod
from edgemodels.store.entries import MANIFEST, CacheError

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
    teacher_train: TrainConfig | None = None  # a distilled model's teacher's budget (None: the same as `train`)
    distill: DistillConfig = field(default_factory=DistillConfig)  # used only where the model has a teacher
    # Training options the caller set explicitly, by name (the CLI's --epochs ...): where the model would not be
    # fine-tuned (a random init without from_scratch) they are refused, not ignored. Never part of a cache key.
    train_options: tuple[str, ...] = ()

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

    def teacher_request(self) -> BuildRequest | None:
        """The request that trains this model's teacher (None: not distilled): same data and split, its own budget."""
        teacher = teacher_name(self.model)
        if teacher is None:
            return None
        cfg = self.teacher_train or self.train
        if cfg.seed != self.train.seed:  # the seed also draws the train/validation split: the teacher must share it
            raise DistillError(f"{self.model}: teacher {teacher} trains with seed {cfg.seed} but the student with "
                               f"{self.train.seed}; the seed draws the validation split, so give both the same seed")
        return replace(self, model=teacher, train=cfg, teacher_train=None)


def teacher_name(model: str) -> str | None:
    """The teacher of a model spec: a registered record's `teacher` (dir: and hf: sources are never distilled)."""
    src = sources.parse(model)
    return models.get(src.ref).teacher if src.registered else None


def teacher_config(model: str, config_for, **overrides: Any) -> TrainConfig | None:
    """The teacher's TrainConfig for a bench/export case: `config_for(teacher)` (the scale's budget for that model)
    with the same overrides (None values ignored) as the student's; None where the model has no teacher."""
    teacher = teacher_name(model)
    if teacher is None:
        return None
    return replace(config_for(teacher), **{k: v for k, v in overrides.items() if v is not None})


def _manifest_labels(manifest: dict[str, Any]) -> tuple[str, ...]:
    """A build's class names: its manifest's, or the polarity task's for builds older than that field."""
    return tuple(manifest.get("labels") or LABELS)


def request_for(case, scale, data_spec: str, max_examples: int | None = None) -> BuildRequest:
    """The BuildRequest of a bench/export case (suite.Case) at a scale (suite.Scale): the scale's budget for the model
    (and for its teacher), capped at `max_examples` (--max-examples) where given. One place, so that the bench and an
    export of the same matrix build the same cache entries."""
    cfg = scale.train_config(case.model)
    if max_examples:
        cfg = replace(cfg, max_examples=max_examples)
    return BuildRequest(model=case.model, quant=case.quant, data=data_spec, seq=case.seq, train=cfg,
                        from_scratch=scale.from_scratch,
                        teacher_train=teacher_config(case.model, scale.train_config, max_examples=max_examples))


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
        return _manifest_labels(self.manifest)

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


@dataclass(frozen=True)
class _TrainedPlan:
    """What `trained` keys on and needs, computed without building anything."""

    key: cache_mod.Key
    weights: models.Weights
    labels: tuple[str, ...]
    fine_tune: bool
    train_set: data.Dataset | None
    val_set: data.Dataset | None
    teacher: BuildRequest | None  # a distilled model's teacher request


def _plan(req: BuildRequest, store: cache_mod.ArtifactCache,
          splits: tuple[data.Dataset, data.Dataset] | None = None) -> _TrainedPlan:
    """`splits`: req's (train, validation) where the caller has them (a teacher's are its student's)."""
    src = req.source
    weights = sources.resolve(src, cache_root=store.root, weights_dir=req.weights_dir)
    parts: dict[str, Any] = {"weights": weights.identity, "libs": library_versions()}
    if src.registered:  # the key dict of a registered model is what it was before sources existed
        parts = {"spec": models.get(req.model).key(), **parts}
    else:  # the weights' identity (content digest or hub revision) keeps two directories apart
        parts = {"source": src.kind, **parts}
    labels = data.classes(req.data)
    if labels != LABELS:  # recorded only where it differs from the default: existing keys stay byte-identical
        parts["labels"] = list(labels)
    train_set = val_set = None
    fine_tune = weights.pretrained or req.from_scratch
    if not fine_tune and req.train_options:
        _refuse_train_options(req)
    teacher = req.teacher_request() if fine_tune else None
    if fine_tune:
        train_set, val_set = splits or _splits(req)
        parts.update(data=[train_set.fingerprint, val_set.fingerprint], train=req.train.key())
    else:
        parts.update(seed=req.train.seed)
    if teacher is not None:  # only distilled models gain these parts
        _check_teacher_weights(req, teacher)
        # The teacher's splits are the student's (same data, seed and split options: BuildRequest.teacher_request).
        teacher_key = _plan(teacher, store, (train_set, val_set)).key
        parts.update(teacher={"model": teacher.model, "trained": teacher_key.digest}, distill=req.distill.key())
    return _TrainedPlan(cache_mod.Key("trained", src.slug, parts), weights, labels, fine_tune, train_set, val_set,
                        teacher)


class UntrainedOptionsError(EdgeModelsError, ValueError):
    """Training options given for a build that trains nothing (a random init): refused, never silently ignored."""


def _refuse_train_options(req: BuildRequest) -> None:
    opts = ", ".join(req.train_options)
    spec = models.get(req.model) if req.source.registered else None
    why = (f"{req.model}'s pretrained weights are not here (`edgemodels info` says where they are looked for)"
           if spec is None or spec.hub_id or spec.pypi else f"{req.model} has no pretrained weights")
    raise UntrainedOptionsError(
        f"{opts}: {why}, so it is built as an untrained random init (for size, speed and memory only) and {opts} "
        f"would change nothing; --scale smoke trains it from scratch ({'they apply' if ',' in opts else 'it applies'} "
        f"there), or drop {opts}")


def _check_teacher_weights(req: BuildRequest, teacher: BuildRequest) -> None:
    """A weights directory holding one model would be read as the teacher too: ask for a sub-directory per model."""
    wd = models.local_weights_dir(req.weights_dir)
    if wd is not None and not (Path(wd) / teacher.model).is_dir():
        raise DistillError(f"{wd}: {req.model} is distilled from {teacher.model}, whose weights would be read from "
                           f"this directory too; put each model's weights in {wd}/<name> ({wd}/{teacher.model}, "
                           f"{wd}/{models.get(req.model).weights_from or req.model})")


def trained_key(req: BuildRequest, store: cache_mod.ArtifactCache) -> cache_mod.Key:
    """The `trained` entry's cache key for req, without building anything (a distilled model's includes its
    teacher's key digest and the DistillConfig)."""
    return _plan(req, store).key


def _teacher_entry(req: BuildRequest, teacher: BuildRequest, labels: tuple[str, ...],
                   store: cache_mod.ArtifactCache) -> cache_mod.Entry:
    entry, _ = trained(teacher, store)
    if not entry.manifest.get("trained"):
        raise DistillError(f"{req.model}: its teacher {teacher.model} is a random init, not fine-tuned "
                           f"({entry.manifest.get('note', 'no pretrained weights')}); install the teacher's weights "
                           "(`edgemodels info` says where they are looked for) or build with from_scratch")
    if _manifest_labels(entry.manifest) != tuple(labels):
        raise DistillError(f"{entry.path}: teacher {teacher.model} predicts {entry.manifest.get('labels')}, the "
                           f"data has {list(labels)}; rebuild the teacher on the same data")
    return entry


def _distill(req: BuildRequest, plan: _TrainedPlan, teacher: cache_mod.Entry, model, tok):
    """Teacher logits over the student's training/validation examples, then the distillation fit."""
    from transformers import TFAutoModelForSequenceClassification

    from edgemodels.build import train as train_mod

    assert plan.teacher is not None and plan.train_set is not None and plan.val_set is not None
    tr, va = train_mod.select(plan.train_set, plan.val_set, req.train)
    t_model = TFAutoModelForSequenceClassification.from_pretrained(str(teacher.file("weights")))
    t_tok = models.load_tokenizer(teacher.file(TOKENIZER_DIR))
    t_len = plan.teacher.train.max_length
    with progress.stage(f"teacher {plan.teacher.model} logits over {len(tr.examples) + len(va.examples)} examples"):
        logits = train_mod.TeacherLogits(
            train_mod.predict_logits(t_model, t_tok, tr.texts(), t_len, deterministic=req.train.deterministic),
            train_mod.predict_logits(t_model, t_tok, va.texts(), t_len, deterministic=req.train.deterministic))
    del t_model
    result = train_mod.distill(model, tok, logits, plan.train_set, plan.val_set, req.train, req.distill)
    hist = result.history
    best = max(range(len(hist["val_accuracy"])), key=hist["val_accuracy"].__getitem__)
    record = {
        "teacher": plan.teacher.model, "teacher_entry": str(teacher.path),
        "teacher_digest": teacher.manifest["key"]["digest"], "teacher_train_config": plan.teacher.train.key(),
        "teacher_validation_accuracy": teacher.manifest.get("validation_accuracy"),
        "teacher_accuracy_on_student_validation": float(
            (logits.validation.argmax(axis=1) == va.label_ids()).mean()) if len(va.examples) else None,
        "config": req.distill.key(),
        "validation_agreement": hist["val_agreement"][best],  # student argmax == teacher argmax, best epoch
    }
    return result, record


def trained(req: BuildRequest, store: cache_mod.ArtifactCache) -> tuple[cache_mod.Entry, models.Weights]:
    """Fine-tuned weights for req.model on req.data; random-init models are stored untrained. A distilled model
    (a registered record with a teacher) gets its teacher's trained entry first, only when it is itself missing."""
    plan = _plan(req, store)
    src, weights, labels, fine_tune = req.source, plan.weights, plan.labels, plan.fine_tune
    train_set, val_set = plan.train_set, plan.val_set
    teacher: list[cache_mod.Entry] = []
    if plan.teacher is not None and store.get(plan.key) is None:  # built outside the student's lock
        teacher.append(_teacher_entry(req, plan.teacher, labels, store))

    def build(tmp: Path) -> dict[str, Any]:
        from edgemodels.build import train as train_mod

        model = models.build_classifier(weights, seed=req.train.seed, labels=labels)
        fields: dict[str, Any] = {
            "model": req.model, "source": str(src), "labels": list(labels),
            "pretrained": weights.pretrained, "trained": fine_tune,
            "weights_source": weights.source,
            "weights_trail": list(weights.trail), "params": models.count_params(model),
            "libs": library_versions(),
        }
        if fine_tune:
            tok = models.load_tokenizer(weights.tokenizer_path)
            if plan.teacher is not None:
                if not teacher:  # the entry vanished between the check and the lock: get the teacher now
                    teacher.append(_teacher_entry(req, plan.teacher, labels, store))
                result, distillation = _distill(req, plan, teacher[0], model, tok)
                fields.update(distillation=distillation)
            else:
                result = train_mod.fine_tune(model, tok, train_set, val_set, req.train)
            fields.update(data=req.data, train_config=req.train.key(), **asdict(result),
                          majority_accuracy=val_set.majority_accuracy())
        else:
            fields.update(validation_accuracy=None, train_seconds=0.0,
                          note="random init from the exact config: valid for size/speed/memory, not accuracy")
        model.save_pretrained(str(tmp / "weights"))
        _copy_tokenizer(weights.tokenizer_path, tmp / TOKENIZER_DIR)
        return fields

    return store.get_or_build(plan.key, build), weights


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
        from edgemodels.build import prune

        base = prune.pruned(req, base, store, mode.prune_min_count)
    parts = {"trained": base.manifest["key"]["digest"], "quant": req.quant, "seq": req.seq_label,
             "max_length": req.seq or req.train.max_length, "libs": library_versions()}
    if mode.calibration:  # the calibration set is drawn from the data: key on its content
        parts.update(data=_calibration_set(req).fingerprint, representative=req.representative_examples)
    source: Artifact | None = None
    if mode.recipe is not None:  # quantized from another mode's .tflite: key on that file and the recipe
        from edgemodels.build import quantize

        source = build(replace(req, quant=mode.source), store)
        parts.update(mode.key_parts(), source=source.manifest["key"]["digest"],
                     quantizer=quantize.quantizer_version())
    key = cache_mod.Key("tflite", f"{req.source.slug}-{req.quant}-{req.seq_label}", parts)

    def build_tflite(tmp: Path) -> dict[str, Any]:
        tok = models.load_tokenizer(base.file(TOKENIZER_DIR))
        if source is not None:
            from edgemodels.build import quantize

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
                "majority_accuracy", "train_seconds", "epochs_run", "n_train", "n_validation", "note",
                "distillation")
        return {
            **{k: base.manifest.get(k) for k in keep if k in base.manifest},
            "model": req.model, "source": str(req.source), "labels": list(_manifest_labels(base.manifest)),
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
    mf = Path(tflite).parent / MANIFEST
    if not mf.is_file():
        raise CacheError(
            f"{tflite}: no {MANIFEST} beside it; pass the .tflite from `edgemodels build` "
            "(its directory holds the tokenizer) or name one with --tokenizer DIR and --max-length N"
        )
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        manifest, why = None, f"not valid JSON ({exc})"
    missing = [k for k in ("max_length", "pad_id") if not isinstance(manifest, dict) or k not in manifest]
    if manifest is None or missing:
        why = why if manifest is None else f"no {', '.join(missing)} in it"
        raise CacheError(
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
