"""The decisions of a TuningJob, pure: the job, its base model and its trials in, a plan out.

Like mentor.decide.training for TrainingJobs, nothing here does I/O, so every rule (budget
reservations, pruning, failure limits, what a deleted trial leaves behind) is a unit test, and
deciding twice on the same world gives the same plan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mentor.api import exitcodes
from mentor.api.kinds import TRAINING_JOB
from mentor.api.status import ConditionType, Phase, Reason
from mentor.api.training import TrainingJobSpec
from mentor.api.tuning import MAX_TOP_TRIALS, Lineage, TrialCounts, TrialSummary, TuningJobSpec
from mentor.api.tuning import TuningStatus as Status
from mentor.api.validation import cel_errors
from mentor.builders.trials import trial_name, trial_spec
from mentor.decide.conditions import Event, transition
from mentor.decide.search import best, size, suggest, to_prune
from mentor.decide.times import format_time, parse_time
from mentor.decide.trialview import FAILED, PRUNED, RUNNING, SUCCEEDED, Trial

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


@dataclass(frozen=True)
class Base:
    """The base model, resolved: its URI, or why there is none yet (waiting) or ever (failed)."""

    uri: str | None = None
    lineage: Lineage | None = None
    waiting: str | None = None
    failed: str | None = None


def resolve_base(spec: TuningJobSpec, ref: dict[str, Any] | None,
                 recorded: Lineage | None = None) -> Base:
    """A URI is used as is; a TrainingJob reference only once that job has succeeded. Once
    the lineage is recorded it is the base: the job may be deleted since (by its TTL), or a
    new job may hold its name, and neither may change the model the trials tune. A custom
    trainer's search has none (its code knows what it trains): the base is ''."""
    if spec.base_model is None:
        return Base(uri="")
    if spec.base_model.uri:
        return Base(uri=spec.base_model.uri)
    if recorded is not None:
        return Base(uri=recorded.model_uri, lineage=recorded)
    assert spec.base_model.training_job_ref is not None
    name = spec.base_model.training_job_ref.name
    if ref is None:
        return Base(waiting=f"TrainingJob {name} does not exist (yet)")
    status = ref.get("status") or {}
    phase = status.get("phase")
    if phase in ("Failed", "Stopped"):
        return Base(failed=f"TrainingJob {name} ended {phase} ({status.get('reason')}): it "
                           "has no model to tune")
    if phase != "Succeeded":
        return Base(waiting=f"TrainingJob {name} is {phase or 'new'}; the search starts when "
                            "it has succeeded")
    uri = status.get("output") or ref["spec"]["output"]["uri"]
    return Base(uri=uri, lineage=Lineage(
        training_job=name, uid=ref["metadata"]["uid"],
        eval_loss=(status.get("progress") or {}).get("evalLoss"), model_uri=uri))


@dataclass(frozen=True)
class NewTrial:
    number: int
    name: str
    params: dict[str, Any]
    spec: dict[str, Any]


@dataclass
class Plan:
    status: Status
    create: list[NewTrial] = field(default_factory=list)
    stop: dict[str, tuple[str, str]] = field(default_factory=dict)  # trial -> (reason, message)
    release: list[str] = field(default_factory=list)  # trials whose finalizer may go
    events: list[Event] = field(default_factory=list)


