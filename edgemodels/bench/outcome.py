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


def refusal_message(case_id: str, runtime: str, loaded: bool, error: str | None, where: str = "") -> str:
    """'<case> <where>: <runtime> refuses it: <error>' or '... loads it, then fails to run it: ...'."""
    at = "loads it, then fails to run it" if loaded else "refuses it"
    return f"{case_id}{' ' + where if where else ''}: {runtime} {at}: {one_line(error or 'no error text')}"


def runtime_refused(record: Expected | None, case_id: str, runtime: str, *, loaded: bool, error: str | None,
                    where: str = "") -> NoReturn:
    """A runtime that did not run a case's file. Not loading at all is always a refusal; loading and then failing
    to run is one only where a record expects this runtime to refuse the case (tflite-runtime 2.14 loads w4 and
    fails at the first invoke), otherwise it is a failure of its own."""
    settle(record, refusal_message(case_id, runtime, loaded, error, where))
