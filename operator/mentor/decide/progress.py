"""Progress reports from the trainers: what a report may hold, and what it changes in the status.

Pure: mentor.controller.server receives the reports (after mentor.controller.tokens has checked
who sent them) and writes the status this module folds them into. Every bound here is one the
status schema (or int64) would enforce later: a report that passed here and failed there would
be retried against the API server for ever, so it is refused here, with a 400.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mentor.api.status import MAX_EVALS_KEPT, CheckpointStatus, EvalPoint, Progress, TrackingStatus
from mentor.decide.times import format_time

MAX_METRICS = 16  # named metrics a custom trainer may report, each kept in the status
METRIC_NAME = r"^[a-zA-Z_][a-zA-Z0-9_.]{0,63}$"
MAX_STEP = 2**40  # far beyond any schedule (steps <= 1e8), far inside int64 and JSON's 2**53
MAX_ETA_SECONDS = 10 * 365 * 86400


class Report(BaseModel):
    """One trainer report (a metrics record); fields the operator does not use are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    # The UID of the job whose pod sent it (MENTOR_JOB_UID): the token is the namespace's, so
    # this is what keeps a deleted job's last pods from reporting into a new job of its name.
    uid: str | None = Field(default=None, max_length=64)
    step: int = Field(ge=0, le=MAX_STEP)
    total_steps: int | None = Field(default=None, ge=1, le=MAX_STEP)
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = Field(default=None, ge=0, le=1e15)
    seconds_per_step: float | None = Field(default=None, ge=0, le=MAX_ETA_SECONDS)
    mfu: float | None = Field(default=None, ge=0, le=100)
    checkpoint: str | None = Field(default=None, min_length=1, max_length=2048)
    objective: float | None = None  # a trial's objective metric (mentor.builders.trials)
    metrics: dict[Annotated[str, Field(pattern=METRIC_NAME)], float] | None = Field(
        default=None, max_length=MAX_METRICS)
    # Where the run is recorded, and whether the tracking server answers (spec.tracking).
    tracking: TrackingStatus | None = None
    # The trainer asks for the ledger's GPU-hours (to log them beside its metrics).
    ledger: bool = False

    @model_validator(mode="after")
    def _in_range(self) -> Report:
        if self.total_steps is not None and self.step > self.total_steps:
            raise ValueError(f"step {self.step} of {self.total_steps} is out of range")
        return self

    def eta_seconds(self) -> int | None:
        if not self.seconds_per_step or self.total_steps is None:
            return None
        eta = (self.total_steps - self.step) * self.seconds_per_step
        return int(eta) if eta <= MAX_ETA_SECONDS else None


def parse_report(body: Any) -> Report:
    """The report, checked; ValueError (pydantic's included) names what is wrong."""
    return Report.model_validate(body)


def apply_report(report: Report, progress: Progress | None,
                 checkpoint: CheckpointStatus | None,
                 now: dt.datetime) -> tuple[Progress | None, CheckpointStatus | None]:
    """Fold one checked report into the status' progress and checkpoint."""
    stamp = format_time(now)
    if report.checkpoint is not None:
        return progress, CheckpointStatus(step=report.step, uri=report.checkpoint, time=stamp)
    current = progress.model_copy() if progress else Progress()
    if report.tracking is not None:
        current.tracking = report.tracking
    if report.eval_loss is not None:
        current.eval_loss = report.eval_loss
        point = EvalPoint(step=report.step, loss=report.eval_loss)
        kept = [e for e in current.evals if e.step != point.step]  # a resumed run evaluates again
        current.evals = [*kept, point][-MAX_EVALS_KEPT:]
    if report.objective is not None:
        current.objective = report.objective
        point = EvalPoint(step=report.step, loss=report.objective)
        kept = [e for e in current.objectives if e.step != point.step]
        current.objectives = [*kept, point][-MAX_EVALS_KEPT:]
    if report.metrics:
        current.metrics = {**current.metrics, **report.metrics}
        if len(current.metrics) > MAX_METRICS:  # the newest names win; the status stays small
            current.metrics = dict(list(current.metrics.items())[-MAX_METRICS:])
    if report.loss is not None or (report.metrics and report.total_steps is not None):
        current.step = report.step
        if report.total_steps is not None:
            current.total_steps = report.total_steps
            current.percent = round(100 * report.step / report.total_steps, 1)
            current.shown = f"{current.percent:.0f}%"
        current.loss = report.loss if report.loss is not None else current.loss
        current.tokens_per_second = round(report.tokens_per_second or 0.0, 1)
        current.eta_seconds = report.eta_seconds() if report.seconds_per_step else \
            current.eta_seconds
    current.last_update_time = stamp
    return current, checkpoint
