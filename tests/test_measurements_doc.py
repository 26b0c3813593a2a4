"""Every `docs/measurements.md#<id>` the code cites names a section of that page.

Why: constants cite the measurement behind them by id instead of carrying dated figures; a renamed heading or a
mistyped id would leave a constant pointing at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "measurements.md"
CITE = re.compile(r"docs/measurements\.md#([A-Za-z0-9_-]+)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def _citations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root in ("edgemodels", "bench", "tests"):
        for path in sorted((REPO / root).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for ident in CITE.findall(line):
                    found.setdefault(ident, []).append(f"{path.relative_to(REPO)}:{n}")
    return found


def test_every_cited_measurement_id_is_a_section():
    anchors = _anchors(PAGE.read_text(encoding="utf-8"))
    cited = _citations()
    assert len(cited) >= 10  # the scan finds the citations (a broken pattern would pass on nothing)
    missing = {i: where for i, where in cited.items() if i not in anchors}
    assert not missing, f"docs/measurements.md has no section for: {missing}"


def test_the_anchor_rule_matches_github():
    assert _anchors("### arm-diff\n## Where a cold `.ci/run` spent its time (2026-11-25)\n") == {
        "arm-diff", "where-a-cold-cirun-spent-its-time-2026-11-25"}
