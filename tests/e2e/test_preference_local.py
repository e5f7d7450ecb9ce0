"""Preference tuning end to end on CPU with real processes: a small base model (trained first by
the real trainer) learns from preference pairs to rank a true continuation of a held-out passage
above the same words misspelt, through `mentor run` of a TuningJob that searches DPO's beta and
ranks its trials by held-out preference accuracy; `mentor report` and `mentor generate` work on
the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testdata import preference_pairs

pytestmark = pytest.mark.e2e

MENTOR = str(Path(sys.executable).with_name("mentor"))
BETAS = [0.1, 0.5]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MENTOR, *args], capture_output=True, text=True, check=False,
                          timeout=900)


def test_dpo_raises_held_out_preference_accuracy(pretrained: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pvc"
    (root / "datasets").mkdir(parents=True)
    (root / "datasets" / "pairs.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in preference_pairs(600)))
    monkeypatch.setenv("MENTOR_PVC_ROOT", str(root))
    job = tmp_path / "prefer.yaml"
    job.write_text(yaml.safe_dump({
        "apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob", "metadata": {"name": "prefer"},
        "spec": {
            "baseModel": {"uri": str(pretrained)},
            "method": {"type": "dpo", "dpo": {"loss": "sigmoid"},
                       "lora": {"rank": 8, "alpha": 16, "dropout": 0.0,
                                "targetModules": ["c_attn", "c_proj", "c_fc"]}},
            "data": {"source": "pvc://datasets/pairs.jsonl", "format": "preference",
                     "sequenceLength": 64, "validationSplit": 0.1},
            "optimization": {"steps": 40, "globalBatchSize": 32, "microBatchSize": 16,
                             "learningRate": 0.003, "warmupSteps": 5, "evalInterval": 20,
                             "evalBatches": 8},
            "parallelism": {"nodes": 1, "procsPerNode": 2},
            "output": {"uri": "pvc://models/prefer"},
            "search": {"algorithm": "grid", "maxTrials": 2,
                       "parameters": [{"path": "method.dpo.beta", "values": BETAS}],
                       "objective": {"metric": "preference_accuracy",
                                     "direction": "maximize"}}}}))
    tuned = run("run", str(job), "--no-progress")
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]

    summary = json.loads((root / "models" / "prefer" / "tuning.json").read_text())
    assert summary["metric"] == "preference_accuracy"
    trials = summary["trials"]
    assert [t["params"]["method.dpo.beta"] for t in trials] == BETAS
    assert all(t["state"] == "Succeeded" for t in trials), trials
    best = max(trials, key=lambda t: t["objective"])
    assert summary["best"] == best["name"]

    evals = [r for r in map(json.loads, (root / "models" / "prefer" / best["name"] /
                                         "metrics.jsonl").read_text().splitlines())
             if "eval_loss" in r]
    before, after = (evals[0]["metrics"]["preference_accuracy"],
                     evals[-1]["metrics"]["preference_accuracy"])
    print(f"held-out preference accuracy: base model {before:.1%}, after DPO ({best['name']}, "
          f"beta {best['params']['method.dpo.beta']}) {after:.1%}; KL to the base "
          f"{evals[-1]['metrics']['eval_kl']:.3f} nats/token")
    assert before == 0.5, "before tuning, the model is its own reference"
    assert after >= 0.85 and best["objective"] == pytest.approx(after)

    reported = run("report", str(job))
    assert reported.returncode == 0, reported.stderr
    assert "preference_accuracy" in reported.stdout, reported.stdout

    spoken = run("generate", str(job), "--prompt", "ROMEO:\n", "--tokens", "40")
    assert spoken.returncode == 0, spoken.stderr
    assert spoken.stdout.startswith("ROMEO:\n") and len(spoken.stdout) > 30
