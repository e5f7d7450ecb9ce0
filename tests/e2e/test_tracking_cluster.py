"""Tracking through the cluster, with real trainer pods (the node agent runs them): the run in a
real MLflow server holds the steps and final loss of the job's status, and the ledger's
GPU-hours; a server that cannot be reached is a warning condition and Event, and the job goes
on to succeed with its records kept."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Kube, wait_for
from jobs import job
from mlflow_server import MlflowServer, free_port
from node_agent import NodeAgent

pytestmark = pytest.mark.e2e
STEPS = 40
MENTOR = str(Path(sys.executable).with_name("mentor"))


@pytest.fixture(scope="module")
def agent(control_plane: Any, pvc_root: Path) -> Iterator[NodeAgent]:
    """The node, advertising GPUs as a kwok GPU node does: its pods are charged for them."""
    from kubernetes import config

    api = config.new_client_from_config(str(control_plane.kubeconfig))
    node = NodeAgent("local-node", pvc_root, api, gpus=4)
    node.start()
    yield node
    node.stop()


def succeeded(kube: Kube, agent: NodeAgent, name: str) -> dict[str, Any] | None:
    status: dict[str, Any] = kube.get("trainingjob", name).get("status", {})
    assert status.get("phase") != "Failed", (status, agent.log(f"{name}-0")[-3000:])
    return status if status.get("phase") == "Succeeded" else None


def test_a_cluster_run_holds_the_jobs_steps_loss_and_ledger_and_survives_no_server(
        kube: Kube, agent: NodeAgent, pvc_root: Path, plays: None, claims: None,
        mlflow: MlflowServer, tmp_path: Path) -> None:
    experiment = f"cluster-{uuid.uuid4().hex[:8]}"
    # One GPU held (amd.com/gpu: nvidia.com/gpu would make the trainer use CUDA, which this
    # machine lacks); the process runs on the CPU, and the ledger charges what the pod holds.
    one_gpu = {"resources": {"limits": {"amd.com/gpu": "1"}}}
    kube.apply(job("tracked", STEPS, optimization={"evalInterval": 20}, template=one_gpu,
                   tracking={"mlflow": {"uri": mlflow.uri, "experiment": experiment}}))
    status = wait_for("tracked to succeed", lambda: succeeded(kube, agent, "tracked"), 600)
    uid = kube.get("trainingjob", "tracked")["metadata"]["uid"]
    progress = status["progress"]
    tracked = progress["tracking"]
    assert tracked["state"] == "Recording" and tracked["url"].startswith(mlflow.uri)
    assert kube.condition("tracked", "Tracking")["reason"] == "Recording"

    run_id = tracked["runId"]
    losses = mlflow.history(run_id, "loss")
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    assert losses[-1][1] == pytest.approx(progress["loss"])
    assert mlflow.history(run_id, "eval_loss")[-1][1] == pytest.approx(progress["evalLoss"])
    run = mlflow.run(run_id)
    assert run["info"]["status"] == "FINISHED"
    assert run["tags"]["mentor.uid"] == uid and run["tags"]["mentor.namespace"] == kube.ns
    assert run["tags"]["mentor.attempt"] == "1" and run["tags"]["mentor.image"]
    assert run["params"]["optimization.steps"] == str(STEPS)
    # The ledger's figure as rank 0's launcher last asked for it; the status adds the moment
    # from that question to the pod's end.
    logged, ledger = run["metrics"]["gpu_hours"], status["gpuHours"]
    print(f"GPU-hours: MLflow {logged:.6f}, status {ledger:.6f}")
    assert 0 < logged <= ledger and (ledger - logged) * 3600 < 10, (logged, ledger)

    port = free_port()
    nowhere = f"http://127.0.0.1:{port}"  # nothing listens there, yet
    kube.apply(job("untracked", 20, tracking={"mlflow": {"uri": nowhere}}))
    unavailable = wait_for("the TrackingUnavailable condition", lambda: (
        c := kube.condition("untracked", "Tracking")) and c["reason"] == "TrackingUnavailable"
        and c, 600)
    assert unavailable["status"] == "False" and nowhere in unavailable["message"]
    assert any(e["type"] == "Warning" and e["reason"] == "TrackingUnavailable"
               for e in kube.events("untracked"))
    wait_for("untracked to succeed", lambda: succeeded(kube, agent, "untracked"), 600)
    kept = pvc_root / "models" / "untracked" / ".mentor" / "tracking"
    assert (kept / "outbox.jsonl").stat().st_size > 0 and not (kept / "sent").exists(), \
        "the records wait in the output for the server"

    late = MlflowServer(tmp_path / "late", port=port)  # the server comes back after the job
    late.start()
    try:
        synced = subprocess.run([MENTOR, "sync", str(kept.parents[1])], capture_output=True,
                                text=True, check=False)
        assert synced.returncode == 0, synced.stderr
        [run] = late.runs(kube.ns)  # the experiment defaults to the job's namespace
        assert [s for s, _ in late.history(run["info"]["run_id"], "loss")] == list(range(1, 21))
        assert run["info"]["status"] == "FINISHED"
    finally:
        late.stop()
