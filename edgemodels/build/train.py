"""Fine-tuning a TF*ForSequenceClassification with Keras.

Tweets are short, so batches are bucketed by length and padded per batch (dynamic padding): on 2 CPU
cores this is several times faster than padding everything to 128.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgemodels import LABELS, progress
from edgemodels.build import models
from edgemodels.build.data import Dataset
from edgemodels.errors import EdgeModelsError

_BUCKETS = (16, 24, 32, 48, 64, 96)

RECIPE = 2
"""Bump when the training code changes its output for the same config (part of the cache key).
2: the classification head's init is seeded (weights are now bit-identical across processes)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the fine-tuned weights (it is part of the cache key)."""

    epochs: int = 3
    max_examples: int | None = None  # budget knob: a seeded stratified sample of the training split
    max_val_examples: int | None = 2000  # validation during training (early stopping)
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    class_weights: bool = False
    patience: int = 1
    seed: int = 0
    deterministic: bool = True  # tf op determinism: a rerun on the same machine type gives the same weights
    frozen_layers: int = 0  # embeddings + the bottom N encoder layers stay pretrained (models.freeze_bottom_layers)

    def __post_init__(self) -> None:
        if isinstance(self.frozen_layers, bool) or not isinstance(self.frozen_layers, int) or self.frozen_layers < 0:
            raise models.FreezeError(f"TrainConfig: frozen_layers must be an int >= 0, got {self.frozen_layers!r}")

    def key(self) -> dict[str, Any]:
        key = {**asdict(self), "recipe": RECIPE}
        if not self.frozen_layers:  # absent when unused: builds made before the field keep their cache keys
            del key["frozen_layers"]
        return key


@dataclass(frozen=True)
class TrainResult:
    validation_accuracy: float
    train_seconds: float
    epochs_run: int
    n_train: int
    n_validation: int
    history: dict[str, list[float]] = field(default_factory=dict)


def _dataset(ids: list[list[int]], targets: np.ndarray, pad: int, cfg: TrainConfig, shuffle: bool,
             weights: np.ndarray | None = None):
    """Length-bucketed, per-batch padded batches of (inputs, target[, sample weight]) in a seeded order.

    `targets`: int32 labels [n] (fine_tune) or float32 [n, 1 + classes] = label and teacher logits (distill)."""
    import tensorflow as tf

    n = len(ids)
    order = np.random.default_rng(cfg.seed).permutation(n) if shuffle else np.arange(n)

    def gen():
        for i in order:
            x = np.asarray(ids[i], np.int32)
            item = ({"input_ids": x, "attention_mask": np.ones_like(x)}, targets[i])
            yield item if weights is None else (*item, weights[i])

    spec = tf.TensorSpec([None], tf.int32)
    signature: tuple = ({"input_ids": spec, "attention_mask": spec},
                        tf.TensorSpec(targets.shape[1:], tf.as_dtype(targets.dtype)))
    padding: tuple = ({"input_ids": pad, "attention_mask": 0}, np.zeros((), targets.dtype))
    if weights is not None:
        signature, padding = (*signature, tf.TensorSpec([], tf.float32)), (*padding, np.float32(0))
    ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
    if shuffle:
        ds = ds.shuffle(min(n, 4096), seed=cfg.seed, reshuffle_each_iteration=True)
    boundaries = [b for b in _BUCKETS if b < cfg.max_length]
    return ds.bucket_by_sequence_length(
        lambda x, *_: tf.shape(x["input_ids"])[0],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[cfg.batch_size] * (len(boundaries) + 1),
        padding_values=padding,
    ).prefetch(2)


