"""The lab's pytest options: `--lab PLACE[,PLACE...]`, `--lab-wait S` and (without labgrid's own plugin)
`--lg-coordinator`. `--remote labgrid://PLACE` itself is handled where the bench plugin builds its --remote target
(edgemodels.lab.places.remote_target); `--lab` replaces pytest's main loop with edgemodels.lab.matrix.

Enabled by the repository's root conftest.py beside edgemodels.bench.plugin; labgrid is imported only when a place is used.
"""

from __future__ import annotations

import pytest

from edgemodels.lab import places as lab


def pytest_addoption(parser: pytest.Parser, pluginmanager) -> None:
    g = parser.getgroup("edgemodels-lab", "edgemodels lab (labgrid places; pip install '.[lab]')")
    g.addoption("--lab", default=None, metavar="PLACE[,PLACE...]",
                help="run the bench on each labgrid place at once (build once here, then one "
                     "`--remote labgrid://PLACE` run per place), and merge their reports into --report-dir")
    g.addoption("--lab-wait", default=lab.DEFAULT_WAIT_S, type=float, metavar="S",
                help=f"how long to wait for a place someone else holds, then stop naming the holder "
                     f"(default {lab.DEFAULT_WAIT_S:g}; 0: stop at once)")
    if not pluginmanager.has_plugin("labgrid"):  # labgrid's own pytest plugin declares it (same meaning)
        g.addoption("--lg-coordinator", default=None, dest="lg_coordinator", metavar="HOST:PORT",
                    help="labgrid coordinator (default $LG_COORDINATOR, else 127.0.0.1:20408)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config):
    if not config.getoption("--lab"):
        return None
    from edgemodels.lab import matrix as labrun

    return labrun.run(config)


def pytest_configure(config: pytest.Config) -> None:
    remote = config.getoption("--remote", None)
    if lab.is_lab_url(remote) and (getattr(config.option, "dist", "no") != "no" or hasattr(config, "workerinput")):
        raise pytest.UsageError(f"--remote {remote}: one session holds the place; pytest-xdist workers (-n) would "
                                "each wait for it: run without -n")
