"""`mentor report`'s pictures: a job's loss curves and GPU-hours, and a search's trials.

matplotlib is imported only when a picture is drawn, so the operator and the CLI stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mentor.decide.trialview import Trial
from mentor.report.history import History, outcome_line


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot(name: str, h: History, path: Path) -> Path:
    """Loss and eval loss by step, and (when the run held GPUs) GPU-hours over wall time."""
    plt = _pyplot()
    if h.used_gpus:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    else:
        fig, left = plt.subplots(1, 1, figsize=(6.5, 4), dpi=110)
    left.plot(h.steps, h.losses, label="training loss", color="#4C72B0", linewidth=1)
    if h.eval_losses:
        left.plot(h.eval_steps, h.eval_losses, "o-", label="eval loss", color="#DD8452")
    left.set_xlabel("step")
    left.set_ylabel("loss (nats per token)")
    left.set_title(outcome_line(name, h).split(" (")[0] if h.outcome else f"{name}: loss")
    left.grid(alpha=0.3)
    left.legend()
    if h.used_gpus:
        right.plot([x * 60 for x in h.hours], h.gpu_hours, color="#55A868")
        right.set_xlabel("wall time (minutes)")
        right.set_ylabel("GPU-hours")
        right.set_title("GPU-hours (GPUs × time held)")
        right.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_trials(name: str, trials: list[Trial], winner: str | None, path: Path) -> Path:
    """Every trial's eval loss by step on one chart; the best trial drawn bold."""
    plt = _pyplot()
    fig, ax = plt.subplots(1, 1, figsize=(7, 4.2), dpi=110)
    for t in trials:
        if not t.evals:
            continue
        steps = sorted(t.evals)
        best = t.name == winner
        style = "x--" if t.state == "Pruned" else "o-"
        ax.plot(steps, [t.evals[s] for s in steps], style,
                linewidth=2.5 if best else 1, alpha=1 if best else 0.6,
                label=f"{t.name} ({t.state.lower()}){' best' if best else ''}")
    ax.set_xlabel("step")
    ax.set_ylabel("eval loss (nats per token)")
    ax.set_title(f"{name}: eval loss of every trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
