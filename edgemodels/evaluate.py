"""Accuracy of a .tflite run through the interpreter (not of the TF model it came from).

Needs only numpy, `tokenizers` and a TFLite runtime, so the same code measures accuracy on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemodels import LABELS, models, runtime
from edgemodels.convert import to_feeds
from edgemodels.data import Dataset


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    macro_f1: float
    n: int
    majority_accuracy: float
    runtime: str
    runtime_version: str
    confusion: tuple[tuple[int, ...], ...]  # rows = true label, cols = predicted, order LABELS

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n,
                "majority_accuracy": self.majority_accuracy,
                "runtime": f"{self.runtime} {self.runtime_version}",
                "labels": list(LABELS), "confusion": [list(r) for r in self.confusion]}


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(accuracy, macro-F1 over LABELS, confusion matrix). A class never predicted nor present scores 0."""
    k = len(LABELS)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(tp.sum() / max(cm.sum(), 1)), float(f1.mean()), cm


def encode_dataset(dataset: Dataset, tokenizer_dir: Path, max_length: int) -> list[list[int]]:
    return models.encode(models.load_tokenizer(tokenizer_dir), dataset.texts(), max_length)


def predict(model: runtime.TFLiteModel, ids: list[list[int]], pad: int) -> np.ndarray:
    seq = model.fixed_length
    return np.array([int(np.argmax(model.run(to_feeds(x, seq, pad)))) for x in ids], dtype=np.int64)


def evaluate(
    tflite: Path,
    dataset: Dataset,
    *,
    tokenizer_dir: Path,
    max_length: int,
    pad: int,
    runtime_name: str | None = None,
    threads: int | None = None,
) -> Accuracy:
    model = runtime.load(tflite, runtime=runtime_name, num_threads=threads)
    ids = encode_dataset(dataset, tokenizer_dir, model.fixed_length or max_length)
    pred = predict(model, ids, pad)
    acc, f1, cm = scores(dataset.label_ids(), pred)
    return Accuracy(acc, f1, len(ids), dataset.majority_accuracy(), model.runtime_name,
                    model.runtime_version, tuple(tuple(int(v) for v in r) for r in cm))
