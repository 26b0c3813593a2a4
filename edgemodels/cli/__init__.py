"""`python -m edgemodels`: data stats, build, evaluate, measure, export, claims, cache, info, history, compare.

Every command prints a human summary, or one JSON object with --json (the contract scripts rely on). Errors in the
user's input exit with status 2 and one line naming what to fix; no traceback. The commands live by side:
build.py (data stats, build, export), run.py (evaluate, measure), store.py (cache, claims, info), and the history
store's own (history, compare); their shared options come from edgemodels/options.py, as the pytest plugin's do.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from typing import Sequence

from edgemodels import __version__
from edgemodels.cli import common
from edgemodels.errors import EdgeModelsError


def parser() -> common.Parser:
    from edgemodels.cli import build, run, store
    from edgemodels.store.history import cli as history_cli

    p = common.Parser(prog="edgemodels", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edgemodels {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help=common.VERBOSE_HELP)
    parents = common.parents()
    sub = p.add_subparsers(dest="command", required=True)
    for side in (build, run, store):
        side.add_parsers(sub, parents)
    history_cli.add_parsers(sub, parents[0])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _main(argv)
        sys.stdout.flush()  # here, not at exit: a reader that went away is a BrokenPipeError we can still catch
        return rc
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise  # another pipe (an SSH channel, a worker): a bug or a failure to show, not the terminal's reader
        # `cache ls | head -1`: the reader has what it wanted. Stop quietly, as `ls` or `cat` do, with their
        # status (128 + SIGPIPE); the interpreter's own flush at exit goes to /dev/null (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _reader_gone(stream) -> bool:
    """Whether `stream` is a pipe whose reading end was closed (poll reports an error on it)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # a captured stream (tests, a notebook): not a pipe
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _main(argv: Sequence[str] | None) -> int:
    from edgemodels import progress
    from edgemodels.build.data import default_spec

    args = parser().parse_args(argv)
    common.set_quiet(args)
    if getattr(args, "data", "unset") is None:
        args.data = default_spec()
    try:
        if getattr(args, "data", None) is not None:
            from edgemodels.build.data import parse_spec

            parse_spec(args.data)  # the path exists (and looks like RepLab for replab:): one line naming it
        if getattr(args, "check", None) is not None:
            args.check(args)
        if getattr(args, "json", False):
            bars_were = os.environ.get(progress.ENV)
            os.environ[progress.ENV] = "0"  # a script reads the output: no bars (build stages, evaluate)
            # Progress (Keras, converters) goes to stderr so stdout holds exactly one JSON object.
            real_stdout = sys.stdout
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    args.emit_to = real_stdout
                    return args.func(args)
            finally:  # main() may be called in-process (tests, a notebook): leave the environment as found
                if bars_were is None:
                    os.environ.pop(progress.ENV, None)
                else:
                    os.environ[progress.ENV] = bars_were
        return args.func(args)
    except EdgeModelsError as exc:  # the user's input: one line, exit 2; anything else is a bug (traceback)
        print(f"edgemodels: error: {exc}", file=sys.stderr)
        return 2
