"""What a TuningJob's search needs to know of a trial, read once from its TrainingJob.

As mentor.decide.podview is for pods: the decisions never parse Kubernetes JSON, and the
parsing is tested against real trial objects (mentor.builders.trials writes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mentor.api.labels import TRIAL_NUMBER, TRIAL_PARAMETERS

RUNNING, SUCCEEDED, PRUNED, FAILED = "Running", "Succeeded", "Pruned", "Failed"


@dataclass
class Trial:
    """One trial as the search sees it (built from its TrainingJob by mentor.decide.tuning)."""

    number: int
    name: str
    params: dict[str, Any]
    state: str = RUNNING  # Running (not finished: pending included), Succeeded, Pruned, Failed
    objective: float | None = None
    evals: dict[int, float] = field(default_factory=dict)
    gpu_hours: float = 0.0
    cost: float | None = None
    model_uri: str | None = None
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    stopping: bool = False  # a stop was asked (pruned, or the search ended)

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


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
        objective=_objective(status) if state == SUCCEEDED else None,
        # A custom trainer's objective metric by step, else the eval losses: what is pruned on.
        evals={int(e["step"]): float(e["loss"])
               for e in progress.get("objectives") or progress.get("evals", [])},
        gpu_hours=float(status.get("gpuHours") or 0.0),
        cost=status.get("costEstimate"),
        model_uri=status.get("output") or (spec.get("output") or {}).get("uri"),
        reason=stopped.get("reason", ""),
        message=stopped.get("message", ""),
        exit_code=failures[-1].get("exitCode") if failures and state == FAILED else None,
        stopping=bool((spec.get("runPolicy") or {}).get("stop")),
    )


def _objective(status: dict[str, Any]) -> float | None:
    """The trial's final eval loss: from its result (the trainer's own last word, durable), else
    from the last progress report that reached its status."""
    progress = status.get("progress") or {}
    if progress.get("objectives"):  # a custom trainer's objective metric: its last value
        return progress.get("objective")
    result = status.get("result") or {}
    if result.get("evalLoss") is not None:
        return float(result["evalLoss"])
    return progress.get("evalLoss")
