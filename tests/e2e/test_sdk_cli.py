"""The SDK and the CLI against the real control plane, with the operator running and the node
agent running real trainer pods (whose logs it serves to the API server as a kubelet does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Kube
from jobs import spec
from node_agent import NodeAgent

from mentor import Client, ClusterUnreachable, Forbidden, JobFailed, JobNotFound, SpecRefused

pytestmark = pytest.mark.e2e

MENTOR = str(Path(sys.executable).with_name("mentor"))


def sections(name: str, steps: int = 40, **changes: dict[str, Any]) -> dict[str, Any]:
    """Two nodes of one process: ranks are pods, as the logs show them."""
    return spec(name, steps, **{"parallelism": {"nodes": 2, "procsPerNode": 1},
                                "optimization": {"evalInterval": 20},
                                "runPolicy": {"backoffLimit": 1}, **changes})


def job_file(tmp_path: Path, name: str, **changes: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
                                    "metadata": {"name": name},
                                    "spec": sections(name, **changes)}))
    return path


def mentor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MENTOR, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_submit_wait_get_and_describe(kube: Kube, agent: NodeAgent, claims: None, plays: None,
                                      tmp_path: Path) -> None:
    result = mentor("submit", str(job_file(tmp_path, "cli")), "--wait", "-n", kube.ns)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"trainingjob cli submitted to namespace {kube.ns}" in result.stdout
    assert "trainingjob cli succeeded: step 40" in result.stdout
    assert "next: mentor describe cli" in result.stdout
    assert "/40" in result.stderr and "GPU-h" in result.stderr, "the live progress bar"

    table = mentor("ls", "-n", kube.ns)
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "REASON", "NODES", "PROGRESS", "LOSS",
                              "RESTARTS", "GPU-HOURS", "AGE"]
    assert line.split()[:5] == ["cli", "Succeeded", "-", "2", "100%"]

    as_json = json.loads(mentor("get", "cli", "-n", kube.ns, "-o", "json").stdout)
    assert as_json["status"]["phase"] == "Succeeded"
    described = mentor("describe", "cli", "-n", kube.ns)
    assert described.returncode == 0, described.stderr
    for words in ("Name:        cli", "Parallelism: 2 node(s) × 1 process(es), ddp",
                  "Succeeded   True   JobCompleted", "Events:", "JobCreated"):
        assert words in described.stdout, described.stdout


def test_sdk_trains_waits_with_progress_and_reads_every_ranks_logs(
        kube: Kube, agent: NodeAgent, claims: None, plays: None) -> None:
    client = Client(namespace=kube.ns)
    client.train("sdk", **sections("sdk", steps=60))
    seen: list[int] = []
    job = client.wait("sdk", timeout=300,
                      progress=lambda j: seen.append(j.progress.get("step", 0)))
    assert job.phase == "Succeeded"
    assert any(0 < step < 60 for step in seen), f"progress while it ran: {seen}"

    lines = list(client.logs("sdk"))
    assert any(line.startswith("[rank 0] ") and "step 60/60" in line for line in lines)
    assert any(line.startswith("[rank 1] ") and "rank 1 of 2" in line for line in lines)
    started = [i for i, line in enumerate(lines) if " of 2 on " in line]
    done = next(i for i, line in enumerate(lines) if "step 60/60" in line)
    assert len(started) == 2 and max(started) < done, "interleaved in the order written"
    assert all(line.startswith("[rank 1] ") for line in client.logs("sdk", rank=1))
    cli = mentor("logs", "sdk", "--rank", "0", "-n", kube.ns)
    assert cli.returncode == 0 and "[rank 0] " in cli.stdout, cli.stderr
    assert [e["reason"] for e in client.events("sdk")][:1] == ["JobCreated"]


def test_suspend_and_resume(kube: Kube, agent: NodeAgent, claims: None, plays: None,
                            tmp_path: Path) -> None:
    client = Client(namespace=kube.ns)
    client.train("pausing", **sections("pausing", steps=400))
    client.wait("pausing", condition="Running", timeout=120)
    while client.get("pausing").progress.get("step", 0) < 5:  # a step to checkpoint
        time.sleep(0.3)
    result = mentor("suspend", "pausing", "-n", kube.ns)
    assert result.returncode == 0 and "suspended" in result.stdout, result.stderr
    job = client.wait("pausing", condition="Suspended", timeout=120)
    assert job.phase == "Suspended"
    kube.wait("pod/pausing-0", "delete", timeout=120)
    result = mentor("resume", "pausing", "-n", kube.ns)
    assert result.returncode == 0 and "resumed" in result.stdout, result.stderr
    job = client.wait("pausing", timeout=600)
    assert job.phase == "Succeeded" and job.status["restarts"] == 0
    assert any("resumed from" in line for line in client.logs("pausing", rank=0))


def test_a_failed_jobs_last_words_are_kept(kube: Kube, agent: NodeAgent, claims: None,
                                           plays: None, tmp_path: Path) -> None:
    """Missing data (exit 3), made retriable so the first attempt's pods are deleted: what it
    said stays in the job's status, its condition and `mentor logs --attempt 1`."""
    path = job_file(tmp_path, "nodata", data={"source": "pvc://datasets/nowhere.txt"},
                    runPolicy={"backoffLimit": 1, "exitCodes": {"retry": [3]}})
    result = mentor("submit", str(path), "--wait", "-n", kube.ns)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "trainingjob nodata failed: BackoffLimitExceeded" in result.stdout
    assert "nowhere.txt" in result.stdout, "the trainer's own words, in one line"
    kept = mentor("logs", "nodata", "--attempt", "1", "-n", kube.ns)
    assert kept.returncode == 0, kept.stderr
    assert "attempt 1 failed (ExitCode, pod nodata-" in kept.stdout
    assert "DataNotFound" in kept.stdout and "nowhere.txt" in kept.stdout
    client = Client(namespace=kube.ns)
    with pytest.raises(JobFailed) as failed:
        client.wait("nodata", timeout=10)
    assert failed.value.reason == "BackoffLimitExceeded"
    assert [f["attempt"] for f in client.failures("nodata")] == [1, 2]


