"""edgemodels: build, compress and benchmark transformer text classifiers for edge devices.

Importing the package is deliberately cheap (no TensorFlow import) so that the runtime side
(`edgemodels.run.runtime`) also works on a device, or inside an emulated ARM user-land, where only
numpy and a TFLite runtime are installed.
"""

__version__ = "0.1.0"

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Polarity classes, in the order of the classifier's logits."""
