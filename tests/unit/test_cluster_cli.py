"""The cluster commands' tables and messages, from job objects as the API server returns them."""

from __future__ import annotations

from mentor.client.commands import row, table
from mentor.client.sdk import Job, JobFailed, _plain


def job(**status: object) -> Job:
    return Job({"metadata": {"name": "llm", "namespace": "team",
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"parallelism": {"nodes": 2}}, "status": status})


def test_a_row_says_why_a_job_failed_and_how_far_it_got() -> None:
    failed = job(phase="Failed", restarts=2, gpuHours=1.5,
                 progress={"percent": 42.4, "loss": 2.31234},
                 conditions=[{"type": "Failed", "status": "True", "reason": "NonFiniteLoss",
                              "message": "loss is nan"}])
    assert row(failed)[:8] == ("llm", "Failed", "NonFiniteLoss", "2", "42%", "2.3123", "2",
                               "1.50")
    assert row(job())[:6] == ("llm", "-", "-", "2", "-", "-")


def test_the_table_aligns_its_columns() -> None:
    lines = table([row(job(phase="Running")), row(job(phase="Succeeded"))]).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "REASON", "NODES", "PROGRESS", "LOSS",
                                "RESTARTS", "GPU-HOURS", "AGE"]
    assert lines[1].index("Running") == lines[2].index("Succeeded") == lines[0].index("PHASE")


def test_a_failed_job_raises_its_reason_and_message() -> None:
    error = JobFailed(job(phase="Failed", conditions=[
        {"type": "Failed", "status": "True", "reason": "ExitCode", "message": "exit code 2"}]))
    assert (error.reason, error.message) == ("ExitCode", "exit code 2")
    assert str(error) == "trainingjob llm failed: ExitCode: exit code 2"


def test_the_api_servers_cel_message_loses_the_value_it_quotes() -> None:
    assert _plain('Invalid value: "object": set exactly one of steps or epochs') == \
        "set exactly one of steps or epochs"
    assert _plain("Required value") == "Required value"