def test_errors_are_one_line(kube: Kube, tmp_path: Path, control_plane: Any) -> None:
    client = Client(namespace=kube.ns)
    with pytest.raises(JobNotFound, match=f"^trainingjob ghost not found in namespace {kube.ns}$"):
        client.get("ghost")
    result = mentor("describe", "ghost", "-n", kube.ns)
    assert result.returncode == 2
    assert result.stderr == f"mentor describe: trainingjob ghost not found in namespace " \
                            f"{kube.ns}\n"

    bad = job_file(tmp_path, "bad", optimization={"epochs": 1})
    result = mentor("submit", str(bad), "-n", kube.ns)
    assert result.stderr == "mentor submit: trainingjob bad refused: spec.optimization: set " \
                            "exactly one of steps or epochs\n"
    with pytest.raises(SpecRefused) as refused:
        client.train("bad", **sections("bad", optimization={"epochs": 1}))
    assert refused.value.errors == ["spec.optimization: set exactly one of steps or epochs"]

    kube("create", "serviceaccount", "nobody")
    token = kube("create", "token", "nobody").strip()
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"] = [{"name": "nobody", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "nobody"
    nobody = tmp_path / "nobody.kubeconfig"
    nobody.write_text(yaml.safe_dump(config))
    result = mentor("ls", "-n", kube.ns, "--kubeconfig", str(nobody))
    assert result.returncode == 2
    assert result.stderr.startswith("mentor ls: forbidden: trainingjobs.mentor.dev is "
                                    "forbidden: User \"system:serviceaccount:")
    assert "cannot list resource \"trainingjobs\" in API group \"mentor.dev\"" in result.stderr
    assert result.stderr.count("\n") == 1
    with pytest.raises(Forbidden):
        Client(namespace=kube.ns, kubeconfig=str(nobody)).list()

    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    nowhere = tmp_path / "nowhere.kubeconfig"
    nowhere.write_text(yaml.safe_dump(config))
    result = mentor("ls", "--kubeconfig", str(nowhere))
    assert result.returncode == 2
    assert result.stderr.startswith("mentor ls: no cluster reachable at https://127.0.0.1:9")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    with pytest.raises(ClusterUnreachable):
        Client(kubeconfig=str(nowhere)).list()