def _class_weights(labels: np.ndarray, n_classes: int = len(LABELS)) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {i: float(len(labels) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def select(train: Dataset, validation: Dataset, cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """The examples a run with cfg trains and validates on (the budget's seeded stratified samples): distillation
    computes the teacher's logits over exactly these."""
    if cfg.max_examples and len(train.examples) > cfg.max_examples:
        train = train.sample(cfg.max_examples, seed=cfg.seed)
    if cfg.max_val_examples and len(validation.examples) > cfg.max_val_examples:
        validation = validation.sample(cfg.max_val_examples, seed=cfg.seed)
    return train, validation


def _fit(model, tokenizer, train: Dataset, validation: Dataset, cfg: TrainConfig, make_targets, loss, metrics,
         weighted: bool) -> TrainResult:
    """The one Keras fit both fine_tune and distill run: seeded, op-deterministic, same data order and schedule.

    `make_targets(split, dataset)` gives a split's targets; `weighted`: class weights as per-example sample weights
    (Keras's class_weight reads a 2-D target as one-hot, so distillation cannot use it)."""
    import tf_keras
    from transformers import create_optimizer

    import tensorflow as tf

    tf_keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:  # baselines gate on accuracy: a rerun must not drift
        tf.config.experimental.enable_op_determinism()
    train, validation = select(train, validation, cfg)
    if cfg.frozen_layers:
        models.freeze_bottom_layers(model, cfg.frozen_layers)
    pad = models.pad_id(tokenizer)
    y_train = train.label_ids()
    class_weights = _class_weights(y_train, len(train.labels)) if cfg.class_weights else None
    sample_weights = None
    if weighted and class_weights:
        sample_weights = np.array([class_weights[int(y)] for y in y_train], np.float32)
    train_ds = _dataset(models.encode(tokenizer, train.texts(), cfg.max_length), make_targets("train", train),
                        pad, cfg, True, sample_weights)
    val_ds = _dataset(models.encode(tokenizer, validation.texts(), cfg.max_length),
                      make_targets("validation", validation), pad, cfg, False)
    steps = cfg.epochs * int(np.ceil(len(y_train) / cfg.batch_size))
    optimizer, _ = create_optimizer(
        init_lr=cfg.learning_rate, num_train_steps=steps,
        num_warmup_steps=int(cfg.warmup_fraction * steps), weight_decay_rate=cfg.weight_decay,
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    stop = tf_keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=cfg.patience, restore_best_weights=True
    )
    start = time.perf_counter()
    hist = model.fit(
        train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=[stop],
        class_weight=class_weights if not weighted else None,
        verbose=1 if progress.enabled() else 2,  # Keras's own bar (rate, ETA) where someone watches; else a line an epoch
    )
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return TrainResult(
        validation_accuracy=max(history.get("val_accuracy", [float("nan")])),
        train_seconds=round(seconds, 2),
        epochs_run=len(history.get("loss", [])),
        n_train=len(y_train),
        n_validation=len(validation.examples),
        history=history,
    )


def fine_tune(model, tokenizer, train: Dataset, validation: Dataset, cfg: TrainConfig) -> TrainResult:
    """Fit with AdamW + linear warmup/decay, early stopping on validation accuracy (best weights kept)."""
    import tf_keras

    return _fit(model, tokenizer, train, validation, cfg,
                lambda split, ds: ds.label_ids().astype(np.int32),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")], weighted=False)


# ---------------------------------------------------------------- knowledge distillation

DISTILL_RECIPE = 1
"""Bump when the distillation code changes its output for the same configs (part of a distilled model's key)."""


class DistillError(EdgeModelsError, ValueError):
    """A distillation that cannot run as asked; the message names the model or setting and the fix."""


@dataclass(frozen=True)
class DistillConfig:
    """How a student learns from its teacher (part of the student's cache key): the loss is
    alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)), Hinton et al. 2015;
    the T^2 keeps the soft term's gradients on the scale of the hard one's as T changes."""

    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label cross-entropy; 1 - alpha on the teacher's soft targets

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise DistillError(f"DistillConfig: temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise DistillError(f"DistillConfig: alpha must be in [0, 1], got {self.alpha!r}")

    def key(self) -> dict[str, Any]:
        return {**asdict(self), "recipe": DISTILL_RECIPE}


@dataclass(frozen=True)
class TeacherLogits:
    """The teacher's logits over the student's (budget-sampled) training and validation examples, in their order."""

    train: np.ndarray  # float32 [n_train, classes]
    validation: np.ndarray  # float32 [n_validation, classes]


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                   deterministic: bool = True) -> np.ndarray:
    """A Keras classifier's logits per text, in order: batches of similar length, each padded to its longest (as
    in training), so a teacher pass over the training split costs about one epoch's forward passes."""
    if deterministic:  # the student's targets: a rerun must reproduce them bit for bit
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    ids = models.encode(tokenizer, texts, max_length)
    pad = models.pad_id(tokenizer)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    out: np.ndarray | None = None
    for lo in range(0, len(order), batch_size):
        batch = order[lo:lo + batch_size]
        width = max(len(ids[i]) for i in batch)
        x = np.full((len(batch), width), pad, np.int32)
        mask = np.zeros((len(batch), width), np.int32)
        for row, i in enumerate(batch):
            x[row, :len(ids[i])], mask[row, :len(ids[i])] = ids[i], 1
        logits = np.asarray(model({"input_ids": x, "attention_mask": mask}, training=False).logits, np.float32)
        if out is None:
            out = np.zeros((len(ids), logits.shape[1]), np.float32)
        out[batch] = logits
    return out if out is not None else np.zeros((0, 0), np.float32)


def kd_loss(kd: DistillConfig):
    """The per-example distillation loss on targets [label, teacher logits...] and the student's logits."""
    import tensorflow as tf

    t = float(kd.temperature)

    def distillation(y, logits):
        labels = tf.cast(y[:, 0], tf.int32)
        teacher, logits = y[:, 1:], tf.cast(logits, tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        log_p = tf.nn.log_softmax(teacher / t)
        kl = tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(logits / t)), axis=-1)
        return kd.alpha * ce + (1.0 - kd.alpha) * (t * t) * kl

    return distillation


def _label_accuracy(y, logits):
    import tensorflow as tf

    return tf.cast(tf.equal(tf.cast(y[:, 0], tf.int64), tf.argmax(logits, axis=-1)), tf.float32)


def _teacher_agreement(y, logits):
    import tensorflow as tf

    return tf.cast(tf.equal(tf.argmax(y[:, 1:], axis=-1), tf.argmax(logits, axis=-1)), tf.float32)


def distill(student, tokenizer, teacher_logits: TeacherLogits, train: Dataset, validation: Dataset,
            cfg: TrainConfig, kd: DistillConfig) -> TrainResult:
    """fine_tune with the teacher's soft targets: same optimizer, schedule, data order and early stopping on
    validation accuracy; the history adds `agreement` / `val_agreement` (student argmax == teacher argmax).

    `teacher_logits` must be over `select(train, validation, cfg)`, in order (the teacher tokenizes with its own
    vocabulary: logits are per example, so the two tokenizers need not agree)."""
    import tf_keras

    picked = dict(zip(("train", "validation"), select(train, validation, cfg)))
    given = {"train": teacher_logits.train, "validation": teacher_logits.validation}
    for split, ds in picked.items():
        if given[split].shape != (len(ds.examples), len(ds.labels)):
            raise DistillError(f"{ds.name}: teacher logits for {split} have shape {given[split].shape}, expected "
                               f"({len(ds.examples)}, {len(ds.labels)}); compute them over train.select(...) of "
                               "the same data and TrainConfig")

    def targets(split: str, ds: Dataset) -> np.ndarray:
        return np.concatenate([ds.label_ids()[:, None].astype(np.float32), given[split]], axis=1)

    metrics = [tf_keras.metrics.MeanMetricWrapper(_label_accuracy, name="accuracy"),
               tf_keras.metrics.MeanMetricWrapper(_teacher_agreement, name="agreement")]
    return _fit(student, tokenizer, train, validation, cfg, targets, kd_loss(kd), metrics, weighted=True)


SCALES: dict[str, TrainConfig] = {
    # Minutes on 2 CPU cores: a reduced but real fine-tune (same code path as `paper`).
    "ci": TrainConfig(epochs=2, max_examples=3000, max_val_examples=1000, max_length=64, learning_rate=1e-4),
    # The whole training split, as the paper did. One pass: on 2 CPU cores an epoch over RepLab's 24,140
    # training tweets takes about ten minutes for MiniLM-L6 and most of an hour for MPNet-base
    # (docs/measurements.md#paper-training-time). Both get the same budget, so the large/compact comparison is
    # fair; with one epoch nothing is selected on the validation split that accuracy is then reported on.
    "paper": TrainConfig(epochs=1, max_examples=None, max_val_examples=None, max_length=128, learning_rate=5e-5),
}


def scale(name: str) -> TrainConfig:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; valid: {', '.join(SCALES)}") from None