class Decider:
    def __init__(self, name: str, spec: TuningJobSpec, status: Status, trials: list[Trial],
                 deleting: list[Trial], base: Base, now: dt.datetime,
                 generation: int | None, search_id: str, taken: tuple[str, ...]) -> None:
        self.name, self.spec, self.status = name, spec, status.model_copy(deep=True)
        self.search_id, self.taken = search_id, taken
        self.trials = sorted(trials, key=lambda t: t.number)
        self.deleting, self.base, self.now = deleting, base, now
        self.stamp, self.generation = format_time(now), generation
        self.plan = Plan(self.status)
        self.direction = spec.search.objective.direction if spec.search else "minimize"

    # -- bookkeeping

    def condition(self, type_: ConditionType, value: bool, reason: Reason, message: str,
                  warning: bool = False) -> None:
        transition(self.status, self.plan.events, type_, value, reason.value, message,
                   self.stamp, self.generation, warning)

    def settle_deleted(self) -> None:
        """A deleted trial is counted once, with its GPU-hours, before its finalizer goes."""
        ledger = self.status.ledger
        for trial in self.deleting:
            if trial.name not in ledger.settled_trials:
                ledger.retired_gpu_seconds = round(ledger.retired_gpu_seconds
                                                   + trial.gpu_hours * 3600, 3)
                outcome = {SUCCEEDED: "succeeded", PRUNED: "pruned"}.get(trial.state, "failed")
                setattr(ledger.retired, outcome, getattr(ledger.retired, outcome) + 1)
                ledger.settled_trials.append(trial.name)
                self.plan.events.append(Event(
                    "Warning", Reason.TRIAL_DELETED.value,
                    f"trial {trial.name} was deleted ({trial.state}); its "
                    f"{trial.gpu_hours:.4f} GPU-hours stay counted"))
            self.plan.release.append(trial.name)
        present = {t.name for t in self.deleting}
        ledger.settled_trials = [n for n in ledger.settled_trials if n in present]

    def used_gpu_hours(self) -> float:
        return self.status.ledger.retired_gpu_seconds / 3600 + sum(t.gpu_hours
                                                                   for t in self.trials)

    def estimate(self) -> float:
        """The GPU-hours a new trial is expected to use, reserved before it starts."""
        budget = self.spec.budget
        if budget.trial_gpu_hours:
            return budget.trial_gpu_hours
        finished = [t.gpu_hours for t in self.trials if t.finished]
        if finished:
            return max(finished)
        return (budget.max_gpu_hours or 0.0) / size(self.spec.search)

    def reserved(self) -> float:
        estimate = self.estimate()
        return sum(max(estimate - t.gpu_hours, 0.0) for t in self.trials
                   if t.state == RUNNING and not t.stopping)

    def counts(self) -> TrialCounts:
        retired = self.status.ledger.retired
        by_state = {s: sum(1 for t in self.trials if t.state == s)
                    for s in (RUNNING, SUCCEEDED, PRUNED, FAILED)}
        created = max([self.status.trials.created,
                       *(t.number + 1 for t in self.trials + self.deleting)])
        return TrialCounts(created=created, running=by_state[RUNNING],
                           succeeded=by_state[SUCCEEDED] + retired.succeeded,
                           pruned=by_state[PRUNED] + retired.pruned,
                           failed=by_state[FAILED] + retired.failed)

    def summary(self, trial: Trial) -> TrialSummary:
        return TrialSummary(name=trial.name, parameters=trial.params, objective=trial.objective,
                            gpu_hours=round(trial.gpu_hours, 6), state=trial.state,
                            model_uri=trial.model_uri)

    def account(self) -> None:
        status, budget = self.status, self.spec.budget
        status.trials = self.counts()
        done = [t for t in self.trials if t.state == SUCCEEDED and t.objective is not None]
        sign = 1 if self.direction == "minimize" else -1
        ranked = sorted(done, key=lambda t: (sign * (t.objective or 0.0), t.number))
        status.top_trials = [self.summary(t) for t in ranked[:MAX_TOP_TRIALS]]
        winner = best(self.trials, self.direction)
        status.best_trial = self.summary(winner) if winner else None
        status.gpu_hours = round(self.used_gpu_hours(), 6)
        status.reserved_gpu_hours = round(self.reserved(), 6)
        costs = [t.cost for t in self.trials if t.cost is not None]
        status.cost_estimate = round(sum(costs), 4) if costs else None
        finished = status.trials.succeeded + status.trials.pruned + status.trials.failed
        status.shown.trials = f"{finished}/{size(self.spec.search)}"
        limit = f"/{budget.max_gpu_hours:g}" if budget.max_gpu_hours else ""
        status.shown.gpu_hours = f"{status.gpu_hours:.2f}{limit}"

    # -- endings

    def stop_running(self, reason: str, message: str) -> None:
        for t in self.trials:
            if t.state == RUNNING and not t.stopping:
                self.plan.stop[t.name] = (reason, message)

    def finish(self, reason: Reason, message: str, success: bool | None = None) -> None:
        """End the search; success defaults to whether any trial succeeded (the best so far
        is the result, whatever ended the search)."""
        ok = best(self.trials, self.direction) is not None if success is None else success
        self.stop_running("SearchEnded", f"the TuningJob ended: {reason.value}")
        self.status.phase = Phase.SUCCEEDED if ok else Phase.FAILED
        self.status.completion_time = self.stamp
        winner = best(self.trials, self.direction)
        if ok and winner:
            message += f"; best trial {winner.name}: {winner.objective:.4f} ({winner.params})"
        self.condition(ConditionType.RUNNING, False, reason, message)
        self.condition(ConditionType.SUCCEEDED if ok else ConditionType.FAILED, True, reason,
                       message, warning=not ok)

    # -- the decision

    def decide(self) -> Plan:
        self.settle_deleted()
        self._decide()
        self.account()
        self.status.reason = next(
            (c.reason for c in self.status.conditions if c.status == "True"
             and c.type in (ConditionType.SUCCEEDED, ConditionType.FAILED)),
            next((c.reason for c in self.status.conditions
                  if c.type == ConditionType.RUNNING), None))
        self.status.observed_generation = self.generation
        return self.plan

    def _decide(self) -> None:
        status, spec, search = self.status, self.spec, self.spec.search
        if status.phase in TERMINAL:
            self.stop_running("SearchEnded", "the TuningJob has ended")
            return
        if self.base.failed:
            self.finish(Reason.BASE_MODEL_UNAVAILABLE, self.base.failed, success=False)
            return
        if self.base.uri is None:
            status.phase = Phase.PENDING
            self.condition(ConditionType.RUNNING, False, Reason.WAITING_FOR_BASE_MODEL,
                           self.base.waiting or "waiting for the base model")
            return
        status.lineage = self.base.lineage
        unloadable = next((t for t in self.trials if t.state == FAILED
                           and t.exit_code == exitcodes.MODEL_NOT_FOUND), None)
        if unloadable:
            self.finish(Reason.BASE_MODEL_UNAVAILABLE,
                        f"trial {unloadable.name} could not load the base model "
                        f"{self.base.uri}: {unloadable.message}", success=False)
            return

        for trial in to_prune(search, self.trials):
            last = max(trial.evals)
            self.plan.stop[trial.name] = (Reason.PRUNED.value, (
                f"pruned by the {search.pruner.type if search and search.pruner else ''} "
                f"pruner: eval loss {trial.evals[last]:.4f} at step {last} lags the other "
                "trials"))
        counts = self.counts()
        limit = search.max_failed_trials if search else None
        if limit and counts.failed >= limit:
            self.finish(Reason.MAX_FAILED_TRIALS,
                        f"{counts.failed} trials failed (maxFailedTrials={limit})", success=False)
            return
        deadline = spec.budget.active_deadline_seconds
        started = parse_time(status.start_time)
        if deadline and started and (self.now - started).total_seconds() >= deadline:
            self.finish(Reason.DEADLINE_EXCEEDED,
                        f"the search ran longer than activeDeadlineSeconds={deadline}")
            return
        budget = spec.budget.max_gpu_hours
        used = self.used_gpu_hours()
        if budget and used >= budget:
            self.finish(Reason.BUDGET_EXHAUSTED,
                        f"the trials used {used:.3f} of maxGPUHours={budget:g}")
            return
        self.start_trials(counts)

    def start_trials(self, counts: TrialCounts) -> None:
        status, spec, search = self.status, self.spec, self.spec.search
        total = size(search)
        running = [t for t in self.trials if t.state == RUNNING]
        parallel = search.parallel_trials if search else 1
        budget = spec.budget.max_gpu_hours
        created = counts.created
        estimate = self.estimate()
        held = self.used_gpu_hours() + self.reserved()
        while len(running) < parallel and created < total:
            if budget and held + estimate > budget:
                break
            name = trial_name(self.name, created)
            if name in self.taken:
                self.name_taken(name, running)
                return
            params = suggest(search, self.trials, created)
            # Six significant digits, never zero: a tiny budget's share is still a budget.
            remaining = float(f"{budget - held:.6g}") if budget else None
            assert self.base.uri is not None
            body = trial_spec(spec, name, self.base.uri, params, remaining, self.search_id,
                              self.name)
            invalid = _invalid(body)
            if invalid:
                self.finish(Reason.INVALID_TRIAL, f"trial {name} with {params} is not a valid "
                                                  f"TrainingJob: {invalid}", success=False)
                return
            new = NewTrial(created, name, params, body)
            self.plan.create.append(new)
            running.append(Trial(number=created, name=name, params=params))
            self.trials.append(running[-1])
            created += 1
            held += estimate
        status.trials.created = created
        if running:
            status.phase = Phase.RUNNING
            status.start_time = status.start_time or self.stamp
            self.condition(ConditionType.RUNNING, True, Reason.TRIALS_RUNNING,
                           f"{len(running)} trial(s) running, {created} of {total} started")
            return
        if created < total:  # nothing runs and the next trial does not fit the budget
            self.finish(Reason.BUDGET_EXHAUSTED,
                        f"the next trial's {estimate:.3f} expected GPU-hours do not fit: "
                        f"{self.used_gpu_hours():.3f} of maxGPUHours={budget:g} used")
            return
        c = self.counts()
        if c.succeeded:
            self.finish(Reason.SEARCH_COMPLETE,
                        f"{total} trial(s): {c.succeeded} succeeded, {c.pruned} pruned, "
                        f"{c.failed} failed")
        else:
            self.finish(Reason.ALL_TRIALS_FAILED, f"none of the {total} trial(s) succeeded",
                        success=False)


    def name_taken(self, name: str, running: list[Trial]) -> None:
        """The next trial's name is held by a TrainingJob of another owner (a user's own, or
        a deleted search's trial that its finalizer still holds): never adopted, never counted;
        the search waits, saying so, and goes on once the name is free."""
        self.status.phase = Phase.RUNNING if running else Phase.PENDING
        self.condition(ConditionType.RUNNING, bool(running), Reason.CHILD_NAME_TAKEN,
                       f"trainingjob/{name} already exists and belongs to another owner; "
                       "Mentor never adopts it: delete or rename it for the search to go on",
                       warning=True)


def _invalid(spec: dict[str, Any]) -> str | None:
    """Why a trial's spec would be refused by the API server (schema and CEL), if it would."""
    try:
        TrainingJobSpec.model_validate(spec)
    except ValidationError as e:
        return "; ".join(f"spec.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                         for err in e.errors()[:3])
    errors = cel_errors(TRAINING_JOB, {"spec": spec})
    return "; ".join(str(e) for e in errors[:3]) or None


def decide(name: str, spec: TuningJobSpec, status: Status, trials: list[Trial],
           deleting: list[Trial], base: Base, now: dt.datetime,
           generation: int | None = None, search_id: str = "",
           taken: tuple[str, ...] = ()) -> Plan:
    """`trials` are the live trial TrainingJobs, `deleting` those being deleted; `search_id`
    (a short form of the TuningJob's UID) keeps each search's outputs apart; `taken` are trial
    names that TrainingJobs of other owners hold."""
    return Decider(name, spec, status, trials, deleting, base, now, generation,
                   search_id, taken).decide()
