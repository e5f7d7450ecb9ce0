"""`mentor run` rejects what the API server rejects, with the same field paths."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mentor.validation import InvalidJob, validate

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
]


def with_changes(changes: dict[str, Any], base: dict[str, Any] = BASE) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["spec"].update(copy.deepcopy(changes))
    return obj


def test_a_valid_job_gets_defaults() -> None:
    job = validate(copy.deepcopy(BASE))
    assert job.spec.parallelism.nodes == 1
    assert job.spec.optimization.global_batch_size == 32
    assert job.spec.run_policy.backoff_limit == 3


@pytest.mark.parametrize(("name", "changes", "path", "words"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_spec_names_its_field(name: str, changes: dict[str, Any], path: str,
                                      words: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        validate(with_changes(changes))
    paths = [e.path for e in caught.value.errors]
    assert path in paths, f"{name}: {caught.value}"
    assert words in str(caught.value)


def test_bad_name_is_rejected_with_its_path() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = "Not_A_Label"
    with pytest.raises(InvalidJob, match=r"metadata\.name: .*DNS-1035"):
        validate(obj)
