"""`mentor run` rejects what the API server rejects, with the same field paths."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from invalid_specs import BASE, INVALID, with_changes
from mentor.api.validation import InvalidJob, validate


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


def test_the_builtin_trainer_needs_its_sections_and_a_custom_one_does_not() -> None:
    bare = copy.deepcopy(BASE)
    for section in ("model", "data", "optimization"):
        del bare["spec"][section]
    with pytest.raises(InvalidJob, match="spec: the built-in trainer needs model, data and "
                                         "optimization"):
        validate(bare)
    bare["spec"]["trainer"] = {"type": "custom", "command": ["-m", "mine.train"]}
    job = validate(bare)
    assert job.spec.model is None and job.spec.trainer.custom


def test_bad_name_is_rejected_with_its_path() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = "Not_A_Label"
    with pytest.raises(InvalidJob, match=r"metadata\.name: String should match pattern"):
        validate(obj)


def test_every_example_is_valid() -> None:
    from pathlib import Path

    import yaml

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        validate(yaml.safe_load(path.read_text()))
