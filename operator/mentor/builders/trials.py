"""A TuningJob's trials as TrainingJobs: built from the TuningJob, and read back into the search.

Everything the search needs to be rebuilt lives on the trial itself: its number and parent in
labels, its parameters in an annotation, its eval losses, outcome and GPU-hours in its status.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from mentor.api.kinds import API_VERSION
from mentor.api.tuning import TuningJobSpec
from mentor.builders.names import JobRef
from mentor.search import FAILED, PRUNED, RUNNING, SUCCEEDED, Trial

TUNING_JOB = "mentor.dev/tuning-job"
TRIAL_NUMBER = "mentor.dev/trial"
TRIAL_PARAMETERS = "mentor.dev/trial-parameters"
# On every trial: a deleted trial's GPU-hours reach the TuningJob's ledger before it goes.
TRIAL_FINALIZER = "mentor.dev/trial-accounting"
EXIT_MODEL_NOT_FOUND = 5  # the trainer's exit code when the model to start from cannot be loaded


def trial_name(tuning: str, number: int) -> str:
    return f"{tuning}-t{number}"


def trial_output(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}"


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def trial_spec(spec: TuningJobSpec, name: str, base_uri: str, params: dict[str, Any],
               max_gpu_hours: float | None) -> dict[str, Any]:
    """The trial's TrainingJob spec (wire form): the TuningJob's sections with the parameters
    set at their paths, tuning `base_uri` into <output>/<trial>."""
    wire = spec.wire()
    sections = {k: copy.deepcopy(wire[k]) for k in ("method", "data", "optimization")}
    for path, value in params.items():
        _set(sections, path, value)
    checkpointing = dict(wire.get("checkpointing", {}))
    if checkpointing.get("uri"):
        checkpointing["uri"] = trial_output(checkpointing["uri"], name)
    policy = spec.trial_policy.wire()
    if max_gpu_hours is not None:
        policy["maxGPUHours"] = max_gpu_hours
    return {
        "model": {"from": base_uri, "tokenizer": "pretrained"},
        "adaptation": sections["method"],
        "data": sections["data"],
        "optimization": sections["optimization"],
        "parallelism": wire["parallelism"],
        "checkpointing": checkpointing,
        "output": {"uri": trial_output(spec.output.uri, name)},
        "runPolicy": policy,
        "scheduling": wire.get("scheduling", {}),
        "template": wire.get("template", {}),
    }


def trial_job(owner: JobRef, number: int, spec: dict[str, Any],
              params: dict[str, Any]) -> dict[str, Any]:
    name = trial_name(owner.name, number)
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {TUNING_JOB: owner.name, TRIAL_NUMBER: str(number)},
            "annotations": {TRIAL_PARAMETERS: json.dumps(params, sort_keys=True)},
            "ownerReferences": [owner.owner_reference()],
            "finalizers": [TRIAL_FINALIZER],
        },
        "spec": spec,
    }


def trial_of(body: dict[str, Any]) -> Trial:
    """What the search needs of a trial, from its TrainingJob."""
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    progress = status.get("progress") or {}
    phase = status.get("phase")
    stopped: dict[str, Any] = next((c for c in status.get("conditions", [])
                    if c.get("type") in ("Stopped", "Failed") and c.get("status") == "True"), {})
    state = {"Succeeded": SUCCEEDED, "Failed": FAILED}.get(phase or "", RUNNING)
    if phase == "Stopped":
        state = PRUNED if stopped.get("reason") == "Pruned" else FAILED
    failures = status.get("failures") or []
    try:
        params = json.loads((meta.get("annotations") or {}).get(TRIAL_PARAMETERS, "{}"))
    except ValueError:
        params = {}
    return Trial(
        number=int((meta.get("labels") or {}).get(TRIAL_NUMBER, "-1")),
        name=meta["name"],
        params=params if isinstance(params, dict) else {},
        state=state,
        objective=progress.get("evalLoss") if state == SUCCEEDED else None,
        evals={int(e["step"]): float(e["loss"]) for e in progress.get("evals", [])},
        gpu_hours=float(status.get("gpuHours") or 0.0),
        cost=status.get("costEstimate"),
        model_uri=status.get("output") or (spec.get("output") or {}).get("uri"),
        reason=stopped.get("reason", ""),
        message=stopped.get("message", ""),
        exit_code=failures[-1].get("exitCode") if failures and state == FAILED else None,
        stopping=bool((spec.get("runPolicy") or {}).get("stop")),
    )
