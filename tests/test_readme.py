"""Every command the README shows parses: a renamed option or subcommand breaks this test, not a newcomer.

The README's commands are run for real by CI (`.ci/run`: setup, `pytest tests/`, the bench per device, build,
evaluate, claims, data stats); here each `python -m edgemodels ...` line is parsed by the real CLI parser and
each `pytest bench/ ...` line's options are checked against the options pytest actually registers.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edgemodels import cli, devices
from edgemodels.study import matrix as suite

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *(REPO / "docs" / f"{page}.md" for page in (
    "reference", "pi", "gating", "architecture", "limitations", "results", "history", "lab")))


def _commands(prefix: str) -> list[str]:
    """Shell commands starting with `prefix` in the docs' fenced code blocks (continuations joined)."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                m = re.search(re.escape(prefix) + r".*", line)
                if m:
                    out.append(m.group(0))
    return out


def _argv(command: str, prefix: str) -> list[str]:
    rest = command[len(prefix):].replace("$dev", "desktop").replace("$D", "replab:DIR").replace("$REPLAB", "replab:DIR")
    return shlex.split(rest)


def test_the_readme_shows_cli_and_bench_commands():
    assert len(_commands("python -m edgemodels ")) >= 4
    assert len(_commands("pytest bench/")) >= 6


@pytest.mark.parametrize("command", _commands("python -m edgemodels "))
def test_cli_command_in_docs_parses(command):
    argv = _argv(command, "python -m edgemodels ")
    try:
        cli.parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"README command no longer parses (exit {exc.code}): {command}")


@pytest.fixture(scope="module")
def bench_options() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", out.stdout))


@pytest.mark.parametrize("command", _commands("pytest bench/"))
def test_bench_command_in_docs_uses_real_options(command, bench_options):
    argv = _argv(command, "pytest bench/")
    for arg in argv:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            assert name in bench_options, f"{name} is not a pytest option any more: {command}"
            if name == "--device" and value:
                assert value in devices.NAMES, command
            if name == "--scale" and value:
                assert value in suite.SUITE_SCALES, command
