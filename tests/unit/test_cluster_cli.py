"""The cluster commands' tables and messages, from job objects as the API server returns them."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_a_job_is_named_as_kubectl_names_it() -> None:
    from mentor.api.kinds import TRAINING_JOB, TUNING_JOB
    from mentor.client.sdk import MentorError, parse_ref

    assert parse_ref("llm") == (TRAINING_JOB, "llm")
    for ref in ("tuningjob/x", "tj/x", "tuningjobs/x", "mtune/x", "tuningjobs.mentor.dev/x"):
        assert parse_ref(ref) == (TUNING_JOB, "x")
    assert parse_ref("mtj/y") == (TRAINING_JOB, "y")
    with pytest.raises(MentorError, match=r"^'pod' is not a Mentor kind: use one of "):
        parse_ref("pod/z")


def tuning(**status: object) -> Job:
    return Job({"kind": "TuningJob", "metadata": {
        "name": "tune", "namespace": "team", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"baseModel": {"uri": "hf://gpt2"}, "method": {"type": "lora"},
                 "search": {"algorithm": "grid", "maxTrials": 2}}, "status": status})


def trial(name: str, **status: object) -> Job:
    return Job({"kind": "TrainingJob", "metadata": {
        "name": name, "namespace": "team", "annotations": {
            "mentor.dev/trial-parameters": '{"optimization.learningRate": 0.003}'}},
        "spec": {}, "status": status})


def test_a_tuning_job_shows_its_trials_with_the_best_marked(capsys: Any) -> None:
    from mentor.client.commands import describe_tuning, tuning_row

    job = tuning(phase="Running", reason="TrialsRunning", shown={"trials": "1/2"}, gpuHours=0.5,
                 bestTrial={"name": "tune-t1", "objective": 1.25})
    assert tuning_row(job)[:6] == ("tune", "Running", "TrialsRunning", "1/2", "tune-t1",
                                   "1.2500")
    pruned = {"type": "Stopped", "status": "True", "reason": "Pruned"}
    trials = [trial("tune-t0", phase="Stopped", conditions=[pruned], progress={"step": 50}),
              trial("tune-t1", phase="Succeeded", progress={"step": 100, "evalLoss": 1.25},
                    gpuHours=0.25)]
    assert describe_tuning(job, trials, []) == 0
    out = capsys.readouterr().out
    rows = out.split("Trials:\n", 1)[1].splitlines()
    assert rows[0].split() == ["TRIAL", "STATE", "OBJECTIVE", "STEP", "GPU-HOURS", "PARAMETERS"]
    assert rows[1].split() == ["tune-t0", "Pruned", "-", "50", "0.0000", "learningRate=0.003"]
    assert rows[2].split() == ["tune-t1", "*", "Succeeded", "1.2500", "100", "0.2500",
                               "learningRate=0.003"]
    assert "Base model:  hf://gpt2" in out and "Search:      grid, up to 2 trial(s)" in out


def test_a_custom_trainers_search_says_what_it_runs(capsys: Any) -> None:
    from mentor.client.commands import describe_tuning

    job = Job({"kind": "TuningJob", "metadata": {"name": "lr", "namespace": "team"},
               "spec": {"trainer": {"type": "custom", "command": ["circles.py"],
                                    "args": ["--steps", "40"]},
                        "search": {"algorithm": "grid", "maxTrials": 4}}, "status": {}})
    assert describe_tuning(job, [], []) == 0
    assert "Trainer:     custom: circles.py --steps 40" in capsys.readouterr().out


def test_each_command_is_dispatched_by_its_own_function() -> None:
    from mentor import cli

    for argv, name in ((["describe", "tj/x"], "describe"), (["ls"], "ls"),
                       (["delete", "tuningjob/x"], "delete"), (["logs", "x", "-f"], "logs")):
        args = cli.parser().parse_args(argv)
        assert args.func is cli._on_cluster and args.cluster is cli.CLUSTER[name]
    assert cli.parser().parse_args(["run"]).func is cli._run
    assert cli.parser().parse_args(["report", "out/dir"]).func is cli._report
