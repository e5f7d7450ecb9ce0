"""End to end: a TrainingJob really trains through the control plane, then a job tunes its output.

The node agent stands in for the kubelet of one node; everything else is real: the API server
validates, the operator creates the pods, the scheduler binds them, torchrun runs two nodes of one
process each on gloo, rank 0 reports progress to the operator, and the operator writes status.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import Kube
from node_agent import NODE_LABEL, NodeAgent

from mentor.api.training import DataSpec
from mentor_trainer import data
from mentor_trainer.tokenizer import load_saved
from testdata import SHAKESPEARE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def texts(pvc_root: Path) -> None:
    """The data: the first 90% of tinyshakespeare to train on, the rest held out."""
    text = SHAKESPEARE.read_text()
    cut = int(len(text) * 0.9)
    (pvc_root / "datasets" / "train").mkdir(parents=True)
    (pvc_root / "datasets" / "train" / "input.txt").write_text(text[:cut])
    (pvc_root / "datasets" / "heldout").mkdir(parents=True)
    (pvc_root / "datasets" / "heldout" / "input.txt").write_text(text[cut:])


def job(name: str, model: dict[str, Any], source: str, steps: int,
        learning_rate: float) -> dict[str, Any]:
    return {
        "apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {
            "model": model,
            "data": {"source": source, "sequenceLength": 64, "validationSplit": 0.1},
            "optimization": {"steps": steps, "globalBatchSize": 32, "microBatchSize": 16,
                             "learningRate": learning_rate, "warmupSteps": 10,
                             "evalInterval": 50, "evalBatches": 8, "precision": "fp32"},
            "parallelism": {"nodes": 2, "procsPerNode": 1},
            "checkpointing": {"intervalSteps": 50},
            "output": {"uri": f"pvc://models/{name}"},
            "runPolicy": {"backoffLimit": 0},
            "scheduling": {"nodeSelector": {NODE_LABEL: "local"}},
        },
    }


def wait_for_success(kube: Kube, agent: NodeAgent, name: str,
                     timeout: float = 600) -> list[dict[str, Any]]:
    """Wait for Succeeded, collecting every progress seen on the way."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = kube.get("trainingjob", name).get("status", {})
        if status.get("progress") and (not seen or seen[-1] != status["progress"]):
            seen.append(status["progress"])
        if status.get("phase") == "Succeeded":
            return seen
        running = next((c for c in status.get("conditions", []) if c["type"] == "Running"), {})
        assert running.get("reason") != "Unschedulable", running
        assert status.get("phase") != "Failed", (status, agent.log(f"{name}-0")[-3000:],
                                                 agent.log(f"{name}-1")[-3000:])
        time.sleep(0.5)
    raise AssertionError(f"{name} did not succeed: {status}\n{agent.log(f'{name}-0')[-3000:]}")


def heldout_loss(model_dir: Path, pvc_root: Path) -> float:
    """The loss on the held-out text's validation part, which no job trained on."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_saved(model_dir)
    assert tokenizer is not None
    spec = DataSpec(source=str(pvc_root / "datasets" / "heldout"), sequence_length=64,
                    validation_split=0.1)
    _, val = data.split(data.encode(data.read_texts(spec), tokenizer), 0.1, 64)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    indices = list(range(min(len(val), 64)))
    with torch.no_grad():
        x, y = val.batch(indices)
        logits = model(input_ids=x).logits
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                       y.reshape(-1)))


def test_train_then_tune_through_the_cluster(kube: Kube, agent: NodeAgent, pvc_root: Path,
                                             texts: None, claims: None) -> None:
    kube.apply(job("base", {"size": "tiny", "tokenizer": "char"},
                   "pvc://datasets/train/input.txt", steps=150, learning_rate=3e-3))
    progress = wait_for_success(kube, agent, "base")
    assert any(p["step"] < p["totalSteps"] for p in progress), \
        f"status.progress is updated while the job runs: {progress}"
    final = kube.get("trainingjob", "base")["status"]
    assert final["progress"]["step"] == 150
    assert final["progress"]["evalLoss"] < 2.8
    assert final["checkpoint"]["step"] == 150
    base = pvc_root / "models" / "base"
    assert (base / "model.safetensors").exists()
    assert {p["metadata"]["name"] for p in kube.pods("base")} == {"base-0", "base-1"}

    kube.apply(job("tuned", {"from": "pvc://models/base"}, "pvc://datasets/heldout/input.txt",
                   steps=40, learning_rate=1e-3))
    wait_for_success(kube, agent, "tuned")
    tuned = pvc_root / "models" / "tuned"
    before, after = heldout_loss(base, pvc_root), heldout_loss(tuned, pvc_root)
    assert after < before, f"tuning on held-out text lowers its loss ({before} -> {after})"
