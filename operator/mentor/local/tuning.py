"""`mentor run tuning.yaml`: a TuningJob's search on this machine, one trial after another.

The trials are the cluster's trials: the same parameters (mentor.decide.search, seeded per trial),
the same TrainingJob specs (mentor.builders.trials), the same pruner judging the same eval
losses, and the same budget. Each trial runs as `mentor run` runs a TrainingJob; a table row is
printed as each one ends, and `tuning.json` in the output keeps them all for `mentor report`.
A trial that already finished in an earlier run of the same file is read back, not run again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mentor.api import exitcodes
from mentor.api.kinds import TrainingJob, TuningJob
from mentor.builders.trials import trial_name, trial_spec
from mentor.decide.search import best, size, suggest, to_prune
from mentor.decide.trialview import FAILED, PRUNED, SUCCEEDED, Trial
from mentor.local import reruns
from mentor.local import training as local

SUMMARY = "tuning.json"


class TuningFailed(Exception):
    """The search cannot start or go on; the message says why."""


def runs_dir() -> Path:
    """Where local runs of TrainingJobs are recorded, so a TuningJob's trainingJobRef finds
    the model a `mentor run` of that job wrote."""
    return local.pvc_root() / reruns.STATE / "runs"


def record_run(job: TrainingJob) -> None:
    path = runs_dir() / f"{job.metadata.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"output": job.spec.output.uri}))


def base_uri(job: TuningJob) -> str:
    spec = job.spec.base_model
    if spec.uri:
        return spec.uri
    assert spec.training_job_ref is not None
    name = spec.training_job_ref.name
    record = runs_dir() / f"{name}.json"
    if not record.exists():
        raise TuningFailed(f"baseModel.trainingJobRef: no TrainingJob {name!r} has succeeded on "
                           f"this machine; run it first (mentor run <its file>)")
    return str(json.loads(record.read_text())["output"])


def _table_row(t: Trial) -> str:
    params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else
                       f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.params.items())
    objective = f"{t.objective:.4f}" if t.objective is not None else "-"
    last = f"{t.evals[max(t.evals)]:.4f}@{max(t.evals)}" if t.evals else "-"
    note = f"  (exit code {t.exit_code}: see {t.model_uri}/.mentor/logs)" \
        if t.exit_code is not None else ""
    return f"  {t.name:<24} {t.state:<10} {objective:>9} {last:>14}  {params}{note}"


def _trial_job(trial: Trial, spec: dict[str, Any]) -> TrainingJob:
    return TrainingJob.model_validate({"metadata": {"name": trial.name}, "spec": spec})


def run(job: TuningJob, progress: bool = True, fresh: bool = False) -> int:
    spec, search = job.spec, job.spec.search
    base = base_uri(job)
    total = size(search)
    budget = spec.budget.max_gpu_hours
    trials: list[Trial] = []
    print(f"TuningJob {job.metadata.name}: up to {total} trial(s) of {spec.method.type} on "
          f"{base}, one after another")
    print(f"  {'trial':<24} {'state':<10} {'objective':>9} {'last eval':>14}  parameters")
    ended = "SearchComplete"
    for number in range(total):
        used = sum(t.gpu_hours for t in trials)
        if budget and used >= budget:
            ended = "BudgetExhausted"
            break
        trial = Trial(number=number, name=trial_name(job.metadata.name, number),
                      params=suggest(search, trials, number))
        body = trial_spec(spec, trial.name, base, trial.params,
                          round(budget - used, 6) if budget else None)
        trainee = _trial_job(trial, body)
        try:
            prior = local.prepare(trainee, fresh)
        except reruns.Refused as e:
            raise TuningFailed(str(e)) from None
        trials.append(trial)
        if prior is not None and prior.finished and prior.history is not None:
            history = prior.history
            trial.evals = dict(zip(history.eval_steps, history.eval_losses, strict=True))
            trial.state = SUCCEEDED
            trial.objective = history.eval_losses[-1] if history.eval_losses else None
        else:
            def pruned(evals: dict[int, float], trial: Trial = trial) -> bool:
                if evals == trial.evals:  # judged on each new eval loss, once
                    return False
                trial.evals = dict(evals)
                trial.stopping = any(t is trial for t in to_prune(search, trials))
                return trial.stopping

            outcome = local.run(trainee, progress=progress, stop_when=pruned)
            trial.evals, trial.gpu_hours = outcome.evals, outcome.gpu_hours
            if outcome.exit_code == 0:
                trial.state, trial.objective = SUCCEEDED, outcome.eval_loss
            elif outcome.exit_code == exitcodes.SIGTERM and trial.stopping:
                trial.state, trial.reason = PRUNED, "Pruned"
            else:
                trial.state, trial.exit_code = FAILED, outcome.exit_code
        trial.model_uri = local.local_path(trainee.spec.output.uri)
        print(_table_row(trial), flush=True)
        if trial.exit_code == exitcodes.MODEL_NOT_FOUND:
            ended = "BaseModelUnavailable"
            break
        if trial.state == FAILED and trial.exit_code == exitcodes.SIGTERM:
            ended = "Stopped"  # Ctrl-C: the trial checkpointed; the same command resumes
            break
        failed = sum(1 for t in trials if t.state == FAILED)
        if search and search.max_failed_trials and failed >= search.max_failed_trials:
            ended = "MaxFailedTrials"
            break
    winner = best(trials, search.objective.direction if search else "minimize")
    if winner is None and ended == "SearchComplete":
        ended = "AllTrialsFailed"
    _write_summary(job, trials, winner, ended)
    counts = {s: sum(1 for t in trials if t.state == s) for s in (SUCCEEDED, PRUNED, FAILED)}
    print(f"TuningJob {job.metadata.name}: {ended}; {len(trials)} trial(s): "
          f"{counts[SUCCEEDED]} succeeded, {counts[PRUNED]} pruned, {counts[FAILED]} failed")
    if winner is None:
        print("  no trial succeeded")
        return 1
    print(f"  best trial    {winner.name}: eval loss {winner.objective:.4f}")
    print(f"  parameters    {json.dumps(winner.params)}")
    print(f"  model         {winner.model_uri}")
    print(f"  summary       {summary_path(job)} (mentor report {job.metadata.name}.yaml plots "
          "every trial)")
    return 0


def summary_path(job: TuningJob) -> Path:
    return Path(local.local_path(job.spec.output.uri) or ".") / SUMMARY


def _write_summary(job: TuningJob, trials: list[Trial], winner: Trial | None,
                   ended: str) -> None:
    path = summary_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(t), "evals": {str(k): v for k, v in t.evals.items()}} for t in trials]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": job.metadata.name, "ended": ended,
                               "best": winner.name if winner else None, "trials": rows},
                              indent=2))
    os.replace(tmp, path)


def read_summary(path: Path) -> tuple[list[Trial], str | None]:
    data = json.loads(path.read_text())
    trials = []
    for row in data["trials"]:
        row["evals"] = {int(k): v for k, v in row["evals"].items()}
        trials.append(Trial(**row))
    return trials, data.get("best")
