"""The one table of options the CLI and the pytest plugin share: each is defined, parsed and checked here once.

Both front ends are argparse underneath (pytest's addoption is argparse's add_argument), so an option's converter
runs at parse time in both: a bad value (`--threads 0`, `--max-examples -5`, an unknown `--data` form) stops the run
with one usage line naming the option, before anything is collected or built. What needs more than the value alone
(does the data file have rows, is the cache writable) is checked by the front end right after parsing.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def _number(value: str, kind, what: str, ok) -> Any:
    try:
        n = kind(value)
    except ValueError:
        n = None
    if n is None or (isinstance(n, float) and math.isnan(n)) or not ok(n):
        raise argparse.ArgumentTypeError(f"must be {what}, not {value!r}")
    return n


def positive_int(value: str) -> int:
    return _number(value, int, "a positive integer", lambda n: n >= 1)


def non_negative_int(value: str) -> int:
    return _number(value, int, "an integer >= 0", lambda n: n >= 0)


def positive_float(value: str) -> float:
    return _number(value, float, "a positive number", lambda n: 0 < n < math.inf)


def unit_float(value: str) -> float:
    return _number(value, float, "a number from 0 to 1", lambda n: 0 <= n <= 1)


def fraction(value: str) -> float:
    return _number(value, float, "a number strictly between 0 and 1", lambda n: 0 < n < 1)


def seq_length(value: str) -> int:
    return _number(value, int, "an integer >= 2", lambda n: n >= 2)


def seq(value: str) -> int | None:
    """--seq: a fixed length >= 2, or 'dynamic' (None)."""
    return None if value == "dynamic" else _number(value, int, "an integer >= 2 or 'dynamic'", lambda n: n >= 2)


def data_spec(value: str) -> str:
    """A data spec of a known form (builtin, replab:DIR, csv:FILE); kept as the string given. Whether its path
    exists and holds usable rows is checked right after parsing (edgemodels.build.data.check_loadable), where the
    message can name the file."""
    kind, sep, rest = value.strip().partition(":")
    if value.strip() != "builtin" and (not sep or kind.strip().lower() not in ("replab", "csv") or not rest.strip()):
        from edgemodels.build.data.spec import SPEC_FORMS

        raise argparse.ArgumentTypeError(f"unknown data spec {value!r}; valid forms: {SPEC_FORMS}")
    return value


def remote_url(value: str) -> str:
    """ssh://[user@]host[:port] or labgrid://PLACE (checked in full where the target is made)."""
    if not value.startswith(("ssh://", "labgrid://")):
        raise argparse.ArgumentTypeError(f"{value!r}: expected ssh://[user@]host[:port] (e.g. ssh://pi@raspberrypi."
                                         "local) or labgrid://PLACE")
    return value


def csv_names(value: str) -> tuple[str, ...]:
    """a,b,c -> ('a', 'b', 'c'); an empty list is an error (it would silently select nothing)."""
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r}: give comma-separated names")
    return names


@dataclass(frozen=True)
class Option:
    """One option as both front ends see it. `pytest_flag` renames it where pytest owns the CLI name."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    action: str | None = None
    pytest_flag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"help": self.help, "default": self.default, **self.extra}
        if self.action:
            kw["action"] = self.action
        else:
            kw.update({k: v for k, v in (("type", self.type), ("choices", self.choices), ("metavar", self.metavar))
                       if v is not None})
        return kw


def _runtimes() -> tuple[str, ...]:
    from edgemodels.run.runtime import RUNTIMES

    return RUNTIMES


def _modes() -> tuple[str, ...]:
    from edgemodels.build.modes import MODES

    return tuple(MODES)


TABLE: dict[str, Option] = {o.flag: o for o in (
    Option("--device", "target device: desktop, pi3, pi4, pi5, native or a conftest.py's "
                       "(default: the Pi this runs on, else desktop)", metavar="NAME"),
    Option("--data", "data spec: builtin | replab:DIR | csv:FILE[?labels=0:a,1:b] (default $EDGEMODELS_DATA or "
                     "builtin)", type=data_spec, metavar="SPEC"),
    Option("--cache", "artifact cache directory (default $EDGEMODELS_CACHE or the user cache dir)", type=Path,
           metavar="DIR", pytest_flag="--edge-cache"),
    Option("--scale", "the bench matrix: smoke (tiny-bert, a minute), ci (the default: reduced training budget), "
                      "paper (the study, hours)", default="ci", choices=("smoke", "ci", "paper")),
    Option("--runtime", "TFLite runtime (default: the device's own where installed, else the first found)",
           choices=_runtimes()),
    Option("--threads", "interpreter threads (default: the device's cores, capped by the host's)", type=positive_int,
           metavar="N"),
    Option("--models", "comma-separated models to keep from the scale's matrix, or model sources (dir:PATH, "
                       "hf:ORG/NAME, tflite:PATH); an unknown name is an error listing the valid ones",
           type=csv_names, metavar="A,B"),
    Option("--modes", f"comma-separated quantization modes to keep: {', '.join(_modes())} (those in the scale's matrix; "
                      "a dir:/hf: model is built in each)", type=csv_names, metavar="A,B"),
    Option("--tokenizer", "for a ready .tflite (tflite:PATH): its tokenizer directory (default: tokenizer/ beside "
                          "the file)", metavar="DIR"),
    Option("--labels", "for a ready .tflite: its class names in output order (default: an edgemodels manifest.json "
                       "beside it)", metavar="A,B,..."),
    Option("--max-examples", "cap the scale's training budget at N examples (shrunk-budget experiments)",
           type=positive_int, metavar="N"),
    Option("--remote", "run on this device over SSH (ssh://[user@]host[:port]) or a labgrid place "
                       "(labgrid://PLACE); this host builds and uploads", type=remote_url, metavar="URL"),
    Option("--remote-python", "python on the remote (default python3)", metavar="CMD"),
    Option("--remote-identity", "private key file for the SSH login", metavar="KEY"),
    Option("--remote-dir", "content-addressed upload directory on the remote (default ~/.cache/edgemodels/remote)",
           metavar="DIR"),
    Option("--remote-known-hosts", "known_hosts for the remote's host key (default ~/.ssh/known_hosts; a new host "
                                   "is added, a changed key is refused)", metavar="FILE"),
    Option("--history", "the results history every run is appended to: a file path or URL (sqlite:///FILE, "
                        "postgresql://USER@HOST/DB), or 'off'; default $EDGEMODELS_HISTORY, else "
                        "~/.local/share/edgemodels/history.sqlite (docs/history.md)", metavar="URL"),
    Option("--connect-timeout", "seconds to wait for the remote's SSH answer (default 10)", type=positive_float,
           default=10.0, metavar="S"),
)}
"""Every shared option, by its CLI flag."""

REMOTE = ("--remote", "--remote-python", "--remote-identity", "--remote-dir", "--remote-known-hosts",
          "--connect-timeout")


def add_to_parser(parser: argparse.ArgumentParser, *flags: str, **overrides: dict[str, Any]) -> None:
    """Add the named options to an argparse (sub)parser; `overrides` by dest, e.g. scale={"choices": (...)}."""
    for flag in flags:
        opt = TABLE[flag]
        parser.add_argument(flag, **{**opt.kwargs(), **overrides.get(flag.lstrip("-").replace("-", "_"), {})})


def add_to_pytest(group, *flags: str) -> None:
    """Add the named options to a pytest option group, under their pytest names."""
    for flag in flags:
        opt = TABLE[flag]
        group.addoption(opt.pytest_flag or flag, **opt.kwargs())
