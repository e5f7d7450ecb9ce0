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
from typing import Any

from mentor.api import exitcodes
from mentor.api.kinds import TrainingJob, TuningJob
from mentor.api.status import Reason
from mentor.api.tuning import TuningJobSpec, TuningStatus
from mentor.decide.search import best, size
from mentor.decide.trialview import FAILED, PRUNED, SUCCEEDED, Trial
from mentor.decide.tuning import Base, NewTrial, decide
from mentor.local import reruns
from mentor.local import training as local
from mentor.report import trials as shown

SUMMARY = "tuning.json"
VERDICT = "trial.json"  # in a trial's .mentor/: how it ended, so that a rerun reads it back
STOPPED = "Stopped"  # interrupted here (Ctrl-C): it resumes when the same command runs again


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
    """The model the trials tune; '' for a custom trainer's search, which has none."""
    spec = job.spec.base_model
    if spec is None:
        return ""
    if spec.uri:
        return spec.uri
    assert spec.training_job_ref is not None
    name = spec.training_job_ref.name
    record = runs_dir() / f"{name}.json"
    if not record.exists():
        raise TuningFailed(f"baseModel.trainingJobRef: no TrainingJob {name!r} has succeeded on "
                           f"this machine; run it first (mentor run <its file>)")
    return str(json.loads(record.read_text())["output"])


def run(job: TuningJob, progress: bool = True, fresh: bool = False,
        file: str = "<the job's file>", here: Path | None = None) -> int:
    """The search, one trial at a time, decided by the operator's own policy
    (mentor.decide.tuning): the same trials, budget reservations, pruning, limits and reasons.
    Between trials it decides what comes next; during one, each new eval loss is judged by it.
    `file` is how the user named the job, for the commands the summary suggests."""
    name, spec = job.metadata.name, _one_at_a_time(job.spec)
    base = Base(uri=base_uri(job))
    trials: list[Trial] = []
    status = TuningStatus()
    what = f"{spec.method.type} on {base.uri}" if base.uri else "your trainer"
    print(f"TuningJob {name}: up to {size(spec.search)} trial(s) of {what}, one after another")
    print(shown.HEADER)
    while True:
        plan = decide(name, spec, status, trials, [], base, _now())
        status = plan.status
        if not plan.create:
            break
        trial, earlier = _run_trial(name, spec, status, trials, base, plan.create[0], progress,
                                    fresh, here)
        if len(trials) == 1 and shown.base_row(trials):
            print(shown.base_row(trials))
        print(shown.row(trial, note="  (finished in an earlier run: read back)" if earlier
                        else f"  (exit code {trial.exit_code}: see {trial.model_uri}"
                             "/.mentor/logs)" if trial.state == FAILED else ""), flush=True)
        if trial.state == STOPPED:  # Ctrl-C: the trial wrote a checkpoint
            status.reason = STOPPED
            break
    winner = best(trials, spec.search.objective.direction if spec.search else "minimize")
    ended = status.reason or STOPPED
    _write_summary(job, trials, winner, ended)
    counts = {s: sum(1 for t in trials if t.state == s)
              for s in (SUCCEEDED, PRUNED, FAILED, STOPPED)}
    print(f"TuningJob {name}: {ended}; {len(trials)} trial(s): "
          + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n or s != STOPPED))
    if ended == STOPPED:
        print(f"  stopped       run the same command again to resume the trial where it "
              f"stopped: mentor run {file}")
    if winner is None:
        ending = next((c for c in status.conditions if c.status == "True"), None)
        print(f"  no trial succeeded{': ' + ending.message if ending else ''}")
        return exitcodes.SIGTERM if ended == STOPPED else 1
    print(shown.best_line(trials, winner, metric_of(spec)))
    print(f"  parameters    {shown.parameters(winner.params)}")
    print(f"  model         {winner.model_uri}")
    if not spec.trainer.custom:  # a model Mentor wrote, which it knows how to sample
        print(f"  next          mentor generate {file}   (samples the best trial's model)")
    print(f"  report        mentor report {file}     (every trial, and a picture)")
    return exitcodes.SIGTERM if ended == STOPPED else 0  # as an interrupted TrainingJob


