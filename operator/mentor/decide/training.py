"""The decisions of a TrainingJob, pure: a job and its pods in, a plan out.

A decision is a list of named steps (`Decider.STEPS`), tried in order; the first that decides
ends it. Each step is one policy: a finished job, a refused create, a stop, a suspend, the
deadline, the budget, a pod deleted by others, a new attempt, leftovers of an old one, a failed
pod, an image that will not pull, a gang half made, success, running, waiting. What a failure
means is mentor.decide.failures; the GPU-hour ledger and the active clock are
mentor.decide.ledger.

Handlers read the world, call `decide`, and carry out the plan. Because nothing here does I/O,
every transition is a unit test, and running `decide` twice on the same world gives the same
plan: handlers are idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from mentor.api.results import parse_result
from mentor.api.status import (
    MAX_FAILURES_KEPT,
    AttemptFailure,
    ConditionType,
    JobStatus,
    Phase,
    Reason,
    RunResult,
)
from mentor.api.training import TrainingJobSpec
from mentor.decide import ledger
from mentor.decide.conditions import Event, is_true, transition
from mentor.decide.failures import MESSAGE_TAIL, Failure, classify, deleted
from mentor.decide.podview import IMAGE_PULL_REASONS, PodView
from mentor.decide.times import format_time, parse_time

IMAGE_PULL_GRACE_SECONDS = 300  # a pod may fail to pull its image this long before the job fails
TERMINAL = (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)
# The condition that explains each phase, for `kubectl get`'s REASON column.
EXPLAINS = {Phase.SUCCEEDED: ConditionType.SUCCEEDED, Phase.FAILED: ConditionType.FAILED,
            Phase.SUSPENDED: ConditionType.SUSPENDED, Phase.STOPPED: ConditionType.STOPPED,
            Phase.RESTARTING: ConditionType.RESTARTING}
ENDINGS = {Phase.SUCCEEDED: ConditionType.SUCCEEDED, Phase.FAILED: ConditionType.FAILED,
           Phase.STOPPED: ConditionType.STOPPED}


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


class Decider:
    """One decision: mutates a copy of the status and collects the plan."""

    def __init__(self, spec: TrainingJobSpec, status: JobStatus, pods: list[PodView],
                 now: dt.datetime, generation: int | None = None,
                 taken: tuple[str, ...] = (), refused: Refusal | None = None) -> None:
        self.spec, self.pods, self.now, self.generation = spec, pods, now, generation
        self.taken, self.refused = taken, refused
        self.plan = Plan(status=status.model_copy(deep=True))
        self.status = self.plan.status
        self.stamp = format_time(now)
        self.active = [p for p in pods if not p.deleting]

    def decide(self) -> Plan:
        self.plan.release = ledger.settle(self.status, self.pods, self.now)
        # Pods are created before the status that counts their attempt is written: an operator
        # stopped in between finds the attempt on the pods.
        self.status.attempts = max([self.status.attempts, *(p.attempt for p in self.pods)])
        for step in self.steps():
            if step():
                break
        self.tracking()
        # Also after the job has finished: its pods are charged until each one has ended.
        ledger.account(self.status, self.pods, self.now)
        self.status.reason = self.why()
        self.status.observed_generation = self.generation
        return self.plan

    def steps(self) -> tuple[Callable[[], bool], ...]:
        """The policies, in the order they are tried; each returns True when it decided."""
        return (self.finished, self.create_refused, self.stop, self.suspend, self.resumed,
                self.deadline, self.budget, self.deleted_by_others, self.new_attempt,
                self.leftovers, self.failed, self.pulling, self.incomplete_gang,
                self.succeeded, self.running, self.waiting)

    # -- the steps

    def finished(self) -> bool:
        """A finished job: only its TTL, and the pods a failure left, are left to act on."""
        if self.status.phase not in TERMINAL:
            return False
        if self.status.phase in (Phase.FAILED, Phase.STOPPED):
            self.remove_pods(self.live())
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        finished = parse_time(self.status.completion_time)
        if ttl is not None and finished is not None:
            self.plan.delete_job = (self.now - finished).total_seconds() >= ttl
        return True

    def create_refused(self) -> bool:
        """A create the API server refused never loops silently: for good, the job fails with
        the API server's words; for now, it waits, saying why."""
        if not self.refused:
            return False
        message = f"the API server refused to create the job's pods: {self.refused.message}"
        if self.refused.permanent:
            self.finish(False, Reason.CREATE_REFUSED, message)
            return True
        if self.status.phase not in (Phase.RUNNING, Phase.RESTARTING):
            self.status.phase = Phase.PENDING
        self.condition(ConditionType.RUNNING, False, Reason.CREATE_DELAYED,
                       f"{message}; retrying", warning=True)
        return True

    def stop(self) -> bool:
        """Stopped on request, gracefully: SIGTERM makes the trainer checkpoint first."""
        stop = self.spec.run_policy.stop
        if not stop:
            return False
        self.finish(False, stop.reason, stop.message or "stopped on request; its pods got "
                    "SIGTERM and wrote a checkpoint", phase=Phase.STOPPED)
        return True

    def suspend(self) -> bool:
        if not self.spec.run_policy.suspend:
            return False
        ledger.stop_clock(self.status, self.now)
        self.remove_pods(self.active)
        self.status.phase = Phase.SUSPENDED
        self.condition(ConditionType.SUSPENDED, True, Reason.SUSPENDED,
                       "the job is suspended: its pods are deleted until it is resumed")
        self.condition(ConditionType.RUNNING, False, Reason.SUSPENDED, "suspended")
        if is_true(self.status, ConditionType.RESTARTING):  # conditions never contradict
            self.condition(ConditionType.RESTARTING, False, Reason.SUSPENDED,
                           "suspended during a restart: the next attempt starts on resume")
        return True

    def resumed(self) -> bool:
        """Not a decision of its own: a job no longer suspended says so, and goes on."""
        if is_true(self.status, ConditionType.SUSPENDED):
            self.condition(ConditionType.SUSPENDED, False, Reason.RESUMED,
                           "the job is resumed from its latest checkpoint")
            self.plan.events.append(Event("Normal", Reason.RESUMED.value, "job resumed"))
        return False

    def deadline(self) -> bool:
        deadline = self.spec.run_policy.active_deadline_seconds
        if not deadline or ledger.active_seconds(self.status, self.now) < deadline:
            return False
        self.finish(False, Reason.DEADLINE_EXCEEDED,
                    f"the job ran longer than activeDeadlineSeconds={deadline}")
        return True

    def budget(self) -> bool:
        budget = self.spec.run_policy.max_gpu_hours
        used = ledger.gpu_hours(self.status, self.pods, self.now)
        if not budget or used < budget:
            return False
        self.finish(False, Reason.BUDGET_EXHAUSTED,
                    f"the job used {used:.2f} GPU-hours of its maxGPUHours={budget:g}")
        return True

    def deleted_by_others(self) -> bool:
        """A pod of the running attempt is going away, though Mentor did not delete it (it
        deletes only when it restarts, suspends or ends a job): a user, a drain or an eviction.
        Its GPU time is charged until it has ended, like any pod's."""
        gone = [p for p in self.pods if p.deleting and p.attempt == self.status.attempts]
        if not gone or self.status.phase not in (Phase.PENDING, Phase.RUNNING):
            return False
        self.on_failure(deleted(gone[0], self.spec))
        return True

    def new_attempt(self) -> bool:
        """No pod is left: the first attempt, or the next one after a gang restart."""
        if self.active:
            return False
        if any(p.deleting for p in self.pods):  # a gang is still going away: their deletion
            return True                            # events call us back
        if self.taken:
            self.status.phase = self.status.phase or Phase.PENDING
            self.condition(ConditionType.CREATED, False, Reason.CHILD_NAME_TAKEN,
                           f"{', '.join(self.taken)} already exist(s) and belong(s) to another "
                           "owner; Mentor never adopts them: delete or rename them",
                           warning=True)
            return True
        nodes = self.spec.parallelism.nodes
        self.status.attempts += 1
        self.plan.attempt = self.status.attempts
        self.plan.create_ranks = list(range(nodes))
        if self.status.phase is None:
            self.condition(ConditionType.CREATED, True, Reason.CREATED,
                           f"created {nodes} pod(s) and their service")
        # Said now, as the next decision would say it once the pods are seen: one status
        # write fewer per attempt (each is a validation of the whole object and an event).
        return self.waiting()

    def leftovers(self) -> bool:
        """Pods of an attempt the status has moved past: a restart already counted them and
        deleted them, and this view (a new leader's, whose pod watch lags its job watch) has
        not seen it yet. Never counted again, and removed by UID in case they linger."""
        old = [p for p in self.active if p.attempt < self.status.attempts]
        self.remove_pods(old)
        return bool(old)

    def failed(self) -> bool:
        """The root cause is the pod that ended first; the others were most often stopped by
        it."""
        failed = sorted((p for p in self.active if p.phase == "Failed"),
                        key=lambda p: (p.finished_at or self.now, p.rank))
        if not failed:
            return False
        failure = classify(failed[0], self.spec)
        self.keep(failed[0], failure)
        self.on_failure(failure)
        return True

    def pulling(self) -> bool:
        """A registry's hiccup heals: only an image still not pulled after the grace fails."""
        pod = next((p for p in self.active if p.waiting_reason in IMAGE_PULL_REASONS), None)
        if pod is None:
            return False
        waited = (self.now - (pod.created_at or self.now)).total_seconds()
        message = (f"pod {pod.name} cannot pull its image: "
                   f"{pod.waiting_message or pod.waiting_reason}")
        if waited >= IMAGE_PULL_GRACE_SECONDS:
            self.finish(False, Reason.IMAGE_PULL_BACKOFF, message)
            return True
        self.pending()
        self.condition(ConditionType.RUNNING, False, Reason.IMAGE_PULL_BACKOFF,
                       f"{message}; the job fails if it still cannot after "
                       f"{IMAGE_PULL_GRACE_SECONDS} s", warning=True)
        return True

    def incomplete_gang(self) -> bool:
        current = max(p.attempt for p in self.active)
        ranks = {p.rank for p in self.active if p.attempt == current}
        missing = [r for r in range(self.spec.parallelism.nodes) if r not in ranks]
        if not missing:
            return False
        if self.status.phase == Phase.RUNNING:  # someone deleted a running pod: restart
            self.restart(Failure(Reason.POD_DELETED, f"pod(s) of rank {missing} disappeared",
                                 retriable=True, counted=False))
        else:  # an earlier reconcile stopped halfway through creating the gang
            self.plan.create_ranks, self.plan.attempt = missing, current
        return True

    def succeeded(self) -> bool:
        if not all(p.phase == "Succeeded" for p in self.active):
            return False
        said = next((parse_result(p.termination_message) for p in self.active if p.rank == 0),
                    None)
        if said is not None:
            self.status.result = RunResult(step=said[0], eval_loss=said[1])
        self.finish(True, Reason.COMPLETED, "all pods completed successfully")
        return True

    def running(self) -> bool:
        if not all(p.phase in ("Running", "Succeeded") for p in self.active):
            return False
        self.status.start_time = self.status.start_time or self.stamp
        ledger.start_clock(self.status, self.stamp)
        self.status.phase = Phase.RUNNING
        self.condition(ConditionType.RUNNING, True, Reason.ALL_PODS_RUNNING,
                       f"all {len(self.active)} pod(s) are running")
        self.condition(ConditionType.RESTARTING, False, Reason.ALL_PODS_RUNNING,
                       "the new attempt is running")
        return True

    def waiting(self) -> bool:
        """Some pods do not run yet: queued by Kueue, unschedulable, or just pending."""
        self.pending()
        gated = next((p for p in self.active if p.gates), None)
        blocked = next((p for p in self.active if p.unschedulable), None)
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
        return True

    def tracking(self) -> None:
        """The tracker as rank 0 reported it: a warning (once, as the condition flips) while
        the tracking server cannot be reached. Training goes on either way."""
        tracked = self.status.progress.tracking if self.status.progress else None
        if tracked is None:
            return
        if tracked.state == "Unavailable":
            self.condition(ConditionType.TRACKING, False, Reason.TRACKING_UNAVAILABLE,
                           f"the tracking server cannot be reached ({tracked.message}); the "
                           "records wait in the job's output and go when it answers",
                           warning=True)
        else:
            self.condition(ConditionType.TRACKING, True, Reason.TRACKING,
                           f"recording to {tracked.url or 'MLflow'}")

    # -- what the steps share

    def condition(self, type_: ConditionType, value: bool, reason: Reason | str, message: str,
                  warning: bool = False) -> None:
        transition(self.status, self.plan.events, type_, value, str(reason), message,
                   self.stamp, self.generation, warning)

    def live(self) -> list[PodView]:
        return [p for p in self.pods if p.phase in ("Pending", "Running")]

    def pending(self) -> None:
        """Waiting for pods: Pending, unless the wait is a restart's."""
        if self.status.phase != Phase.RESTARTING:
            self.status.phase = Phase.PENDING

    def remove_pods(self, pods: list[PodView]) -> None:
        """Delete pods. Their GPU time is charged until they have ended (mentor.decide.ledger)."""
        for pod in pods:
            if not pod.deleting and pod.name not in self.plan.delete_pods:
                self.plan.delete_pods.append(pod.name)
                self.plan.delete_uids[pod.name] = pod.uid

    def keep(self, pod: PodView, failure: Failure) -> None:
        """Remember why this attempt failed, with the pod's last words, beyond the pod's life."""
        kept = AttemptFailure(attempt=pod.attempt, pod=pod.name, exit_code=pod.exit_code,
                              reason=failure.reason.value,
                              message=(pod.termination_message or "")[-MESSAGE_TAIL:],
                              time=self.stamp)
        if any(f.attempt == kept.attempt for f in self.status.failures):
            return
        self.status.failures = [*self.status.failures, kept][-MAX_FAILURES_KEPT:]

    def finish(self, success: bool, reason: Reason | str, message: str,
               phase: Phase | None = None) -> None:
        """End the job: Succeeded, Failed, or (`phase` Stopped) stopped on request."""
        ledger.stop_clock(self.status, self.now)
        self.status.phase = phase or (Phase.SUCCEEDED if success else Phase.FAILED)
        self.status.completion_time = self.stamp
        self.condition(ConditionType.RUNNING, False, reason, message)
        self.condition(ConditionType.RESTARTING, False, reason, message)
        self.condition(ENDINGS[self.status.phase], True, reason, message,
                       warning=self.status.phase == Phase.FAILED)
        if not success:
            self.remove_pods(self.live())

    def on_failure(self, failure: Failure) -> None:
        """A permanent failure ends the job; a retriable one restarts the gang, within
        backoffLimit if it counts."""
        if not failure.retriable:
            self.finish(False, failure.reason, failure.message)
            return
        limit = self.spec.run_policy.backoff_limit
        if failure.counted and self.status.restarts >= limit:
            self.finish(False, Reason.BACKOFF_LIMIT_EXCEEDED,
                        f"{failure.message}; backoffLimit={limit} restarts used")
            return
        self.restart(failure)

    def restart(self, failure: Failure) -> None:
        """A gang restart: every pod of the attempt goes; the next decision starts a new one."""
        if failure.counted:
            self.status.restarts += 1
        self.remove_pods(self.active)
        self.status.phase = Phase.RESTARTING
        self.condition(ConditionType.RUNNING, False, failure.reason, failure.message)
        self.condition(ConditionType.RESTARTING, True, failure.reason,
                       f"{failure.message}; restarting all pods from the latest checkpoint "
                       f"(restart {self.status.restarts} of {self.spec.run_policy.backoff_limit})",
                       warning=True)

    def why(self) -> str | None:
        """The reason of the condition that explains the phase, for `kubectl get`."""
        if not self.status.phase:
            return None
        wanted = EXPLAINS.get(self.status.phase, ConditionType.RUNNING)
        found = next((c for c in self.status.conditions if c.type == wanted), None)
        return found.reason if found else None


def decide(spec: TrainingJobSpec, status: JobStatus, pods: list[PodView], now: dt.datetime,
           generation: int | None = None, taken: tuple[str, ...] = (),
           refused: Refusal | None = None) -> Plan:
    """`taken` names children (config, service) that exist under another owner; `refused` is
    the API server's refusal of the last create."""
    return Decider(spec, status, pods, now, generation, taken, refused).decide()
