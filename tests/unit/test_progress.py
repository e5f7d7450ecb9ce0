"""Progress reports fold into the status; reports out of range are refused, not retried."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mentor.decide.progress import apply_report

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP = {"step": 10, "total_steps": 100, "loss": 2.5, "tokens_per_second": 1000.0,
        "seconds_per_step": 0.5}


def test_a_step_report_becomes_progress_with_percent_and_eta() -> None:
    progress, checkpoint = apply_report(STEP, None, None, NOW)
    assert progress is not None and checkpoint is None
    assert (progress.step, progress.percent, progress.eta_seconds) == (10, 10.0, 45)


@pytest.mark.parametrize(("change", "words"), [
    ({"step": -1}, "negative"),
    ({"step": 101}, "out of range"),
    ({"total_steps": 0}, "out of range"),
    ({"loss": float("nan")}, "not a finite number"),
    ({"loss": float("inf")}, "not a finite number"),
    ({"tokens_per_second": -5.0}, "negative"),
])
def test_a_report_out_of_range_is_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        apply_report({**STEP, **change}, None, None, NOW)
