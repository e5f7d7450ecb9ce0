"""Progress reports from the trainers: what a report may hold, and what it changes in the status.

Pure: mentor.controller.server receives the reports (after mentor.controller.tokens has checked
who sent them) and writes the status this module folds them into.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from mentor.api.status import MAX_EVALS_KEPT, CheckpointStatus, EvalPoint, Progress
from mentor.decide.times import format_time


def _check(report: dict[str, Any]) -> None:
    step = int(report["step"])
    if step < 0:
        raise ValueError(f"step {step} is negative")
    if "loss" in report:
        total = int(report["total_steps"])
        if total < 1 or step > total:
            raise ValueError(f"step {step} of {total} is out of range")
    for name in ("loss", "eval_loss", "tokens_per_second", "seconds_per_step", "mfu"):
        if name in report and report[name] is not None:
            value = float(report[name])
            if not math.isfinite(value):
                raise ValueError(f"{name} is {value}, not a finite number")
            if name in ("tokens_per_second", "seconds_per_step", "mfu") and value < 0:
                raise ValueError(f"{name} is negative")


def apply_report(report: dict[str, Any], progress: Progress | None,
                 checkpoint: CheckpointStatus | None,
                 now: dt.datetime) -> tuple[Progress | None, CheckpointStatus | None]:
    """Fold one trainer report (a metrics record) into the status' progress and checkpoint.

    A report out of range raises ValueError (the endpoint answers 400): written as it is, it
    would be refused by the status schema and retried for ever.
    """
    _check(report)
    stamp = format_time(now)
    if "checkpoint" in report:
        return progress, CheckpointStatus(step=int(report["step"]), uri=str(report["checkpoint"]),
                                          time=stamp)
    current = progress.model_copy() if progress else Progress()
    if "eval_loss" in report:
        current.eval_loss = float(report["eval_loss"])
        point = EvalPoint(step=int(report["step"]), loss=current.eval_loss)
        kept = [e for e in current.evals if e.step != point.step]  # a resumed run evaluates again
        current.evals = [*kept, point][-MAX_EVALS_KEPT:]
    if "loss" in report:
        step, total = int(report["step"]), int(report["total_steps"])
        tokens_per_second = float(report["tokens_per_second"])
        current.step, current.total_steps = step, total
        current.percent = round(100 * step / total, 1) if total else None
        current.shown = f"{current.percent:.0f}%" if current.percent is not None else None
        current.loss = float(report["loss"])
        current.tokens_per_second = round(tokens_per_second, 1)
        seconds_per_step = report.get("seconds_per_step")
        if seconds_per_step:
            current.eta_seconds = int((total - step) * float(seconds_per_step))
    current.last_update_time = stamp
    return current, checkpoint
