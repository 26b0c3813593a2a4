"""Enables the edgemodels pytest plugin (options --device, --data, --scale, ...; fixtures; the report)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["edgemodels.bench.plugin", "edgemodels.lab.plugin"]
