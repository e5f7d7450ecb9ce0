"""A user's own training code under Mentor (spec.trainer.type: custom): a script the tests write,
which imports nothing of Mentor but mentor_trainer's public calls, run by `mentor run` and by
real trainer pods on the local control plane (the node agent runs each pod's command as it
stands). It gets what the built-in trainer gets: exit codes, restarts that resume, SIGTERM
checkpoints, and its loss and a metric of its own in the status."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Kube
from node_agent import NODE_LABEL, NodeAgent
from test_failures import condition, ended, wait_status
from user_scripts import CHARS, CIRCLES

from testdata import SHAKESPEARE

pytestmark = pytest.mark.e2e
MENTOR = str(Path(sys.executable).with_name("mentor"))


def custom_job(name: str, args: list[str], code: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"trainer": {"type": "custom", "command": ["circles.py"], "args": args,
                                 "code": code},
                     "parallelism": {"nodes": 1, "procsPerNode": 2},
                     "output": {"uri": f"pvc://models/{name}"},
                     "runPolicy": {"backoffLimit": 2},
                     "scheduling": {"nodeSelector": {NODE_LABEL: "local"}}}}


def mentor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MENTOR, *args], capture_output=True, text=True, check=False,
                          timeout=300)


def run_here(where: Path, name: str, command: str, args: list[str],
             **trainer: Any) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`mentor run` of a one-process job whose code is the directory `where`."""
    job = custom_job(name, args, {"path": str(where)})
    job["spec"]["trainer"].update(command=[command], **trainer)
    job["spec"]["parallelism"] = {"procsPerNode": 1}
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    ran = mentor("run", "--no-progress", str(path))
    return path, ran


def changes(report: str, what: str) -> tuple[float, float]:
    """`first -> last` of a line of `mentor report`."""
    found = re.search(rf"^  {what} +([\d.]+) -> ([\d.]+)", report, re.M)
    assert found, report
    return float(found.group(1)), float(found.group(2))


def test_mentor_run_runs_the_script_beside_the_yaml(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On one machine the ConfigMap's file is the file of that name beside the YAML."""
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "circles.py").write_text(CIRCLES)
    code = {"configMap": {"name": "circles", "key": "circles.py"}}
    good = tmp_path / "circles.yaml"
    good.write_text(yaml.safe_dump(custom_job("circles", ["--lr", "0.02"], code)))
    ran = mentor("run", "--no-progress", str(good))
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "TrainingJob circles: succeeded" in ran.stdout and "step          80/80" in ran.stdout
    log = tmp_path / "pvc" / "models" / "circles" / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    accuracy = [r["metrics"]["accuracy"] for r in records if "metrics" in r]
    assert len(accuracy) == 80 and accuracy[-1] >= 0.9, accuracy[-5:]
    print(f"circles: held-out accuracy {accuracy[0]:.3f} -> {accuracy[-1]:.3f}")

    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(custom_job("circles", ["--lr", "0.05"], code)))
    refused = mentor("run", str(changed))
    assert refused.returncode == 2 and "spec.trainer.args" in refused.stderr, refused.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(custom_job("bad", ["--fail-at", "3"], code)))
    failed = mentor("run", "--no-progress", str(bad))
    assert failed.returncode == 3, failed.stdout[-2000:]
    assert re.search(r"mentor-torchrun: exit code 3 from rank \d: BadRecord: record 3 has no "
                     "label", failed.stdout), failed.stdout[-2000:]
    assert "hint" not in failed.stdout, "the built-in trainer's hints are not this script's"


