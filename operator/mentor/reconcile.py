"""The decisions of the operator, pure: a job and its pods in, a plan out.

Handlers read the world, call `decide`, and carry out the plan. Because nothing here does I/O,
every transition (success, failure by cause, gang restart, suspend, deadline, TTL) is a unit test,
and running `decide` twice on the same world gives the same plan: handlers are idempotent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mentor.api.status import (
    MAX_FAILURES_KEPT,
    AttemptFailure,
    ConditionType,
    JobStatus,
    Phase,
    Reason,
)
from mentor.api.training import TrainingJobSpec
from mentor.conditions import is_true, set_condition
from mentor.podview import IMAGE_PULL_REASONS, PodView, format_time, parse_time

# What the trainer's own exit codes mean (see the README); they make failure messages readable.
TRAINER_EXIT_CODES = {2: "invalid trainer config", 3: "data not found", 4: "loss became NaN/Inf",
                      5: "the model to start from cannot be loaded",
                      6: "out of GPU memory"}
NON_FINITE_LOSS_EXIT = 4
OUT_OF_MEMORY_EXIT = 6
IMAGE_PULL_GRACE_SECONDS = 300  # a pod may fail to pull its image this long before the job fails
MESSAGE_TAIL = 2048  # of a pod's termination message, in a condition (which holds 4096)
TERMINAL = (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What the handler must do. Status is the complete new status to write."""

    status: JobStatus
    create_ranks: list[int] = field(default_factory=list)
    attempt: int = 0
    delete_pods: list[str] = field(default_factory=list)
    # The UID of each pod to delete: a delete decided on a late view never takes the newer pod
    # that has the same name (a restart reuses the names).
    delete_uids: dict[str, str] = field(default_factory=dict)
    # Pods whose GPU time is settled in `status`: their finalizer goes once status is written.
    release: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False


@dataclass(frozen=True)
class Refusal:
    """The API server refused to create a child: for good (422, or admission's 403, such as
    Pod Security), or for now (a quota, 429, 5xx). Its message is the API server's."""

    message: str
    permanent: bool


@dataclass(frozen=True)
class Failure:
    reason: Reason
    message: str
    retriable: bool
    counted: bool = True


def classify(pod: PodView, spec: TrainingJobSpec) -> Failure:
    """Why a pod failed, and whether another attempt can help."""
    policy = spec.run_policy.exit_codes
    code = pod.exit_code
    if pod.disruption:
        return Failure(Reason.POD_DISRUPTED,
                       f"pod {pod.name} was disrupted ({pod.disruption}); retried without "
                       "counting toward backoffLimit", retriable=True, counted=False)
    if pod.terminated_reason == "OOMKilled" and code not in policy.retry:
        return Failure(Reason.OOM_KILLED,
                       f"pod {pod.name} was OOMKilled (exit code {code}); raise the memory "
                       "limit or lower microBatchSize", retriable=False)
    if code is None:
        return Failure(Reason.POD_FAILED, f"pod {pod.name} failed without an exit code",
                       retriable=True)
    meaning = TRAINER_EXIT_CODES.get(code)
    described = f"pod {pod.name} exited with code {code}" + (f" ({meaning})" if meaning else "")
    if pod.termination_message:  # the trainer's own words, through the launcher
        described += f": {pod.termination_message[-MESSAGE_TAIL:]}"
    if code < 128:
        reason = {NON_FINITE_LOSS_EXIT: Reason.NON_FINITE_LOSS,
                  OUT_OF_MEMORY_EXIT: Reason.OUT_OF_MEMORY}.get(code, Reason.EXIT_CODE)
        return Failure(reason, described, retriable=code in policy.retry)
    return Failure(Reason.EXIT_CODE, described, retriable=code not in policy.fail)


