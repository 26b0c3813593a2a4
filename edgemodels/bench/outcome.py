"""The outcome rule, once: a known outcome is an xfail quoting its record, anything else a failure.

Every suite meets the same few situations: a runtime refuses a file (or loads it and fails at its first invoke), a
file does not fit the device's memory, a model does not convert. edgemodels/study/expected.py says which of these
are known; this module turns "what happened" plus "was it expected" into the test's outcome.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from edgemodels.study.expected import Expected


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def settle(record: Expected | None, message: str) -> NoReturn:
    """xfail with `message` (and the record's reason) where `record` expects it, else fail with `message`."""
    if record is not None:
        pytest.xfail(one_line(f"{message} (expected: {record.reason})"))
    pytest.fail(one_line(message))


def runtime_refused(record: Expected | None, case_id: str, runtime: str, *, loaded: bool, error: str | None,
                    where: str = "") -> NoReturn:
    """A runtime that did not run a case's file: '<case> <where>: <runtime> refuses it (expected: <reason>):
    <its error>'. Loading and then failing at the first invoke (tflite-runtime 2.14 on w4) is the refusal where a
    record expects it, and a failure of its own otherwise."""
    at = "loads it, then fails to run it" if loaded else "refuses it"
    why = f" (expected: {record.reason})" if record is not None else ""
    message = one_line(f"{case_id}{' ' + where if where else ''}: {runtime} {at}{why}: {error or 'no error text'}")
    (pytest.xfail if record is not None else pytest.fail)(message)