def _one_at_a_time(spec: TuningJobSpec) -> TuningJobSpec:
    """On one machine the trials run one after another."""
    if spec.search is None or spec.search.parallel_trials == 1:
        return spec
    return spec.model_copy(update={"search": spec.search.model_copy(
        update={"parallel_trials": 1})})


def _run_trial(name: str, spec: TuningJobSpec, status: TuningStatus, trials: list[Trial],
               base: Base, new: NewTrial, progress: bool, fresh: bool,
               here: Path | None) -> tuple[Trial, bool]:
    """Run one trial, or read it back (True) if an earlier run of the same file finished it:
    a succeeded or pruned trial is never trained again; an interrupted one resumes."""
    trial = Trial(number=new.number, name=new.name, params=new.params)
    trainee = TrainingJob.model_validate({"metadata": {"name": new.name}, "spec": new.spec})
    trial.model_uri = local.local_path(trainee.spec.output.uri)
    try:
        prior = local.prepare(trainee, fresh)
    except reruns.Refused as e:
        raise TuningFailed(str(e)) from None
    trials.append(trial)
    verdict = Path(trial.model_uri or ".") / reruns.STATE / VERDICT
    if prior is not None and verdict.exists():
        trials[-1] = _from_json(json.loads(verdict.read_text()))
        return trials[-1], True
    if prior is not None and prior.finished and prior.history is not None:  # before trial.json
        trial.evals = dict(zip(prior.history.eval_steps, prior.history.eval_losses, strict=True))
        losses = prior.history.eval_losses
        trial.state, trial.objective = SUCCEEDED, losses[-1] if losses else None
        return trial, True

    def stop(evals: dict[int, float]) -> bool:
        """Judged on each new eval loss, once, as the operator would judge the trial."""
        if evals == trial.evals:
            return False
        trial.evals = dict(evals)
        stops = decide(name, spec, status, trials, [], base, _now()).stop
        if trial.name in stops:
            trial.stopping, (trial.reason, trial.message) = True, stops[trial.name]
        return trial.stopping

    outcome = local.run(trainee, progress=progress, stop_when=stop, here=here)
    trial.evals, trial.gpu_hours = outcome.evals, outcome.gpu_hours
    if outcome.exit_code == exitcodes.OK:
        trial.state, trial.objective = SUCCEEDED, outcome.objective
    elif outcome.exit_code == exitcodes.SIGTERM and trial.reason == Reason.PRUNED.value:
        trial.state = PRUNED
    elif outcome.exit_code == exitcodes.SIGTERM:
        trial.state = STOPPED
    else:
        trial.state, trial.exit_code = FAILED, outcome.exit_code
    if trial.state in (SUCCEEDED, PRUNED):  # final: a rerun reads it back
        trial.stopping = False
        verdict.write_text(json.dumps(_to_json(trial), indent=2))
    return trial, False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def summary_path(job: TuningJob) -> Path:
    return Path(local.local_path(job.spec.output.uri) or ".") / SUMMARY


def _write_summary(job: TuningJob, trials: list[Trial], winner: Trial | None,
                   ended: str) -> None:
    path = summary_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [_to_json(t) for t in trials]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": job.metadata.name, "ended": ended,
                               "best": winner.name if winner else None,
                               "metric": metric_of(job.spec), "trials": rows}, indent=2))
    os.replace(tmp, path)


def metric_of(spec: TuningJobSpec) -> str:
    """What the search ranks its trials by."""
    return spec.search.objective.metric if spec.search else "eval_loss"


def read_summary(path: Path) -> tuple[list[Trial], str | None, str]:
    """The trials, the best one's name and the metric they were ranked by."""
    data = json.loads(path.read_text())
    return ([_from_json(row) for row in data["trials"]], data.get("best"),
            data.get("metric", "eval_loss"))


def _to_json(trial: Trial) -> dict[str, Any]:
    return {**asdict(trial), "evals": {str(k): v for k, v in trial.evals.items()}}


def _from_json(row: dict[str, Any]) -> Trial:
    return Trial(**{**row, "evals": {int(k): v for k, v in row["evals"].items()}})