class Decider:
    """One reconciliation: mutates a copy of the status and collects the plan."""

    def __init__(self, spec: TrainingJobSpec, status: JobStatus, pods: list[PodView],
                 now: dt.datetime, generation: int | None = None,
                 taken: tuple[str, ...] = (), refused: Refusal | None = None) -> None:
        self.spec, self.pods, self.now, self.generation = spec, pods, now, generation
        self.taken, self.refused = taken, refused
        self.priced = any(p.price is not None for p in pods)
        self.plan = Plan(status=status.model_copy(deep=True))
        self.status = self.plan.status
        self.stamp = format_time(now)

    # -- helpers

    def condition(self, type_: ConditionType, value: bool, reason: Reason | str, message: str,
                  warning: bool = False) -> None:
        reason = str(reason)
        flipped = set_condition(self.status, type_, "True" if value else "False", reason,
                                message, self.stamp, self.generation)
        if flipped and (value or warning):
            kind = "Warning" if warning else "Normal"
            self.plan.events.append(Event(kind, reason, message))

    def remove_pods(self, pods: list[PodView]) -> None:
        """Delete pods. Their GPU time is charged until they have ended (`settle`)."""
        for pod in pods:
            if not pod.deleting and pod.name not in self.plan.delete_pods:
                self.plan.delete_pods.append(pod.name)
                self.plan.delete_uids[pod.name] = pod.uid

    def settle(self) -> None:
        """Move the GPU time of every pod that has ended into the ledger, once per pod UID, and
        release its finalizer, which the handler does only after this status is written: an
        operator stopped between the two finds the UID settled and only releases the pod."""
        ledger = self.status.ledger
        settled = set(ledger.settled_pods)
        for pod in self.pods:
            if pod.uid not in settled and pod.ended(self.now):
                ledger.retired_gpu_seconds += pod.gpu_seconds(self.now)
                ledger.retired_cost += pod.cost(self.now)
                ledger.settled_pods.append(pod.uid)
                settled.add(pod.uid)
            if pod.uid in settled and pod.tracked:
                self.plan.release.append(pod.name)
        present = {p.uid for p in self.pods}  # a released pod that is gone needs no memory
        ledger.settled_pods = [uid for uid in ledger.settled_pods if uid in present]

    def keep(self, pod: PodView, failure: Failure) -> None:
        """Remember why this attempt failed, with the pod's last words, beyond the pod's life."""
        kept = AttemptFailure(attempt=pod.attempt, pod=pod.name, exit_code=pod.exit_code,
                              reason=failure.reason.value,
                              message=(pod.termination_message or "")[-MESSAGE_TAIL:],
                              time=self.stamp)
        if any(f.attempt == kept.attempt for f in self.status.failures):
            return
        self.status.failures = [*self.status.failures, kept][-MAX_FAILURES_KEPT:]

    def unsettled(self) -> list[PodView]:
        settled = set(self.status.ledger.settled_pods)
        return [p for p in self.pods if p.uid not in settled]

    def gpu_hours(self) -> float:
        held = sum(p.gpu_seconds(self.now) for p in self.unsettled())
        return (self.status.ledger.retired_gpu_seconds + held) / 3600

    def account(self) -> None:
        """GPU-hours and cost: the settled pods' plus the time the others hold until now."""
        self.status.gpu_hours = round(self.gpu_hours(), 6)
        if self.priced or self.status.ledger.retired_cost:
            cost = self.status.ledger.retired_cost + sum(p.cost(self.now)
                                                         for p in self.unsettled())
            self.status.cost_estimate = round(cost, 4)

    def stop_clock(self) -> None:
        """Suspended or finished: the active time so far is banked, and the clock stops."""
        ledger = self.status.ledger
        ledger.active_seconds = round(active_seconds(self.status, self.now), 3)
        ledger.active_since = None

    def finish(self, success: bool, reason: Reason | str, message: str,
               phase: Phase | None = None) -> None:
        """End the job: Succeeded, Failed, or (`phase` Stopped) stopped on request."""
        self.stop_clock()
        self.status.phase = phase or (Phase.SUCCEEDED if success else Phase.FAILED)
        self.status.completion_time = self.stamp
        self.condition(ConditionType.RUNNING, False, reason, message)
        self.condition(ConditionType.RESTARTING, False, reason, message)
        ending = {Phase.SUCCEEDED: ConditionType.SUCCEEDED, Phase.FAILED: ConditionType.FAILED,
                  Phase.STOPPED: ConditionType.STOPPED}[self.status.phase]
        self.condition(ending, True, reason, message, warning=self.status.phase == Phase.FAILED)
        if not success:
            self.remove_pods([p for p in self.pods if p.phase in ("Pending", "Running")])

    def start_attempt(self) -> None:
        self.status.attempts += 1
        self.plan.attempt = self.status.attempts
        self.plan.create_ranks = list(range(self.spec.parallelism.nodes))
        if self.status.phase is None:
            self.condition(ConditionType.CREATED, True, Reason.CREATED,
                           f"created {self.spec.parallelism.nodes} pod(s) and their service")
        if self.status.phase != Phase.RESTARTING:
            self.status.phase = Phase.PENDING

    def why(self) -> str | None:
        """The reason of the condition that explains the phase, for `kubectl get`."""
        explains = {Phase.SUCCEEDED: ConditionType.SUCCEEDED, Phase.FAILED: ConditionType.FAILED,
                    Phase.SUSPENDED: ConditionType.SUSPENDED, Phase.STOPPED: ConditionType.STOPPED,
                    Phase.RESTARTING: ConditionType.RESTARTING}
        wanted = explains.get(self.status.phase, ConditionType.RUNNING) \
            if self.status.phase else None
        found = next((c for c in self.status.conditions if c.type == wanted), None)
        return found.reason if found else None

    # -- the decision

    def decide(self) -> Plan:
        self.settle()
        self._decide()
        # Also after the job has finished: its pods are charged until each one has ended.
        self.account()
        self.status.reason = self.why()
        self.status.observed_generation = self.generation
        return self.plan

    def _decide(self) -> None:
        spec, status, policy = self.spec, self.status, self.spec.run_policy
        # Pods are created before the status that counts their attempt is written: an operator
        # stopped in between finds the attempt on the pods.
        status.attempts = max([status.attempts, *(p.attempt for p in self.pods)])
        if status.phase in TERMINAL:
            self._after_finish()
            return
        active = [p for p in self.pods if not p.deleting]
        if self.refused:
            self._on_refused(self.refused)
            return

        if policy.stop:  # gracefully: SIGTERM makes the trainer checkpoint before it exits
            self.finish(False, policy.stop.reason,
                        policy.stop.message or "stopped on request; its pods got SIGTERM and "
                                               "wrote a checkpoint", phase=Phase.STOPPED)
            return
        if policy.suspend:
            self.stop_clock()
            self.remove_pods(active)
            status.phase = Phase.SUSPENDED
            self.condition(ConditionType.SUSPENDED, True, Reason.SUSPENDED,
                           "the job is suspended: its pods are deleted until it is resumed")
            self.condition(ConditionType.RUNNING, False, Reason.SUSPENDED, "suspended")
            return
        if is_true(status, ConditionType.SUSPENDED):
            self.condition(ConditionType.SUSPENDED, False, Reason.RESUMED,
                           "the job is resumed from its latest checkpoint")
            self.plan.events.append(Event("Normal", Reason.RESUMED.value, "job resumed"))

        deadline = policy.active_deadline_seconds
        if deadline and active_seconds(status, self.now) >= deadline:
            self.finish(False, Reason.DEADLINE_EXCEEDED,
                        f"the job ran longer than activeDeadlineSeconds={deadline}")
            return
        budget = policy.max_gpu_hours
        if budget and self.gpu_hours() >= budget:
            self.finish(False, Reason.BUDGET_EXHAUSTED,
                        f"the job used {self.gpu_hours():.2f} GPU-hours of its "
                        f"maxGPUHours={budget:g}")
            return

        # A pod of the running attempt that is going away, though Mentor did not delete it (it
        # deletes only when it restarts, suspends or ends a job): a user, a drain or an eviction.
        gone = [p for p in self.pods if p.deleting and p.attempt == status.attempts]
        if gone and status.phase in (Phase.PENDING, Phase.RUNNING):
            self._on_deleted(gone, active)
            return

        if not active:
            if any(p.deleting for p in self.pods):  # a gang is still going away: their
                return                                 # deletion events call us back
            if self.taken:
                status.phase = status.phase or Phase.PENDING
                self.condition(ConditionType.CREATED, False, Reason.CHILD_NAME_TAKEN,
                               f"{', '.join(self.taken)} already exist(s) and belong(s) to "
                               "another owner; Mentor never adopts them: delete or rename them",
                               warning=True)
                return
            self.start_attempt()
            return

        # Pods of an attempt the status has moved past: a restart already counted them and
        # deleted them, and this view (a new leader's, whose pod watch lags its job watch) has
        # not seen it yet. Never counted again, and removed by UID in case they linger.
        leftovers = [p for p in active if p.attempt < status.attempts]
        if leftovers:
            self.remove_pods(leftovers)
            return
        current = max(p.attempt for p in active)
        # The root cause is the pod that ended first; the others were most often stopped by it.
        failed = sorted((p for p in active if p.phase == "Failed"),
                        key=lambda p: (p.finished_at or self.now, p.rank))
        if failed:
            failure = classify(failed[0], spec)
            self.keep(failed[0], failure)
            self._on_failure(failure, active)
            return
        pulling = next((p for p in active if p.waiting_reason in IMAGE_PULL_REASONS), None)
        if pulling:
            # A registry's hiccup heals: only an image still not pulled after the grace fails.
            waited = (self.now - (pulling.created_at or self.now)).total_seconds()
            message = (f"pod {pulling.name} cannot pull its image: "
                       f"{pulling.waiting_message or pulling.waiting_reason}")
            if waited >= IMAGE_PULL_GRACE_SECONDS:
                self.finish(False, Reason.IMAGE_PULL_BACKOFF, message)
                return
            if status.phase != Phase.RESTARTING:
                status.phase = Phase.PENDING
            self.condition(ConditionType.RUNNING, False, Reason.IMAGE_PULL_BACKOFF,
                           f"{message}; the job fails if it still cannot after "
                           f"{IMAGE_PULL_GRACE_SECONDS} s", warning=True)
            return

        ranks = {p.rank for p in active if p.attempt == current}
        missing = [r for r in range(spec.parallelism.nodes) if r not in ranks]
        if missing:
            if status.phase == Phase.RUNNING:  # someone deleted a running pod: restart the gang
                self._restart(active, Failure(Reason.POD_DELETED,
                                              f"pod(s) of rank {missing} disappeared",
                                              retriable=True, counted=False))
            else:  # an earlier reconcile stopped halfway through creating the gang
                self.plan.create_ranks, self.plan.attempt = missing, current
            return

        if all(p.phase == "Succeeded" for p in active):
            self.finish(True, Reason.COMPLETED, "all pods completed successfully")
            return
        if all(p.phase in ("Running", "Succeeded") for p in active):
            if status.start_time is None:
                status.start_time = self.stamp
            if status.ledger.active_since is None:  # the deadline's clock runs from here
                status.ledger.active_since = self.stamp
            status.phase = Phase.RUNNING
            self.condition(ConditionType.RUNNING, True, Reason.ALL_PODS_RUNNING,
                           f"all {len(active)} pod(s) are running")
            self.condition(ConditionType.RESTARTING, False, Reason.ALL_PODS_RUNNING,
                           "the new attempt is running")
            return
        if status.phase != Phase.RESTARTING:
            status.phase = Phase.PENDING
        gated = next((p for p in active if p.gates), None)
        blocked = next((p for p in active if p.unschedulable), None)
        if gated:  # no GPU is held while gated: the pods have not even been scheduled
            self.condition(ConditionType.RUNNING, False, Reason.QUEUED,
                           f"pod {gated.name} waits for admission by its queue "
                           f"({self.spec.scheduling.queue_name or 'none named'}; scheduling "
                           f"gate {', '.join(gated.gates)})")
        elif blocked:
            self.condition(ConditionType.RUNNING, False, Reason.UNSCHEDULABLE,
                           f"pod {blocked.name} cannot be scheduled: {blocked.unschedulable}",
                           warning=True)
        else:
            self.condition(ConditionType.RUNNING, False, Reason.PODS_PENDING,
                           "waiting for all pods to run")

    def _on_failure(self, failure: Failure, active: list[PodView]) -> None:
        if not failure.retriable:
            self.finish(False, failure.reason, failure.message)
            return
        limit = self.spec.run_policy.backoff_limit
        if failure.counted and self.status.restarts >= limit:
            self.finish(False, Reason.BACKOFF_LIMIT_EXCEEDED,
                        f"{failure.message}; backoffLimit={limit} restarts used")
            return
        self._restart(active, failure)

    def _on_refused(self, refused: Refusal) -> None:
        """A create the API server refused never loops silently: for good, the job fails with
        the API server's words; for now, it waits, saying why."""
        message = f"the API server refused to create the job's pods: {refused.message}"
        if refused.permanent:
            self.finish(False, Reason.CREATE_REFUSED, message)
            return
        if self.status.phase not in (Phase.RUNNING, Phase.RESTARTING):
            self.status.phase = Phase.PENDING
        self.condition(ConditionType.RUNNING, False, Reason.CREATE_DELAYED,
                       f"{message}; retrying", warning=True)

    def _on_deleted(self, gone: list[PodView], active: list[PodView]) -> None:
        """Someone else deleted a pod: a gang restart, counted unless it was a disruption
        (eviction, preemption), which is no fault of the job. Their GPU time is charged until
        they have ended, like any pod's (`settle`)."""
        pod = gone[0]
        if pod.disruption:
            failure = classify(pod, self.spec)
        else:
            ended = f" and exited with code {pod.exit_code}" if pod.exit_code is not None else ""
            failure = Failure(Reason.POD_DELETED, f"pod {pod.name} was deleted{ended}",
                              retriable=True)
        self._on_failure(failure, active)

    def _restart(self, active: list[PodView], failure: Failure) -> None:
        """A gang restart: every pod of the attempt goes; the next reconcile starts a new one."""
        if failure.counted:
            self.status.restarts += 1
        self.remove_pods(active)
        self.status.phase = Phase.RESTARTING
        self.condition(ConditionType.RUNNING, False, failure.reason, failure.message)
        self.condition(ConditionType.RESTARTING, True, failure.reason,
                       f"{failure.message}; restarting all pods from the latest checkpoint "
                       f"(restart {self.status.restarts} of {self.spec.run_policy.backoff_limit})",
                       warning=True)

    def _after_finish(self) -> None:
        if self.status.phase in (Phase.FAILED, Phase.STOPPED):
            self.remove_pods([p for p in self.pods if p.phase in ("Pending", "Running")])
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        finished = parse_time(self.status.completion_time)
        if ttl is None or finished is None:
            return
        self.plan.delete_job = (self.now - finished).total_seconds() >= ttl


def active_seconds(status: JobStatus, now: dt.datetime) -> float:
    """How long the job has run, suspended time and the wait for its first run left out."""
    since = parse_time(status.ledger.active_since)
    running = (now - since).total_seconds() if since else 0.0
    return status.ledger.active_seconds + max(running, 0.0)


def decide(spec: TrainingJobSpec, status: JobStatus, pods: list[PodView], now: dt.datetime,
           generation: int | None = None, taken: tuple[str, ...] = (),
           refused: Refusal | None = None) -> Plan:
    """`taken` names children (config, service) that exist under another owner; `refused` is
    the API server's refusal of the last create."""
    return Decider(spec, status, pods, now, generation, taken, refused).decide()
