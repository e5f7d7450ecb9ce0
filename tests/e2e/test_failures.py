"""Failure paths end to end: real trainer pods, run exactly as their spec says, fail for real.

The node agent runs each pod's command (`mentor-torchrun -m mentor_trainer ...`) as a process and
reports its exit code and termination message as a kubelet would; the operator decides from
those alone. So these tests see what a cluster sees: the launcher's exit code, not a faked one.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Kube
from jobs import job
from mlflow_server import MlflowServer
from node_agent import NodeAgent

pytestmark = pytest.mark.e2e


def wait_status(kube: Kube, name: str, until: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = kube.get("trainingjob", name).get("status", {})
        if until(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"{name}: condition not reached in {timeout} s: {status}")


def ended(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def losses(pvc_root: Path, name: str) -> list[tuple[int, float]]:
    """Every (step, loss) the trainer logged, in order: both attempts, if there were two."""
    log = pvc_root / "models" / name / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def assert_series_carries_on(series: list[tuple[int, float]], resumed_at: int,
                             steps: int) -> None:
    """The second attempt starts right after the checkpoint and runs to the end, and every step
    it logs again (the killed attempt may have run past its checkpoint) has the loss it had the
    first time: the data order and the state are exactly restored."""
    numbers = [step for step, _ in series]
    start = len(numbers) - 1 - numbers[::-1].index(resumed_at + 1)  # the second attempt
    first, again = dict(series[:start]), series[start:]
    assert max(first) >= resumed_at, "the first attempt reached the checkpoint it resumed from"
    assert [step for step, _ in again] == list(range(resumed_at + 1, steps + 1))
    for step, loss in again:
        if step in first:
            assert abs(loss - first[step]) <= 1e-4 * abs(first[step]), (step, loss, first[step])


def resumed_step(log: str) -> int:
    line = next(ln for ln in log.splitlines() if "resumed from" in ln)
    return int(line.rsplit("(step ", 1)[1].rstrip(")"))


def test_a_killed_rank_restarts_the_gang_and_resumes(kube: Kube, agent: NodeAgent, claims: None,
                                                     plays: None, pvc_root: Path,
                                                     mlflow: MlflowServer) -> None:
    kube.apply(job("crash", tracking={"mlflow": {"uri": mlflow.uri, "experiment": "crash"}}))
    wait_status(kube, "crash", lambda s: (s.get("checkpoint") or {}).get("step", 0) >= 20)
    workers = agent.workers("crash-0")
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGKILL)  # one rank dies; torchrun stops the other

    status = wait_status(kube, "crash", ended)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1
    restarted = [e for e in kube.events("crash") if e["reason"] == "ExitCode"]
    assert restarted and "exited with code 137" in restarted[0]["message"], restarted
    assert "restarting all pods from the latest checkpoint" in restarted[0]["message"]
    log = agent.log("crash-0")
    assert "mentor-torchrun: exit code 137 from rank 1" in log
    series = losses(pvc_root, "crash")
    assert_series_carries_on(series, resumed_step(log), 60)
    assert status["progress"]["step"] == 60

    # The restarted attempt went on with the same MLflow run, and logged no step twice.
    run_id = status["progress"]["tracking"]["runId"]
    tracked = mlflow.history(run_id, "loss")
    assert [s for s, _ in tracked] == list(range(1, 61))
    first = {}
    for step, loss in series:
        first.setdefault(step, loss)
    assert [v for _, v in tracked] == pytest.approx([first[s] for s in range(1, 61)])
    run = mlflow.run(run_id)
    assert run["tags"]["mentor.attempt"] == "2" and run["info"]["status"] == "FINISHED"


def test_a_deleted_pod_checkpoints_then_the_job_resumes(kube: Kube, agent: NodeAgent,
                                                        claims: None, plays: None,
                                                        pvc_root: Path) -> None:
    kube.apply(job("deleted"))
    wait_status(kube, "deleted", lambda s: (s.get("progress") or {}).get("step", 0) >= 15)
    kube("delete", "pod", "deleted-0", "--wait=false")  # SIGTERM: the trainer checkpoints

    status = wait_status(kube, "deleted", ended)
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1, "a deletion is a counted restart"
    deleted = [e for e in kube.events("deleted") if e["reason"] == "PodDeleted"]
    assert deleted and "pod deleted-0 was deleted" in deleted[0]["message"], deleted
    log = agent.log("deleted-0")
    assert "mentor-torchrun: exit code 143: stopped by signal 15 (SIGTERM)" in log
    stopped = next(ln for ln in log.splitlines() if "stopped by SIGTERM at step" in ln)
    at = int(stopped.split("at step ")[1].split(";")[0])
    assert resumed_step(log) == at, "the second attempt resumed from the SIGTERM checkpoint"
    series = losses(pvc_root, "deleted")
    assert [s for s, _ in series] == sorted({s for s, _ in series}), \
        "nothing was trained twice: the checkpoint was the last step done"
    assert series[-1][0] == 60


@pytest.mark.parametrize(("name", "sections", "reason", "words"), [
    pytest.param("nan", {"optimization": {"learningRate": 10, "optimizer": "sgd",
                                          "gradClip": 1000, "weightDecay": 0}},
                 "NonFiniteLoss", ["exited with code 4", "NonFiniteLoss"], id="nan-loss"),
    pytest.param("badconfig", {"data": {"format": "jsonl", "field": "text"}},  # plain text
                 "ExitCode", ["exited with code 2 (invalid trainer config)", "BadConfig",
                              "not a JSON object with field 'text'"], id="bad-config"),
    pytest.param("nodata", {"data": {"source": "pvc://datasets/nowhere.txt"}},
                 "ExitCode", ["exited with code 3 (data not found)", "DataNotFound",
                              "nowhere.txt"], id="missing-data"),
])
def test_a_permanent_failure_ends_with_the_trainers_own_message(
        kube: Kube, agent: NodeAgent, claims: None, plays: None, name: str,
        sections: dict[str, Any], reason: str, words: list[str]) -> None:
    kube.apply(job(name, **sections))
    status = wait_status(kube, name, ended)
    assert status["phase"] == "Failed"
    assert status.get("restarts", 0) == 0, "a permanent failure is not retried"
    failed = condition(status, "Failed")
    assert failed["reason"] == reason
    for word in words:
        assert word in failed["message"], failed["message"]
