"""`mentor report`: a job's history, and its summary in words (mentor.report.plots draws it).

The history is the metrics log (metrics.jsonl) that rank 0 writes beside the model: it exists
wherever the job ran, on a laptop or on a cluster volume, and needs no Prometheus. GPU-hours over
time are the GPUs the trainer used × the time its steps took, summed across restarts (the gaps
between attempts hold no GPU and are not counted).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    hours: list[float] = field(default_factory=list)  # wall-clock hours since the first step
    gpu_hours: list[float] = field(default_factory=list)
    tokens_per_second: list[float] = field(default_factory=list)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # custom, by step
    checkpoints: list[int] = field(default_factory=list)  # only those still on disk
    total_steps: int | None = None
    outcome: dict[str, Any] | None = None  # the trainer's last word: succeeded, failed, stopped

    @property
    def used_gpus(self) -> bool:
        return bool(self.gpu_hours) and self.gpu_hours[-1] > 0


def _kept(path: str, output: Path) -> bool:
    """Whether a logged checkpoint still exists (pruning removes all but the last `keep`). The
    log names it as the trainer saw it, which in a pod is the pod's mount path."""
    return Path(path).exists() or (output / "checkpoints" / Path(path).name).exists()


def read_history(metrics_log: Path) -> History:
    """Parse the log; a step logged twice (before a crash and after the resume) keeps the last."""
    records = [json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()]
    by_step: dict[int, dict[str, Any]] = {}
    evals: dict[int, float] = {}
    h = History()
    gpu_seconds, previous_time = 0.0, None
    for r in records:
        if "loss" in r:
            step_seconds = float(r.get("seconds_per_step") or 0.0)
            gpu_seconds += int(r.get("gpus") or 0) * step_seconds
            by_step[r["step"]] = {**r, "gpu_hours": gpu_seconds / 3600}
            h.total_steps = r.get("total_steps", h.total_steps)
            previous_time = r["time"]
        if "eval_loss" in r:  # alone (the built-in trainer), or with a custom trainer's step
            evals[r["step"]] = r["eval_loss"]
        elif "checkpoint" in r:
            if _kept(r["checkpoint"], metrics_log.parent) and r["step"] not in h.checkpoints:
                h.checkpoints.append(r["step"])
        elif "outcome" in r:
            h.outcome = r
    start = min((r["time"] for r in by_step.values()), default=previous_time or 0.0)
    for step in sorted(by_step):
        r = by_step[step]
        h.steps.append(step)
        h.losses.append(r["loss"])
        h.hours.append((r["time"] - start) / 3600)
        h.gpu_hours.append(r["gpu_hours"])
        h.tokens_per_second.append(r.get("tokens_per_second") or 0.0)  # none: a custom trainer
        for name, value in r.get("metrics", {}).items():
            h.metrics.setdefault(name, []).append((step, value))
    h.eval_steps = sorted(evals)
    h.eval_losses = [evals[s] for s in h.eval_steps]
    return h


def outcome_line(name: str, h: History) -> str:
    """How the run ended, in the trainer's own words (its last record in the log)."""
    at = f"step {h.steps[-1]}/{h.total_steps}" if h.steps else "step 0"
    outcome = h.outcome or {}
    if outcome.get("outcome") == "succeeded":
        return f"{name}: succeeded at {at}"
    if outcome.get("outcome") == "stopped":
        return f"{name}: stopped at {at} with a checkpoint (run it again to resume)"
    if outcome.get("outcome") == "failed":
        code = f" (exit code {outcome['exit_code']})" if outcome.get("exit_code") else ""
        return f"{name}: failed at {at}{code}: {outcome.get('reason')}"
    return f"{name}: at {at}, no outcome yet (still running, or killed before it could say)"


def summary(name: str, h: History) -> str:
    lines = [outcome_line(name, h)]
    if not h.steps:
        return lines[0]
    lines.append(f"  loss          {h.losses[0]:.4f} -> {h.losses[-1]:.4f}")
    if h.eval_losses:
        lines.append(f"  eval loss     {h.eval_losses[0]:.4f} -> {h.eval_losses[-1]:.4f} "
                     f"(best {min(h.eval_losses):.4f})")
    for metric, values in h.metrics.items():
        lines.append(f"  {metric:<13} {values[0][1]:.4f} -> {values[-1][1]:.4f}")
    mean_tps = sum(h.tokens_per_second) / len(h.tokens_per_second)
    if mean_tps:
        lines.append(f"  tokens/s      {mean_tps:.0f} (mean)")
    if h.used_gpus:
        lines.append(f"  GPU-hours     {h.gpu_hours[-1]:.4f}")
    if h.checkpoints:
        lines.append(f"  checkpoints   {len(h.checkpoints)} kept (last at step "
                     f"{h.checkpoints[-1]})")
    return "\n".join(lines)


def tracking_lines(output: Path) -> list[str]:
    """Where else the run is recorded: its TensorBoard event files and its MLflow run (with the
    records still waiting to be sent, if the server was unreachable)."""
    lines = []
    if (output / "tensorboard").is_dir():
        lines.append(f"  tensorboard   tensorboard --logdir {output / 'tensorboard'}")
    state = output / ".mentor" / "tracking"
    with contextlib.suppress(OSError, ValueError, KeyError):
        run = json.loads((state / "run.json").read_text())
        sent = int((state / "sent").read_text() or 0) if (state / "sent").exists() else 0
        waiting = (state / "outbox.jsonl").stat().st_size - sent
        lines.append(f"  mlflow        {run['url']}" + (
            f" ({waiting} bytes of records wait: the next attempt sends them, or mentor sync)"
            if waiting > 0 else ""))
    return lines
