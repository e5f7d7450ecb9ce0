"""A TuningJob's trials as TrainingJobs, built from the TuningJob (mentor.decide.trialview reads
them back into the search).

Everything the search needs to be rebuilt lives on the trial itself: its number and parent in
labels, its parameters in an annotation, its eval losses, outcome and GPU-hours in its status.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from mentor.api.kinds import API_VERSION
from mentor.api.labels import TRIAL_FINALIZER, TRIAL_NUMBER, TRIAL_PARAMETERS, TUNING_JOB
from mentor.api.tracking import PARENT_ENV
from mentor.api.training import OBJECTIVE_ENV
from mentor.api.tuning import TuningJobSpec
from mentor.builders.names import JobRef


def trial_name(tuning: str, number: int) -> str:
    return f"{tuning}-t{number}"


def trial_output(uri: str, name: str, search_id: str = "") -> str:
    """<uri>/<search>/<trial>: a search created again under the same name (another UID) starts
    afresh, never resuming the old search's checkpoints or overwriting its models. On one
    machine (no UID) a rerun of the same file finds its trials where it left them."""
    return "/".join(part for part in (uri.rstrip("/"), search_id, name) if part)


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def trial_spec(spec: TuningJobSpec, name: str, base_uri: str, params: dict[str, Any],
               max_gpu_hours: float | None, search_id: str = "",
               search: str = "") -> dict[str, Any]:
    """The trial's TrainingJob spec (wire form): the TuningJob's sections with the parameters
    set at their paths, tuning `base_uri` into <output>/<search_id>/<trial>; or, for a custom
    trainer, its command with the parameters as arguments and variables. `search` (the
    TuningJob's name) is the parent run its tracked run nests under."""
    wire = spec.wire()
    checkpointing = dict(wire.get("checkpointing", {}))
    if checkpointing.get("uri"):
        checkpointing["uri"] = trial_output(checkpointing["uri"], name, search_id)
    policy = spec.trial_policy.wire()
    if max_gpu_hours is not None:
        policy["maxGPUHours"] = max_gpu_hours
    if spec.trainer.custom:
        trained: dict[str, Any] = {"trainer": custom_trainer(spec, params)}
    else:
        sections = {k: copy.deepcopy(wire[k]) for k in ("method", "data", "optimization")}
        for path, value in params.items():
            _set(sections, path, value)
        trained = {"model": {"from": base_uri, "tokenizer": "pretrained"},
                   "adaptation": sections["method"], "data": sections["data"],
                   "optimization": sections["optimization"]}
    template = wire.get("template", {})
    metric = spec.search.objective.metric if spec.search else "eval_loss"
    added = []
    if not spec.trainer.custom and metric != "eval_loss":  # DPO's preference_accuracy
        added.append({"name": OBJECTIVE_ENV, "value": metric})
    if search:
        direction = spec.search.objective.direction if spec.search else "minimize"
        added.append({"name": PARENT_ENV, "value": json.dumps({
            "name": search, "key": search_id or search, "metric": metric,
            "direction": direction}, sort_keys=True)})
    if added:
        template = {**template, "env": [*template.get("env", []), *added]}
    tracked = {"tracking": wire["tracking"]} if "tracking" in wire else {}
    return {
        **trained,
        **tracked,
        "parallelism": wire["parallelism"],
        "checkpointing": checkpointing,
        "output": {**wire["output"], "uri": trial_output(spec.output.uri, name, search_id)},
        "runPolicy": policy,
        "scheduling": wire.get("scheduling", {}),
        "template": template,
    }


def argument(value: Any) -> str:
    """A parameter's value as a command line or a variable carries it: exact (repr), whole
    numbers without a fraction, booleans in lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def custom_trainer(spec: TuningJobSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A custom trainer's section for one trial: each parameter appended to its args as
    `<arg> <value>`, or set as its variable; the objective metric named for mentor_trainer."""
    trainer = spec.trainer.wire()
    args, env = list(trainer.get("args", [])), list(trainer.get("env", []))
    for p in spec.search.parameters if spec.search else []:
        if p.arg:
            args += [p.arg, argument(params[p.key])]
        elif p.env:
            env.append({"name": p.env, "value": argument(params[p.key])})
    metric = spec.search.objective.metric if spec.search else "eval_loss"
    if metric != "eval_loss":
        env.append({"name": OBJECTIVE_ENV, "value": metric})
    return {**trainer, "args": args, **({"env": env} if env else {})}


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
