"""A TuningJob end to end on CPU with real training: a base model learns Shakespeare, then four
LoRA trials over the learning rate adapt it to Python's own source, through `mentor run`; the
median pruner stops those that lag; a rerun trains nothing; the best trial's model speaks. The
search is tracked in a real MLflow server: a parent run with a nested run per trial, the pruned
ones tagged, the best tagged and aliased in the registry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow_server import MlflowServer

from testdata import SHAKESPEARE

pytestmark = pytest.mark.e2e

MENTOR = str(Path(sys.executable).with_name("mentor"))
LEARNING_RATES = [0.01, 0.003, 0.001, 0.0003]  # the last ones lag at step 30: pruned


def write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MENTOR, *args], capture_output=True, text=True, check=False,
                          timeout=900)


def test_lora_trials_adapt_a_base_model_to_new_text(tmp_path: Path, mlflow: MlflowServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pvc"
    (root / "datasets" / "plays").mkdir(parents=True)
    shutil.copy(SHAKESPEARE, root / "datasets" / "plays" / "input.txt")
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(root))
    fetched = run("data", "python")
    assert fetched.returncode == 0, fetched.stderr
    assert len(list((root / "datasets" / "python").glob("*.txt"))) > 20

    base = write(tmp_path / "base.yaml", {
        "apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "base"},
        "spec": {
            "model": {"architecture": "gpt2", "size": "tiny", "tokenizer": "byte"},
            "data": {"source": "pvc://datasets/plays", "sequenceLength": 128,
                     "validationSplit": 0.05},
            "optimization": {"steps": 150, "globalBatchSize": 32, "microBatchSize": 16,
                             "learningRate": 0.003, "warmupSteps": 20, "evalInterval": 100,
                             "evalBatches": 10, "precision": "fp32"},
            "parallelism": {"nodes": 1, "procsPerNode": 2},
            "output": {"uri": "pvc://models/base"}}})
    trained = run("run", str(base), "--no-progress")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]

    tuning = write(tmp_path / "tune.yaml", {
        "apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob", "metadata": {"name": "tune"},
        "spec": {
            "baseModel": {"trainingJobRef": {"name": "base"}},
            "method": {"type": "lora", "lora": {"rank": 16, "alpha": 32, "dropout": 0.0,
                                                "targetModules": ["c_attn", "c_proj", "c_fc"]}},
            "data": {"source": "pvc://datasets/python", "sequenceLength": 128,
                     "validationSplit": 0.05},
            "optimization": {"steps": 60, "globalBatchSize": 32, "microBatchSize": 16,
                             "warmupSteps": 6, "evalInterval": 30, "evalBatches": 10,
                             "precision": "fp32"},
            "parallelism": {"nodes": 1, "procsPerNode": 2},
            "output": {"uri": "pvc://models/tune", "register": {"name": "python-lora"}},
            "tracking": {"mlflow": {"uri": mlflow.uri, "experiment": "tune-python"}},
            "search": {"algorithm": "grid", "maxTrials": 4, "parameters": [
                {"path": "optimization.learningRate", "values": LEARNING_RATES}],
                "pruner": {"type": "median", "startupTrials": 2}}}})
    prepared = run("data", "prepare", str(tuning))  # the trials' shard, made ahead of them
    assert prepared.returncode == 0, prepared.stderr
    assert re.match(r"[\d,]+ tokens of \d+ documents", prepared.stdout), prepared.stdout
    tuned = run("run", str(tuning), "--no-progress")
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    rows = [line.split() for line in tuned.stdout.splitlines()
            if line.strip().startswith("tune-t")]
    assert [r[0] for r in rows] == [f"tune-t{n}" for n in range(4)]
    states = [r[1] for r in rows]
    assert states[:2] == ["Succeeded", "Succeeded"] and "Pruned" in states, tuned.stdout

    summary = json.loads((root / "models" / "tune" / "tuning.json").read_text())
    trials = summary["trials"]
    assert [t["params"]["optimization.learningRate"] for t in trials] == LEARNING_RATES
    objectives = {t["name"]: t["objective"] for t in trials if t["state"] == "Succeeded"}
    best = min(objectives, key=lambda name: objectives[name])
    assert summary["best"] == best
    assert f"best trial    {best}" in tuned.stdout
    # Every trial starts by evaluating the base model on the same held-out Python text.
    baselines = {round(t["evals"]["0"], 4) for t in trials}
    assert len(baselines) == 1
    base_loss = baselines.pop()
    print(f"held-out loss on Python source: base model {base_loss:.4f}, "
          f"best trial ({best}) {objectives[best]:.4f} "
          f"({100 * (1 - objectives[best] / base_loss):.0f}% lower); "
          f"all trials {objectives}")
    assert objectives[best] <= 0.8 * base_loss

    shown = f"{trials[0]['evals']['0']:.4f}"  # the base model's loss, as the tables print it
    assert f"({shown} before tuning: " in tuned.stdout, "the summary states the gain"

    reported = run("report", str(tuning))
    assert reported.returncode == 0, reported.stderr
    table = reported.stdout.splitlines()
    assert table[1].split() == ["trial", "state", "objective", "steps", "GPU-hours",
                                "parameters"]
    assert table[2].split()[:4] == ["(base", "model)", "-", shown]
    assert any(line.split()[0] == best and line.endswith("<- best") for line in table[3:7])
    assert (root / "models" / "tune" / "report.png").stat().st_size > 10_000
    assert_tracked(mlflow, summary)

    # A rerun of the same file trains nothing: succeeded and pruned trials are read back.
    logs = {t["name"]: (root / "models" / "tune" / t["name"] / "metrics.jsonl").read_bytes()
            for t in trials}
    again = run("run", str(tuning), "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "step " not in again.stdout, "no trial trained again"
    assert again.stdout.count("(finished in an earlier run: read back)") == 4
    assert f"best trial    {best}" in again.stdout
    assert json.loads((root / "models" / "tune" / "tuning.json").read_text())["trials"] == trials
    for name, log in logs.items():
        assert (root / "models" / "tune" / name / "metrics.jsonl").read_bytes() == log, name
    assert len(mlflow.runs("tune-python")) == 5, "a rerun that trains nothing records nothing"

    # The tuned model speaks: the best trial's LoRA adapter on its base, named by the file.
    spoken = run("generate", str(tuning), "--prompt", "def ", "--tokens", "40")
    assert spoken.returncode == 0, spoken.stderr
    assert spoken.stdout.startswith("def ") and len(spoken.stdout) > 20


def assert_tracked(mlflow: MlflowServer, summary: dict[str, Any]) -> None:
    """The search in MLflow: one parent run, a nested run per trial with its parameters and
    objective, pruned trials tagged and KILLED, the best tagged on the parent and the trial,
    each succeeded trial a registry version and the best one aliased `best`."""
    runs = mlflow.runs("tune-python")
    [parent] = [r for r in runs if r["tags"].get("mentor.role") == "search"]
    trials = {r["info"]["run_name"]: r for r in runs
              if r["tags"].get("mlflow.parentRunId") == parent["info"]["run_id"]}
    assert sorted(trials) == sorted(t["name"] for t in summary["trials"])
    assert len(runs) == 5, "one parent, one run per trial, no strays"
    assert parent["info"]["status"] == "FINISHED"
    assert parent["tags"]["mentor.best_trial"] == summary["best"]
    for t in summary["trials"]:
        run = trials[t["name"]]
        assert run["params"]["optimization.learningRate"] == json.dumps(
            t["params"]["optimization.learningRate"])
        if t["state"] == "Pruned":
            assert run["tags"]["mentor.pruned"] == "true" and run["info"]["status"] == "KILLED"
            assert "mentor.best" not in run["tags"]
            continue
        assert run["info"]["status"] == "FINISHED"
        assert run["metrics"]["eval_loss"] == pytest.approx(t["objective"])
        assert run["tags"]["mentor.best"] == str(t["name"] == summary["best"]).lower()
    succeeded = [t for t in summary["trials"] if t["state"] == "Succeeded"]
    assert len(mlflow.versions("python-lora")) == len(succeeded)
    assert mlflow.alias("python-lora", "best")["run_id"] == \
        trials[summary["best"]]["info"]["run_id"]
