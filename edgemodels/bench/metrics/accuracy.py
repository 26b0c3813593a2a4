"""Accuracy's one rule beside the floors (edgemodels/study/criteria.py): a random init's accuracy is meaningless."""

from __future__ import annotations

import pytest

from edgemodels.build import models


def require_trained(s, art, case) -> None:
    """Fail where pretrained weights should be here but the model ended up a random init, else skip; a ready .tflite
    whose manifest says it was never trained skips (its accuracy means nothing)."""
    if art.manifest.get("trained"):
        return
    if s.ready_file(case) is not None:
        pytest.skip(f"{case.id}: its edgemodels manifest says it was not trained (a random init): no accuracy to check")
    verdict = models.random_init_verdict(case.model, art.manifest.get("weights_trail") or ())
    (pytest.fail if verdict.fault else pytest.skip)(f"{case.id} is a random init: {verdict.reason}")