def test_a_nanogpt_style_script_learns_characters_with_mentor_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its settings as --key=value, its own model and data loading; one process, no DDP."""
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "train.py").write_text(CHARS)
    path, ran = run_here(tmp_path, "chars", "train.py",
                         [f"--data_path={SHAKESPEARE}", "--max_iters=120"])
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "eval loss" in ran.stdout
    report = mentor("report", str(path))
    assert report.returncode == 0, report.stderr
    held_out, training = changes(report.stdout, "eval loss"), changes(report.stdout, "loss")
    print(f"chars: training loss {training[0]} -> {training[1]}, held-out {held_out[0]} -> "
          f"{held_out[1]}")
    assert training[1] < 0.8 * training[0], report.stdout


def wheel(where: Path, name: str, source: str) -> Path:
    """A pure-Python wheel of one module, written by hand: no index, no build backend."""
    path = where / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}.py", source)
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                                      "true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_extra_packages_are_installed_once_for_the_job(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.pip: installed by the launcher under the job's output before the script starts;
    what cannot be installed is a permanent failure with pip's words."""
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "uses.py").write_text(
        "import mentor_trainer, tinydep\n"
        "mentor_trainer.report(step=1, total_steps=1, loss=tinydep.LOSS)\n")
    _, ran = run_here(tmp_path, "deps", "uses.py", [],
                      pip=[str(wheel(tmp_path, "tinydep", "LOSS = 0.25\n"))])
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "final loss    0.2500" in ran.stdout
    pip = tmp_path / "pvc" / "models" / "deps" / ".mentor" / "pip"
    installed = list(pip.glob("*/tinydep.py"))
    assert len(installed) == 1, installed

    _, failed = run_here(tmp_path, "nodeps", "uses.py", [],
                         pip=[str(tmp_path / "missing-1.0-py3-none-any.whl")])
    assert failed.returncode == 2, failed.stdout[-2000:]
    assert "pip could not install" in failed.stdout and "build an image FROM the trainer " \
        "image" in failed.stdout, failed.stdout[-2000:]


@pytest.fixture
def script(kube: Kube) -> dict[str, Any]:
    """The script in a ConfigMap, as `kubectl create configmap --from-file` makes it."""
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "circles"},
                "data": {"circles.py": CIRCLES}})
    return {"configMap": {"name": "circles", "key": "circles.py"}}


def test_a_custom_script_reports_its_loss_and_metric_to_the_status(
        kube: Kube, agent: NodeAgent, claims: None, script: dict[str, Any]) -> None:
    kube.apply(custom_job("mine", ["--lr", "0.02"], script))
    status = wait_status(kube, "mine", ended)
    assert status["phase"] == "Succeeded", status
    progress = status["progress"]
    assert (progress["step"], progress["totalSteps"], progress["percent"]) == (80, 80, 100.0)
    assert progress["loss"] < 0.5 and progress["metrics"]["accuracy"] >= 0.9, progress
    pod = kube.get("pod", "mine-0")
    container = pod["spec"]["containers"][0]
    command = container["command"] + container.get("args", [])
    assert command[0] == "mentor-torchrun", "the launcher that keeps exit codes"
    assert command[-3:] == ["circles.py", "--lr", "0.02"]


def test_a_script_that_knows_nothing_of_mentor_still_runs_and_is_counted(
        kube: Kube, agent: NodeAgent, claims: None) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"},
                "data": {"plain.py": "import os\n"  # one write a line: two ranks share the log
                                     "print(f\"rank {os.environ['RANK']} of "
                                     "{os.environ['WORLD_SIZE']}\")\n"}})
    job = custom_job("plain", [], {"configMap": {"name": "plain", "key": "plain.py"}})
    job["spec"]["trainer"]["command"] = ["plain.py"]
    kube.apply(job)
    status = wait_status(kube, "plain", ended)
    assert status["phase"] == "Succeeded", status
    assert "progress" not in status or "loss" not in status["progress"], "it reported none"
    assert status["attempts"] == 1 and status["gpuHours"] == 0, status
    log = agent.log("plain-0")
    assert "rank 0 of 2" in log and "rank 1 of 2" in log


def test_a_killed_rank_restarts_the_gang_and_the_script_resumes(
        kube: Kube, agent: NodeAgent, claims: None, script: dict[str, Any]) -> None:
    kube.apply(custom_job("killed", ["--pause", "0.05"], script))
    wait_status(kube, "killed", lambda s: (s.get("progress") or {}).get("step", 0) >= 25)
    agent.workers("killed-0", marker="circles.py")[-1].send_signal(signal.SIGKILL)
    status = wait_status(kube, "killed", ended)
    assert status["phase"] == "Succeeded" and status["restarts"] == 1, status
    log = agent.log("killed-0")
    assert "mentor-torchrun: exit code 137 from rank 1" in log
    assert "circles: resumed from step 20" in log or "circles: resumed from step 30" in log


