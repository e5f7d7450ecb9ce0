"""Tracking on one machine (`mentor run`), read back from a real MLflow server through its REST
API and from TensorBoard's own reader: a run's params, every step's metrics, its artifacts and
its registered model; a server stopped in the middle of the run loses nothing. (A TuningJob's
runs are checked in test_tuning_local.py, on its real search.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import wait_for
from mlflow_server import MlflowServer

from testdata import SHAKESPEARE

pytestmark = pytest.mark.e2e

MENTOR = str(Path(sys.executable).with_name("mentor"))
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
STEPS = 160


@pytest.fixture
def pvc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pvc"
    (root / "datasets").mkdir(parents=True)
    shutil.copy(SHAKESPEARE, root / "datasets" / "plays.txt")
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return root


def records(output: Path) -> list[dict[str, Any]]:
    log = output / "metrics.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_local_run_is_in_mlflow_and_tensorboard_whole_though_the_server_went_down(
        mlflow: MlflowServer, tmp_path: Path, pvc_root: Path) -> None:
    experiment, model = f"local-{uuid.uuid4().hex[:8]}", f"chars-{uuid.uuid4().hex[:8]}"
    job = yaml.safe_load(QUICKSTART.read_text())
    job["metadata"]["name"] = "tracked"
    job["spec"]["data"]["source"] = "pvc://datasets/plays.txt"
    job["spec"]["optimization"].update(steps=STEPS, evalInterval=80)
    job["spec"]["checkpointing"]["intervalSteps"] = 80
    job["spec"]["output"] = {"uri": "pvc://models/tracked", "register": {"name": model}}
    job["spec"]["tracking"] = {"mlflow": {"uri": mlflow.uri, "experiment": experiment}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    output = pvc_root / "models" / "tracked"

    trainer = subprocess.Popen([MENTOR, "run", str(path), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_id = wait_for("the run's first steps in MLflow", lambda: next(
            (r["info"]["run_id"] for r in mlflow.runs(experiment) if r["metrics"]), None)
            if _exists(mlflow, experiment) else None)
        mlflow.stop()
        down_at = len([r for r in records(output) if "loss" in r])
        wait_for("20 steps trained while the server is down",
                 lambda: len([r for r in records(output) if "loss" in r]) >= down_at + 20)
        mlflow.start()
        said, _ = trainer.communicate(timeout=600)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert trainer.returncode == 0, said[-3000:]
    assert down_at < STEPS - 20, "the server went down while the job trained"

    logged = records(output)
    losses = {r["step"]: r["loss"] for r in logged if "loss" in r}
    evals = {r["step"]: r["eval_loss"] for r in logged if "eval_loss" in r}
    history = mlflow.history(run_id, "loss")
    assert [s for s, _ in history] == list(range(1, STEPS + 1)), "every step once, none lost"
    assert [v for _, v in history] == pytest.approx([losses[s] for s, _ in history])
    eval_history = mlflow.history(run_id, "eval_loss")
    assert [s for s, _ in eval_history] == sorted(evals)
    assert [v for _, v in eval_history] == pytest.approx([evals[s] for s in sorted(evals)])
    run = mlflow.run(run_id)
    assert run["info"]["status"] == "FINISHED" and run["info"]["end_time"]
    assert run["metrics"]["loss"] == pytest.approx(losses[STEPS])
    assert run["metrics"]["gpu_hours"] == 0.0, "a CPU run holds no GPU"
    assert {"tokens_per_second", "learning_rate", "grad_norm"} <= run["metrics"].keys()
    assert run["params"]["optimization.learningRate"] == "0.003"
    assert run["params"]["model.architecture"] == "gpt2"
    assert run["params"]["data.source"] == str(pvc_root / "datasets" / "plays.txt")
    tags = run["tags"]
    assert tags["mlflow.runName"] == "tracked" and tags["mentor.kind"] == "TrainingJob"
    assert tags["mentor.namespace"] == "local" and tags["mentor.gpus"] == "0"
    assert set(mlflow.artifacts(run_id)) == {"loss.png", "model"}
    assert mlflow.artifacts(run_id, "model") == ["model/reference.json"]

    [version] = mlflow.versions(model)
    lineage = {t["key"]: t["value"] for t in version["tags"]}
    assert version["run_id"] == run_id and lineage["mentor.uri"] == str(output)
    assert lineage["mentor.data"] == str(pvc_root / "datasets" / "plays.txt")
    assert tags["mentor.registered"] == f"{model}/{version['version']}"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(output / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("loss")] == list(range(1, STEPS + 1))
    assert [e.value for e in board.Scalars("loss")] == pytest.approx(
        [losses[s] for s in range(1, STEPS + 1)], rel=1e-6)
    reported = subprocess.run([MENTOR, "report", str(path)], capture_output=True, text=True,
                              check=False)
    assert f"tensorboard --logdir {output / 'tensorboard'}" in reported.stdout, reported.stdout
    assert f"{mlflow.uri}/#/experiments/" in reported.stdout, reported.stdout


def _exists(mlflow: MlflowServer, experiment: str) -> bool:
    try:
        mlflow.call("GET", "experiments/get-by-name", experiment_name=experiment)
    except OSError:
        return False
    return True
