"""A search's trials as a table, the same one while `mentor run` goes and in `mentor report`.

One row a trial: its state, objective, the steps it reached, its GPU-hours and parameters, the
best marked. The first row is the base model, as every trial measured it before tuning (its
eval loss at step 0), so the table says what the tuning gained.
"""

from __future__ import annotations

from typing import Any

from mentor.decide.trialview import Trial

HEADER = (f"  {'trial':<24} {'state':<10} {'objective':>9} {'steps':>6} {'GPU-hours':>10}  "
          "parameters")


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def parameters(params: dict[str, Any]) -> str:
    """`learningRate=0.00376, rank=4`: each parameter by its field's own name."""
    return ", ".join(f"{path.rsplit('.', 1)[-1]}={_value(v)}" for path, v in params.items())


def base_loss(trials: list[Trial]) -> float | None:
    """The base model's eval loss on the tuning data: every trial's step 0 (the same data and
    the same model, so any trial's will do)."""
    return next((t.evals[0] for t in trials if 0 in t.evals), None)


def base_row(trials: list[Trial]) -> str | None:
    loss = base_loss(trials)
    if loss is None:
        return None
    return f"  {'(base model)':<24} {'-':<10} {loss:>9.4f} {0:>6} {'-':>10}  before tuning"


def row(t: Trial, best: bool = False, note: str = "") -> str:
    objective = f"{t.objective:.4f}" if t.objective is not None else "-"
    if t.objective is None and t.evals:  # a pruned or stopped trial: its last eval loss
        objective = f"({t.evals[max(t.evals)]:.4f})"
    steps = str(max(t.evals)) if t.evals else "-"
    mark = "  <- best" if best else ""
    return (f"  {t.name:<24} {t.state:<10} {objective:>9} {steps:>6} {t.gpu_hours:>10.4f}  "
            f"{parameters(t.params)}{mark}{note}")


def gain(trials: list[Trial], winner: Trial) -> str:
    """The best trial's objective against the base model's, when both are known."""
    base = base_loss(trials)
    if base is None or winner.objective is None or not base:
        return ""
    change = 100 * (winner.objective - base) / base
    return f" ({base:.4f} before tuning: {abs(change):.0f}% {'lower' if change < 0 else 'higher'})"


def best_line(trials: list[Trial], winner: Trial, metric: str = "eval_loss") -> str:
    """The best trial by the search's metric; for the eval loss, against the base model's."""
    said = "eval loss" if metric == "eval_loss" else metric
    gained = gain(trials, winner) if metric == "eval_loss" else ""
    return f"  best trial    {winner.name}: {said} {winner.objective:.4f}{gained}"


def table(name: str, trials: list[Trial], winner: str | None,
          metric: str = "eval_loss") -> str:
    """`mentor report` of a search: counts, then the base model and every trial."""
    states = {s: sum(1 for t in trials if t.state == s)
              for s in ("Succeeded", "Pruned", "Failed", "Stopped")}
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n or s != "Stopped")
    lines = [f"{name}: {len(trials)} trial(s), {counts}", HEADER]
    base = base_row(trials)
    if base:
        lines.append(base)
    lines += [row(t, best=t.name == winner) for t in trials]
    chosen = next((t for t in trials if t.name == winner), None)
    if chosen is not None:
        lines.append(best_line(trials, chosen, metric))
    lines.append("  objective     the final value (eval loss, or the search's metric); in "
                 "brackets, the last one of a trial that did not finish")
    return "\n".join(lines)