def test_a_deleted_pod_saves_on_sigterm_and_the_job_resumes(
        kube: Kube, agent: NodeAgent, claims: None, script: dict[str, Any]) -> None:
    kube.apply(custom_job("evicted", ["--pause", "0.05"], script))
    wait_status(kube, "evicted", lambda s: (s.get("progress") or {}).get("step", 0) >= 15)
    kube("delete", "pod", "evicted-0", "--wait=false")
    status = wait_status(kube, "evicted", ended)
    assert status["phase"] == "Succeeded" and status["restarts"] == 1, status
    log = agent.log("evicted-0")
    assert "mentor-torchrun: exit code 143: stopped by signal 15 (SIGTERM)" in log
    stopped = int(log.split("circles: stopping at step ")[1].split()[0])
    assert f"circles: resumed from step {stopped}" in log, "resumed from the SIGTERM save"


def test_a_script_that_fails_for_good_ends_with_its_own_reason(
        kube: Kube, agent: NodeAgent, claims: None, script: dict[str, Any]) -> None:
    kube.apply(custom_job("refused", ["--fail-at", "5"], script))
    status = wait_status(kube, "refused", ended)
    assert status["phase"] == "Failed" and status.get("restarts", 0) == 0, status
    failed = condition(status, "Failed")
    assert failed["reason"] == "ExitCode"
    assert "exited with code 3" in failed["message"]
    assert "BadRecord: record 5 has no label" in failed["message"], failed["message"]


def lr_search(code: dict[str, Any]) -> dict[str, Any]:
    """Katib-style: the search sets the script's --lr; the objective is the accuracy it
    reports (maximized); the median pruner stops trials whose accuracy lags at the same step."""
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob", "metadata": {"name": "lr"},
            "spec": {"trainer": {"type": "custom", "command": ["circles.py"],
                                 "args": ["--steps", "40", "--pause", "0.1"], "code": code},
                     "parallelism": {"nodes": 1, "procsPerNode": 2},
                     "output": {"uri": "pvc://models/lr"},
                     "scheduling": {"nodeSelector": {NODE_LABEL: "local"}},
                     "search": {"algorithm": "grid", "maxTrials": 4,
                                "objective": {"metric": "accuracy", "direction": "maximize"},
                                "parameters": [{"name": "lr", "arg": "--lr",
                                                "values": [0.03, 0.01, 0.0003, 0.0001]}],
                                "pruner": {"type": "median", "startupTrials": 2}}}}


def test_a_tuning_job_searches_the_scripts_learning_rate_for_its_accuracy(
        kube: Kube, agent: NodeAgent, claims: None, script: dict[str, Any]) -> None:
    kube.apply(lr_search(script))
    kube.wait("tuningjob/lr", "jsonpath={.status.phase}=Succeeded", timeout=600)
    status = kube.get("tuningjob", "lr")["status"]
    best = status["bestTrial"]
    assert best["name"] == "lr-t0" and best["parameters"] == {"lr": 0.03}, best
    assert best["objective"] >= 0.9, best
    assert status["trials"]["pruned"] >= 1, status["trials"]
    trial = kube.get("trainingjob", "lr-t0")
    assert trial["spec"]["trainer"]["args"][-2:] == ["--lr", "0.03"]
    top = [(t["name"], t["parameters"], t.get("objective")) for t in status["topTrials"]]
    print(f"lr search: best {best['name']} {best['objective']:.3f}; succeeded {top}; "
          f"trials {status['trials']}")


def test_mentor_run_runs_the_same_search_here(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "circles.py").write_text(CIRCLES)
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(lr_search({"configMap": {"name": "circles",
                                                            "key": "circles.py"}})))
    ran = mentor("run", "--no-progress", str(path))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert "best trial    lr-t0: accuracy 0.9" in ran.stdout, ran.stdout[-2000:]
    rows = [ln.split() for ln in ran.stdout.splitlines() if ln.strip().startswith("lr-t")]
    assert [r[1] for r in rows][:2] == ["Succeeded", "Succeeded"] and \
        "Pruned" in [r[1] for r in rows], rows
    reported = mentor("report", str(path))  # ranked by the search's metric, named as such
    assert reported.returncode == 0 and "best trial    lr-t0: accuracy 0.9" in reported.stdout, \
        reported.stdout
