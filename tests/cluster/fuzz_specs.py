"""The fuzz set's generated specs: 1,000 drawn from the pydantic models' JSON schema.

Drawing them takes hypothesis about two minutes of CPU, so the session starts this file as a
child process as soon as it knows the fuzz test will run (see `tests/conftest.py`): the specs
are drawn on the idle core while the control planes boot and the earlier suites wait on them.
Run alone: `python tests/cluster/fuzz_specs.py OUT.json [N]`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from harness import training_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from mentor.api.training import TrainingJobSpec

GENERATED = 1000
DRAWING = pytest.StashKey[tuple[subprocess.Popen[bytes], Path]]()


def spec_schema() -> dict[str, Any]:
    """The spec's JSON schema, with the gang capped at 2 pods of at most 2 GPUs or processes so
    that the accepted jobs fit the fake cluster."""
    schema = TrainingJobSpec.model_json_schema(by_alias=True, mode="validation")
    parallelism = schema["$defs"]["ParallelismSpec"]["properties"]
    parallelism["nodes"]["maximum"] = 2
    for field in ("gpusPerNode", "procsPerNode"):
        for option in parallelism[field].get("anyOf", [parallelism[field]]):
            if option.get("type") == "integer":
                option["maximum"] = 2
    return schema


NASTY_VALUES = st.one_of(
    st.text(min_size=1, max_size=64),                        # unicode of every plane
    st.just("x" * 100_000),                                  # a huge string
    st.just(["a"] * 10_000),                                 # a 10,000-element list
    st.integers(min_value=-2**70, max_value=2**70),          # beyond int64
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN or Infinity
    st.booleans(), st.none(), st.just({}), st.just([]),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A generated spec with one field (or one new key) set to a value of the wrong kind."""
    spec = copy.deepcopy(draw(valid))
    leaves = [p for p in _leaves(spec) if p]
    path = draw(st.sampled_from(leaves)) if leaves else ("model",)
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(NASTY_VALUES)
    return spec


@st.composite
def overlaid(draw: st.DrawFn, generated: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A working spec with one or two of its sections replaced by generated ones: most whole
    generated specs break a cross-field rule, so these reach the operator more often."""
    spec = training_job("x")["spec"]
    new = draw(generated)
    for section in draw(st.sets(st.sampled_from(sorted(new) or ["model"]), min_size=1,
                                max_size=2)):
        if section in new:
            spec[section] = new[section]
    return spec


def generate(n: int = GENERATED) -> list[dict[str, Any]]:
    """The same n specs on every run (derandomized): whole generated specs, working ones with
    generated sections, and those with one field of the wrong kind."""
    generated = from_schema(spec_schema())
    out: list[dict[str, Any]] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(generated, overlaid(generated), mutated(overlaid(generated))))
    def collect(spec: dict[str, Any]) -> None:
        out.append(spec)

    collect()
    return out[:n]


def start_drawing(config: pytest.Config) -> None:
    """Start drawing the specs in a child process; `drawn_specs` collects them."""
    out = Path(tempfile.mkdtemp(prefix="fuzz-specs-")) / "specs.json"
    proc = subprocess.Popen([sys.executable, __file__, str(out)], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    config.stash[DRAWING] = (proc, out)


def drawn_specs(config: pytest.Config) -> list[dict[str, Any]]:
    """The child's specs once it is done, or specs drawn here if it was never started or did
    not finish (the same specs: the draw is derandomized)."""
    if DRAWING not in config.stash:
        return generate()
    proc, out = config.stash[DRAWING]
    _, err = proc.communicate()
    if proc.returncode != 0:
        print(f"the child drawing the fuzz specs ended with {proc.returncode}: drawing them "
              f"here ({err.decode()[-500:]})")
        return generate()
    specs: list[dict[str, Any]] = json.loads(out.read_text())
    return specs


if __name__ == "__main__":
    os.nice(10)  # the tests that run meanwhile come first
    specs = generate(int(sys.argv[2]) if len(sys.argv) > 2 else GENERATED)
    with open(sys.argv[1] + ".part", "w") as f:
        json.dump(specs, f)
    os.replace(sys.argv[1] + ".part", sys.argv[1])
