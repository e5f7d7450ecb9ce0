"""Invalid TrainingJob specs, each with the field path an error must name.

Shared by the unit tests (mentor.api.validation, for `mentor run`) and the cluster tests (the API
server), so that both sides are held to the same cases.
"""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "mentor.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "demo"},
    "spec": {
        "model": {"size": "tiny"},
        "data": {"source": "/data/input.txt"},
        "optimization": {"steps": 10},
        "output": {"uri": "/out"},
    },
}

# (what is changed, the path the error names, a word of the message); shared with the cluster test
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("steps-and-epochs", {"optimization": {"steps": 10, "epochs": 1}}, "spec.optimization",
     "exactly one of steps or epochs"),
    ("zero-steps", {"optimization": {"steps": 0}}, "spec.optimization.steps", "1"),
    ("zero-nodes", {"parallelism": {"nodes": 0}}, "spec.parallelism.nodes", "1"),
    ("reserved-env", {"template": {"env": [{"name": "PET_NNODES", "value": "4"}]}},
     "spec.template.env", "torchrun"),
    ("master-addr-env", {"template": {"env": [{"name": "MASTER_ADDR", "value": "x"}]}},
     "spec.template.env", "torchrun"),
    ("size-and-from", {"model": {"size": "tiny", "from": "hf://gpt2"}}, "spec.model",
     "exactly one of size"),
    ("unknown-strategy", {"parallelism": {"strategy": "zero3"}}, "spec.parallelism.strategy",
     "ddp"),
    ("jsonl-without-field", {"data": {"source": "/d.jsonl", "format": "jsonl"}},
     "spec.data.field", "jsonl data needs field"),
    ("gpus-and-procs", {"parallelism": {"gpusPerNode": 8, "procsPerNode": 2}},
     "spec.parallelism", "not both"),
    ("micro-above-global", {"optimization": {"steps": 1, "globalBatchSize": 4,
                                             "microBatchSize": 8}},
     "spec.optimization.globalBatchSize", "at least microBatchSize"),
    ("validation-split", {"data": {"source": "/d", "validationSplit": 0.9}},
     "spec.data.validationSplit", "0.5"),
    ("negative-budget", {"runPolicy": {"maxGPUHours": -1}}, "spec.runPolicy.maxGPUHours", "0"),
    ("too-many-gpus", {"parallelism": {"gpusPerNode": 17}}, "spec.parallelism.gpusPerNode", "16"),
    ("ftp-output", {"output": {"uri": "ftp://host/models"}}, "spec.output.uri",
     "must be an absolute path, pvc://"),
    ("parent-segments", {"data": {"source": "pvc://datasets/../secrets/x"}}, "spec.data.source",
     "'..' segments"),
    ("batch-over-ranks", {"optimization": {"steps": 10, "globalBatchSize": 12,
                                           "microBatchSize": 4},
                          "parallelism": {"nodes": 2, "procsPerNode": 1}},
     "spec.optimization.globalBatchSize", "multiple of nodes × processes per node"),
    ("gpus-in-template", {"template": {"resources": {"limits": {"nvidia.com/gpu": 2}}},
                          "parallelism": {"gpusPerNode": 4}},
     "spec.template.resources.limits", "comes from spec.parallelism.gpusPerNode"),
    ("gpu-request-in-template", {"template": {"resources": {"requests": {"nvidia.com/gpu": "4"}}}},
     "spec.template.resources.requests", "comes from spec.parallelism.gpusPerNode"),
    ("beyond-int64", {"runPolicy": {"backoffLimit": 2**64}}, "spec.runPolicy.backoffLimit",
     "must be of type integer"),
    ("float-quantity", {"template": {"resources": {"limits": {"memory": 1.5}}}},
     "spec.template.resources.limits.memory", "integer"),
    ("custom-without-command", {"trainer": {"type": "custom"}}, "spec.trainer.command",
     "a custom trainer needs command"),
    ("builtin-with-a-command", {"trainer": {"command": ["train.py"]}}, "spec.trainer",
     "are for a custom trainer (type: custom)"),
    ("reserved-env-in-trainer", {"trainer": {"type": "custom", "command": ["train.py"], "env": [
        {"name": "MENTOR_CODE_DIR", "value": "/"}]}}, "spec.trainer.env", "torchrun's variables"),
    ("dpo-without-pairs", {"model": {"from": "/models/base"}, "adaptation": {"type": "dpo"}},
     "spec.data", "set data.format: preference"),
    ("pairs-without-dpo", {"data": {"source": "/pairs.jsonl", "format": "preference"}},
     "spec.data.format", "set adaptation.type: dpo"),
    ("quantized-full-tuning", {"model": {"from": "/models/base"}, "adaptation": {
        "type": "full", "lora": {"quantize": "nf4"}}}, "spec.adaptation.lora.quantize",
     "quantize is for a LoRA adapter"),
    ("quantized-under-fsdp", {"model": {"from": "/models/base"}, "adaptation": {
        "lora": {"quantize": "nf4"}}, "parallelism": {"strategy": "fsdp"}},
     "spec.parallelism.strategy", "use strategy ddp"),
    ("code-from-two-places", {"trainer": {"type": "custom", "command": ["train.py"], "code": {
        "path": "/app", "configMap": {"name": "c", "key": "train.py"}}}}, "spec.trainer.code",
     "set one of path or configMap"),
    ("tracking-not-http", {"tracking": {"mlflow": {"uri": "file:///mlruns"}}},
     "spec.tracking.mlflow.uri", "http"),
    ("registered-name-with-slash", {"output": {"uri": "/out", "register": {"name": "a/b"}}},
     "spec.output.register.name", "/"),
]


def with_changes(changes: dict[str, Any], base: dict[str, Any] = BASE) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["spec"].update(copy.deepcopy(changes))
    return obj
