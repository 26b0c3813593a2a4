"""What every command shares: the one-line usage error, quiet start-up, and printing one JSON object or a summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, NoReturn

from edgemodels import options
from edgemodels.errors import EdgeModelsError

VERBOSE_HELP = ("show third-party start-up output (TensorFlow/absl/CUDA lines, the TFLite runtime's delegate "
                "messages); also EDGEMODELS_QUIET=0")


class OptionError(EdgeModelsError):
    """Options that parse but cannot work together (e.g. --seq beyond the model's positions)."""


class Parser(argparse.ArgumentParser):
    """argparse with one line for a bad option, as for every other input error: 'edgemodels: error: ...', exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"edgemodels: error: {message} (see {self.prog} --help)\n")


def parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(common: -v, --json, --cache; split: --data, --seed, --val-fraction) for the commands' parents=[...]."""
    common = argparse.ArgumentParser(add_help=False)
    # also after the command (`edgemodels build ... -v`); SUPPRESS keeps a -v given before it
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    options.add_to_parser(common, "--cache")
    split = argparse.ArgumentParser(add_help=False)
    options.add_to_parser(split, "--data")
    split.add_argument("--seed", type=options.non_negative_int, default=0)
    split.add_argument("--val-fraction", type=options.fraction, default=0.1,
                       help="share of the training material held out for validation, in (0, 1) (default 0.1)")
    return common, split


def quiet_tf(args, *, start_tf: bool = True) -> None:
    """Keep TensorFlow's, absl's and transformers' start-up lines off the terminal unless -v/--verbose.

    TF_CPP_MIN_LOG_LEVEL only reaches lines logged after absl::InitializeLog; the oneDNN and CUDA probe lines come
    before it, straight to fd 2, at import and at the first device query. So TensorFlow is started here with fd 2 set
    aside (edgemodels.quiet), before the command needs it.
    """
    from edgemodels import quiet

    if getattr(args, "verbose", False) or not quiet.quiet():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not start_tf:
        return
    with quiet.native_stderr():
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) logs here, not at import
        except ImportError:
            return  # the command itself says how to install it
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "Some layers ... were not used", deprecation notices


def set_quiet(args) -> None:
    """Quiet by default (an exported EDGEMODELS_QUIET wins); -v shows everything, in worker processes too."""
    from edgemodels import quiet

    if args.verbose:
        quiet.set_quiet(False)
    elif quiet.ENV not in os.environ:
        quiet.set_quiet(True)


def emit(args, obj: dict[str, Any], human: str | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str), file=getattr(args, "emit_to", sys.stdout))
    else:
        print(human if human is not None else json.dumps(obj, indent=2, default=str))
