"""--report-dir that cannot take the report: one line naming the path and the fix, checked before a run where it can
be, and an earlier report never half-overwritten (issue 23: a full disk, a read-only dir or a file in the way gave a
traceback, and no report, at the end of a whole run). Real filesystems: a small or read-only tmpfs (smallfs)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from edgemodels.errors import EdgeModelsError
from edgemodels.report.rows import Report, ReportDirError, check_report_dir


def _report(note: str = "first") -> Report:
    rep = Report("desktop", {"cpu_model": "synthetic", "note": note})
    r = rep.row("minilm-l6", "drq")
    r.size_bytes, r.accuracy = 23_456_789, 0.8123
    return rep


def _fill(fs: Path) -> None:
    """Write until the filesystem says it is full."""
    with open(fs / "pad", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (64 << 10))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert isinstance(err.value, EdgeModelsError) and "\n" not in msg and msg.endswith("--report-dir")
    return msg


def test_a_file_in_the_way_is_named_before_the_run(tmp_path):
    blocker = tmp_path / "bench-report"
    blocker.write_text("not a directory")
    for asked in (blocker, blocker / "sub"):
        with pytest.raises(ReportDirError) as err:
            check_report_dir(asked)
        assert _one_line(err) == (f"{blocker}: a file is in the way of the report directory {asked}: move it or "
                                  "pass another --report-dir")
    assert blocker.read_text() == "not a directory"


def test_a_usable_report_dir_is_created_and_left_clean(tmp_path):
    assert check_report_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert os.listdir(tmp_path / "a" / "b") == []  # the probe file is gone


def test_a_read_only_report_dir_is_named_before_the_run_and_at_write(tmp_path):
    from smallfs import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as fs:
        for target in (fs, fs / "new"):
            with pytest.raises(ReportDirError) as err:
                check_report_dir(target)
            assert _one_line(err).startswith(f"{target}: cannot write the bench report there: Read-only file system")
            with pytest.raises(ReportDirError, match="Read-only file system.*nothing written"):
                _report().write(target)


def test_a_full_disk_is_named_before_the_run(tmp_path):
    from smallfs import tmpfs

    with tmpfs(tmp_path / "small", "256k") as fs:
        (fs / "report").mkdir()
        _fill(fs)
        with pytest.raises(ReportDirError) as err:
            check_report_dir(fs / "report")
        assert "no space left on device for the bench report: free space there" in _one_line(err)
        assert os.listdir(fs / "report") == []


def test_a_full_disk_at_write_keeps_the_earlier_report_whole(tmp_path):
    from smallfs import tmpfs

    with tmpfs(tmp_path / "small", "2m") as fs:
        out = fs / "report"
        _report("first").write(out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        _fill(fs)
        with pytest.raises(ReportDirError) as err:
            _report("second").write(out)
        msg = _one_line(err)
        assert "no space left on device for the bench report" in msg and "free space there" in msg
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file, nothing half-written
        assert json.loads(before["report.json"])["machine"]["note"] == "first"
