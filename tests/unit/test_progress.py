"""Progress reports fold into the status; reports out of range are refused, not retried."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mentor.api.status import JobStatus
from mentor.controller.tokens import authorized, token_for
from mentor.decide.progress import apply_report, parse_report

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP = {"step": 10, "total_steps": 100, "loss": 2.5, "tokens_per_second": 1000.0,
        "seconds_per_step": 0.5, "epoch": 0, "gpus": 8}


def test_a_step_report_becomes_progress_with_percent_and_eta() -> None:
    progress, checkpoint = apply_report(parse_report(STEP), None, None, NOW)
    assert progress is not None and checkpoint is None
    assert (progress.step, progress.percent, progress.eta_seconds) == (10, 10.0, 45)


@pytest.mark.parametrize(("change", "words"), [
    ({"step": -1}, "greater than or equal to 0"),
    ({"step": 101}, "out of range"),
    ({"total_steps": 0}, "greater than or equal to 1"),
    ({"loss": float("nan")}, "finite number"),
    ({"loss": float("inf")}, "finite number"),
    ({"tokens_per_second": -5.0}, "greater than or equal to 0"),
    ({"step": 1e30, "total_steps": 1e30}, "step"),  # int64 would refuse it at the status
    ({"step": 2**41, "total_steps": 2**42}, "less than or equal to"),
    ({"step": "ten"}, "valid integer"),
    ({"loss": "low"}, "valid number"),
    ({"metrics": {f"m{i}": 1.0 for i in range(17)}}, "at most 16"),
    ({"metrics": {"bad name!": 1.0}}, "should match pattern"),
    ({"metrics": {"accuracy": float("nan")}}, "finite number"),
    ({"checkpoint": "x" * 5000}, "at most 2048"),
])
def test_a_report_out_of_range_is_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_report({**STEP, **change})


def test_a_custom_trainers_report_keeps_its_metrics_in_the_status() -> None:
    """mentor_trainer.report(step, loss, total_steps, metrics): no tokens/s needed; the
    metrics merge by name, at most 16 kept, and the status schema takes them."""
    first = {"step": 5, "total_steps": 50, "loss": 0.7, "metrics": {"accuracy": 0.61}}
    progress, _ = apply_report(parse_report(first), None, None, NOW)
    later = {"step": 6, "metrics": {"f1": 0.5, **{f"m{i}": float(i) for i in range(15)}}}
    progress, _ = apply_report(parse_report(later), progress, None, NOW)
    assert progress is not None and (progress.step, progress.percent, progress.loss) == \
        (5, 10.0, 0.7)
    assert len(progress.metrics) == 16 and progress.metrics["f1"] == 0.5
    assert "accuracy" not in progress.metrics, "the oldest name made room"
    JobStatus.model_validate({"progress": progress.wire()})


@pytest.mark.parametrize("body", [[], "step", 7, None, {"loss": 1.0}])
def test_a_body_that_is_not_a_report_is_refused(body: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (pydantic's message varies by shape)
        parse_report(body)


def test_an_absurd_step_time_is_refused_and_a_long_eta_is_left_out() -> None:
    """seconds_per_step 1e308 made int(inf) raise: a 500."""
    with pytest.raises(ValueError, match="seconds_per_step"):
        parse_report({**STEP, "seconds_per_step": 1e308})
    slow = {**STEP, "step": 0, "total_steps": 10**8, "seconds_per_step": 86400.0}
    progress, _ = apply_report(parse_report(slow), None, None, NOW)
    assert progress is not None and progress.eta_seconds is None
    JobStatus.model_validate({"progress": progress.wire()})


def test_a_token_that_is_not_ascii_is_refused_not_a_crash() -> None:
    key, uid = b"k", "uid-1"
    assert authorized(key, uid, f"Bearer {token_for(key, uid)}")
    assert not authorized(key, uid, "Bearer zażółć-gęślą-jaźń")
    assert not authorized(key, uid, "Bearer \udcff")
    assert not authorized(key, uid, None)


def test_a_replica_labelled_leader_but_not_leading_is_not_ready() -> None:
    """The Service selects the leader label; a replica that carries it without the Lease
    answers every report 503, so it must drop out of the Service until it sheds the label."""
    import asyncio
    import threading

    from aiohttp.test_utils import TestClient, TestServer

    from mentor.controller.cache import Jobs
    from mentor.controller.metrics import METRICS
    from mentor.controller.server import ProgressBook, build_app
    from mentor.controller.settings import Settings

    async def readyz(ready: bool) -> int:
        app = build_app(Settings.from_env({}), ProgressBook(), METRICS, Jobs(),
                        threading.Event(), lambda: ready)
        async with TestClient(TestServer(app)) as client:
            return (await client.get("/readyz")).status

    assert asyncio.run(readyz(True)) == 200
    assert asyncio.run(readyz(False)) == 503


def test_a_custom_metric_is_a_labelled_series_that_goes_with_its_job() -> None:
    from mentor.controller.metrics import Metrics

    metrics = Metrics()
    report = parse_report({"step": 3, "total_steps": 9, "loss": 0.4,
                           "metrics": {"accuracy": 0.75, "f1": 0.5}})
    metrics.observe_report("team", "TrainingJob", "mine", report)
    value = metrics.registry.get_sample_value
    labels = {"namespace": "team", "kind": "TrainingJob", "job_name": "mine"}
    assert value("mentor_job_metric", {**labels, "metric": "accuracy"}) == 0.75
    assert value("mentor_job_loss", labels) == 0.4
    metrics.forget("team", "TrainingJob", "mine")
    assert value("mentor_job_metric", {**labels, "metric": "accuracy"}) is None


def test_jobs_by_phase_follow_each_job_as_it_moves_and_goes() -> None:
    """mentor_jobs{namespace,kind,phase} is counted as jobs change phase, not recounted over
    every job at every reconcile (a burst of N jobs cost N² steps)."""
    from mentor.api.status import JobStatus, Phase
    from mentor.controller.metrics import Metrics

    metrics = Metrics()

    def count(phase: str) -> float | None:
        return metrics.registry.get_sample_value(
            "mentor_jobs", {"namespace": "a", "kind": "TrainingJob", "phase": phase})

    for name in ("j1", "j2", "j3"):
        metrics.observe_status("a", "TrainingJob", name, JobStatus(phase=Phase.PENDING))
    assert count("Pending") == 3
    metrics.observe_status("a", "TrainingJob", "j1", JobStatus(phase=Phase.RUNNING))
    metrics.observe_status("a", "TrainingJob", "j1", JobStatus(phase=Phase.RUNNING))
    assert (count("Pending"), count("Running")) == (2, 1)
    metrics.forget("a", "TrainingJob", "j2")
    metrics.forget("a", "TrainingJob", "j3")
    assert count("Pending") is None, "a phase no job is in leaves no series"
    assert count("Running") == 1
    # An unchanged status sets nothing again, but a job forgotten and seen again (the same
    # status) is counted again.
    metrics.forget("a", "TrainingJob", "j1")
    assert count("Running") is None
    metrics.observe_status("a", "TrainingJob", "j1", JobStatus(phase=Phase.RUNNING))
    assert count("Running") == 1
