"""Recorded values: JSON where possible, bounded repr otherwise, secrets redacted."""

from __future__ import annotations

import json
import threading

from auto_workflow._history._records import ErrorRecord
from auto_workflow._history._values import (
    MAX_TRACEBACK_CHARS,
    MAX_VALUE_CHARS,
    recorded_args,
    recorded_mapping,
    redact,
    redacted_error,
    register_secret,
)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_json_values_round_trip_and_others_become_their_repr() -> None:
    recorded = json.loads(recorded_mapping({"n": 1, "l": (1, "a"), "s": {3}, "bad": _BadRepr()}))
    bad = recorded.pop("bad")
    assert recorded == {"n": 1, "l": [1, "a"], "s": "{3}"}
    assert bad.startswith("<_BadRepr")  # a failing __repr__ still names the type


def test_long_values_are_cut_to_the_bound() -> None:
    (recorded,) = json.loads(recorded_args([list(range(100_000))]))
    assert isinstance(recorded, str)
    assert len(recorded) <= MAX_VALUE_CHARS


def test_a_secret_is_redacted_inside_strings_keys_and_nested_values() -> None:
    register_secret("tok-AAA")
    register_secret("tok-AAA-longer")
    register_secret("")  # ignored
    assert redact("x tok-AAA-longer y tok-AAA") == "x *** y ***"
    recorded = json.loads(recorded_mapping({"tok-AAA": {"deep": ["tok-AAA"]}}))
    assert recorded == {"***": {"deep": ["***"]}}


def test_a_secret_straddling_the_length_bound_leaves_no_visible_prefix() -> None:
    register_secret("straddle-SECRET-value")

    class Long:
        def __repr__(self) -> str:
            return "x" * (MAX_VALUE_CHARS - 5) + "straddle-SECRET-value"

    (recorded,) = json.loads(recorded_args([Long()]))
    assert "strad" not in recorded


def test_errors_keep_the_end_of_long_tracebacks_redacted() -> None:
    register_secret("tb-secret")
    text = "frame\n" * 10_000 + "ValueError: tb-secret"
    error = ErrorRecord(type="ValueError", message="tb-secret", traceback=text)
    type_, message, traceback = redacted_error(error)
    assert (type_, message) == ("ValueError", "***")
    assert traceback is not None
    assert len(traceback) == MAX_TRACEBACK_CHARS
    assert traceback.endswith("ValueError: ***")
    assert redacted_error(None) == (None, None, None)


def test_secrets_registered_from_many_threads_are_all_redacted() -> None:
    secrets = [f"thread-secret-{i:03d}" for i in range(64)]
    threads = [threading.Thread(target=register_secret, args=(s,)) for s in secrets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redact(" ".join(secrets)) == " ".join(["***"] * 64)
