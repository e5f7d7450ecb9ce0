"""Small real TrainingJobs for the e2e tests: a tiny char model on the plays, on the agent."""

from __future__ import annotations

from typing import Any

from node_agent import NODE_LABEL


def spec(name: str, steps: int = 60, **sections: dict[str, Any]) -> dict[str, Any]:
    """One node of two gloo processes by default; `sections` are merged over each section."""
    base: dict[str, Any] = {
        "model": {"size": "tiny", "tokenizer": "char"},
        "data": {"source": "pvc://datasets/plays.txt", "sequenceLength": 64},
        "optimization": {"steps": steps, "globalBatchSize": 16, "microBatchSize": 8,
                         "learningRate": 3e-3, "warmupSteps": 5, "evalInterval": 1000,
                         "precision": "fp32"},
        "parallelism": {"nodes": 1, "procsPerNode": 2},
        "checkpointing": {"intervalSteps": 10, "keep": 10},
        "output": {"uri": f"pvc://models/{name}"},
        "runPolicy": {"backoffLimit": 2},
        "scheduling": {"nodeSelector": {NODE_LABEL: "local"}},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return base


def job(name: str, steps: int = 60, **sections: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": spec(name, steps, **sections)}
