"""`mentor run tuning.yaml`: a TuningJob's search on this machine, one trial after another.

The trials are the cluster's trials, decided by the same policy (mentor.decide.tuning): the same
parameters (seeded per trial), the same TrainingJob specs (mentor.builders.trials), the same
pruner judging the same eval losses, the same budget with its reservations, and the same
reasons. Each trial runs as `mentor run` runs a TrainingJob; a table row is
printed as each one ends, and `tuning.json` in the output keeps them all for `mentor report`.
A trial that already finished in an earlier run of the same file is read back, not run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path

from mentor.api import exitcodes
from mentor.api.kinds import TrainingJob, TuningJob
from mentor.api.status import Reason
from mentor.api.tuning import TuningJobSpec, TuningStatus
from mentor.decide.search import best, size
from mentor.decide.trialview import FAILED, PRUNED, SUCCEEDED, Trial
from mentor.decide.tuning import Base, NewTrial, decide
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


def run(job: TuningJob, progress: bool = True, fresh: bool = False) -> int:
    """The search, one trial at a time, decided by the operator's own policy
    (mentor.decide.tuning): the same trials, budget reservations, pruning, limits and reasons.
    Between trials it decides what comes next; during one, each new eval loss is judged by it."""
    name, spec = job.metadata.name, _one_at_a_time(job.spec)
    base = Base(uri=base_uri(job))
    trials: list[Trial] = []
    status = TuningStatus()
    print(f"TuningJob {name}: up to {size(spec.search)} trial(s) of {spec.method.type} on "
          f"{base.uri}, one after another")
    print(f"  {'trial':<24} {'state':<10} {'objective':>9} {'last eval':>14}  parameters")
    while True:
        plan = decide(name, spec, status, trials, [], base, _now())
        status = plan.status
        if not plan.create:
            break
        trial = _run_trial(name, spec, status, trials, base, plan.create[0], progress, fresh)
        print(_table_row(trial), flush=True)
        if trial.state == FAILED and trial.exit_code == exitcodes.SIGTERM:
            # Ctrl-C: the trial wrote a checkpoint; the same command resumes it.
            status.reason = "Stopped"
            break
    winner = best(trials, spec.search.objective.direction if spec.search else "minimize")
    ended = status.reason or "Stopped"
    _write_summary(job, trials, winner, ended)
    counts = {s: sum(1 for t in trials if t.state == s) for s in (SUCCEEDED, PRUNED, FAILED)}
    print(f"TuningJob {name}: {ended}; {len(trials)} trial(s): "
          f"{counts[SUCCEEDED]} succeeded, {counts[PRUNED]} pruned, {counts[FAILED]} failed")
    if ended == "Stopped":
        print("  stopped: run the same command again to resume the trial where it stopped")
    if winner is None:
        ending = next((c for c in status.conditions if c.status == "True"), None)
        print(f"  no trial succeeded{': ' + ending.message if ending else ''}")
        return 1
    print(f"  best trial    {winner.name}: eval loss {winner.objective:.4f}")
    print(f"  parameters    {json.dumps(winner.params)}")
    print(f"  model         {winner.model_uri}")
    print(f"  summary       {summary_path(job)} (mentor report {summary_path(job).parent} "
          "plots every trial)")
    return 0


def _one_at_a_time(spec: TuningJobSpec) -> TuningJobSpec:
    """On one machine the trials run one after another."""
    if spec.search is None or spec.search.parallel_trials == 1:
        return spec
    return spec.model_copy(update={"search": spec.search.model_copy(
        update={"parallel_trials": 1})})


def _run_trial(name: str, spec: TuningJobSpec, status: TuningStatus, trials: list[Trial],
               base: Base, new: NewTrial, progress: bool, fresh: bool) -> Trial:
    """Run (or read back, if an earlier run of the same file finished it) one trial."""
    trial = Trial(number=new.number, name=new.name, params=new.params)
    trainee = TrainingJob.model_validate({"metadata": {"name": new.name}, "spec": new.spec})
    trial.model_uri = local.local_path(trainee.spec.output.uri)
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
        return trial

    def stop(evals: dict[int, float]) -> bool:
        """Judged on each new eval loss, once, as the operator would judge the trial."""
        if evals == trial.evals:
            return False
        trial.evals = dict(evals)
        stops = decide(name, spec, status, trials, [], base, _now()).stop
        if trial.name in stops:
            trial.stopping, (trial.reason, trial.message) = True, stops[trial.name]
        return trial.stopping

    outcome = local.run(trainee, progress=progress, stop_when=stop)
    trial.evals, trial.gpu_hours = outcome.evals, outcome.gpu_hours
    if outcome.exit_code == exitcodes.OK:
        trial.state, trial.objective = SUCCEEDED, outcome.eval_loss
    elif outcome.exit_code == exitcodes.SIGTERM and trial.reason == Reason.PRUNED.value:
        trial.state = PRUNED
    else:
        trial.state, trial.exit_code = FAILED, outcome.exit_code
    return trial


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
