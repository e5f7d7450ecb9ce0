"""The operator's decisions, on pods described as the API server returns them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mentor.api.status import ConditionType, JobStatus, Ledger, Phase
from mentor.api.training import TrainingJobSpec
from mentor.builders.names import JobRef
from mentor.builders.pods import build_pod
from mentor.controller.settings import Settings
from mentor.decide.conditions import get_condition
from mentor.decide.podview import PodView
from mentor.decide.times import format_time
from mentor.decide.training import decide

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
JOB = JobRef(kind="TrainingJob", name="demo", namespace="ns", uid="uid-1")


def spec(**changes: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {
        "model": {"size": "tiny"}, "data": {"source": "/d"}, "optimization": {"steps": 10},
        "output": {"uri": "/o"}, "parallelism": {"nodes": 2, "gpusPerNode": 4},
    }
    base.update(changes)
    return TrainingJobSpec.model_validate(base)


def pod(s: TrainingJobSpec, rank: int, phase: str, attempt: int = 1, *,
        started: dt.datetime | None = T0, finished: dt.datetime | None = None,
        exit_code: int | None = None, reason: str | None = None,
        deleting: bool = False, unschedulable: str | None = None,
        disrupted: bool = False, waiting: str | None = None,
        message: str | None = None, deadline: dt.datetime | None = None) -> PodView:
    """A pod built by the real builder, with the status a kubelet (or kwok) would write."""
    manifest = build_pod(JOB, s, rank, attempt, Settings.from_env())
    state: dict[str, Any] = {}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": "back-off pulling image"}}
    elif phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": exit_code if exit_code is not None else 0,
                                "reason": reason or ("Completed" if phase == "Succeeded" else
                                                     "Error"),
                                "startedAt": format_time(started or T0),
                                "finishedAt": format_time(finished or T0),
                                **({"message": message} if message else {})}}
    elif phase == "Running" and started:
        state = {"running": {"startedAt": format_time(started)}}
    conditions = []
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    if disrupted:
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "reason": "PreemptionByScheduler"})
    manifest["status"] = {"phase": phase, "conditions": conditions,
                          "containerStatuses": [{"name": "trainer", "state": state}]}
    manifest["metadata"]["uid"] = f"uid-{rank}-{attempt}"
    if deleting:  # the deletion's deadline (its time plus the grace period): by default, far off
        manifest["metadata"]["deletionTimestamp"] = format_time(deadline or
                                                                T0 + dt.timedelta(days=30))
    manifest["metadata"]["creationTimestamp"] = format_time(T0)
    return PodView.from_pod(manifest)


def test_a_new_job_creates_one_pod_per_node() -> None:
    plan = decide(spec(), JobStatus(), [], T0)
    assert plan.create_ranks == [0, 1]
    assert plan.attempt == 1
    assert plan.status.phase == Phase.PENDING
    created = get_condition(plan.status, ConditionType.CREATED)
    assert created is not None and created.status == "True"
    assert [e.reason for e in plan.events] == ["JobCreated"]


def test_all_pods_running_means_running_and_sets_start_time() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    plan = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.RUNNING
    assert plan.status.start_time == format_time(T0)
    assert not plan.create_ranks and not plan.delete_pods


def test_last_transition_time_moves_only_when_status_flips() -> None:
    s = spec()
    running = [pod(s, 0, "Running"), pod(s, 1, "Running")]
    first = decide(s, decide(s, JobStatus(), [], T0).status, running, T0).status
    later = decide(s, first, running, T0 + dt.timedelta(minutes=5)).status
    cond = get_condition(later, ConditionType.RUNNING)
    assert cond is not None and cond.last_transition_time == format_time(T0)


def test_success_when_every_pod_succeeds() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.RUNNING),
                  [pod(s, 0, "Succeeded"), pod(s, 1, "Succeeded")], T0)
    assert plan.status.phase == Phase.SUCCEEDED
    assert plan.status.completion_time == format_time(T0)


def test_exit_code_below_128_fails_at_once_with_its_meaning() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.RUNNING),
                  [pod(s, 0, "Failed", exit_code=4), pod(s, 1, "Running")], T0)
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert plan.status.phase == Phase.FAILED
    assert failed is not None and failed.reason == "NonFiniteLoss"
    assert "code 4 (loss became NaN/Inf)" in failed.message
    assert plan.delete_pods == ["demo-1"], "the surviving pod frees its GPUs"


def test_out_of_gpu_memory_fails_at_once_with_its_own_reason() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.RUNNING),
                  [pod(s, 0, "Failed", exit_code=6), pod(s, 1, "Running")], T0)
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "OutOfMemory"
    assert "code 6 (out of GPU memory)" in failed.message and plan.status.restarts == 0


def test_exit_code_policy_can_retry_a_low_code() -> None:
    s = spec(runPolicy={"exitCodes": {"retry": [1]}})
    plan = decide(s, JobStatus(phase=Phase.RUNNING),
                  [pod(s, 0, "Failed", exit_code=1), pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.RESTARTING


def test_signal_exit_is_a_gang_restart_counted_toward_the_limit() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1),
                  [pod(s, 0, "Running"), pod(s, 1, "Failed", exit_code=137)], T0)
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.restarts == 1
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]
    restarting = get_condition(plan.status, ConditionType.RESTARTING)
    assert restarting is not None and restarting.status == "True"


def test_the_next_attempt_starts_once_the_old_gang_is_gone() -> None:
    s = spec()
    status = JobStatus(phase=Phase.RESTARTING, attempts=1, restarts=1)
    waiting = decide(s, status, [pod(s, 0, "Running", deleting=True)], T0)
    assert not waiting.create_ranks
    plan = decide(s, status, [], T0)
    assert plan.create_ranks == [0, 1] and plan.attempt == 2
    assert plan.status.phase == Phase.RESTARTING


def test_backoff_limit_exhausted_fails() -> None:
    s = spec(runPolicy={"backoffLimit": 1})
    plan = decide(s, JobStatus(phase=Phase.RUNNING, restarts=1, attempts=2),
                  [pod(s, 0, "Failed", attempt=2, exit_code=139), pod(s, 1, "Running", 2)], T0)
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "BackoffLimitExceeded"


def test_disruption_is_retried_without_counting() -> None:
    s = spec(runPolicy={"backoffLimit": 0})
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1),
                  [pod(s, 0, "Failed", exit_code=143, disrupted=True), pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.restarts == 0


def test_oom_killed_fails_with_its_reason() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.RUNNING),
                  [pod(s, 0, "Failed", exit_code=137, reason="OOMKilled"), pod(s, 1, "Running")],
                  T0)
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "OOMKilled"


def test_an_image_that_cannot_be_pulled_fails_the_job_only_after_a_grace() -> None:
    s = spec()
    pods = [pod(s, 0, "Pending", waiting="ImagePullBackOff"), pod(s, 1, "Pending")]
    early = decide(s, JobStatus(phase=Phase.PENDING, attempts=1), pods,
                   T0 + dt.timedelta(seconds=60))
    assert early.status.phase == Phase.PENDING, "a registry's hiccup heals"
    waiting = get_condition(early.status, ConditionType.RUNNING)
    assert waiting is not None and waiting.reason == "ImagePullBackOff"
    assert "fails if it still cannot after 300 s" in waiting.message
    late = decide(s, JobStatus(phase=Phase.PENDING, attempts=1), pods,
                  T0 + dt.timedelta(seconds=300))
    failed = get_condition(late.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "ImagePullBackOff"


def test_unschedulable_stays_pending_and_says_why() -> None:
    s = spec()
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    plan = decide(s, JobStatus(phase=Phase.PENDING),
                  [pod(s, 0, "Pending", started=None, unschedulable=why),
                   pod(s, 1, "Pending", started=None)], T0)
    running = get_condition(plan.status, ConditionType.RUNNING)
    assert plan.status.phase == Phase.PENDING
    assert running is not None and running.reason == "Unschedulable" and why in running.message
    assert plan.events and plan.events[0].type == "Warning"
    # Seen pending first (the scheduler had not said yet), the news is still an Event.
    pending = decide(s, JobStatus(phase=Phase.PENDING),
                     [pod(s, r, "Pending", started=None) for r in (0, 1)], T0).status
    later = decide(s, pending, [pod(s, 0, "Pending", started=None, unschedulable=why),
                                pod(s, 1, "Pending", started=None)], T0)
    assert [(e.type, e.reason) for e in later.events] == [("Warning", "Unschedulable")]
    again = decide(s, later.status, [pod(s, 0, "Pending", started=None, unschedulable=why),
                                     pod(s, 1, "Pending", started=None)], T0)
    assert again.events == [], "said once, not on every reconcile"


def test_suspend_deletes_pods_and_resume_recreates_them() -> None:
    s = spec(runPolicy={"suspend": True})
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1),
                  [pod(s, 0, "Running"), pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.SUSPENDED
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]
    resumed = decide(spec(), plan.status, [], T0)
    assert resumed.create_ranks == [0, 1] and resumed.attempt == 2
    suspended = get_condition(resumed.status, ConditionType.SUSPENDED)
    assert suspended is not None and suspended.status == "False"
    assert resumed.status.restarts == 0


def test_a_stop_ends_the_job_gracefully_in_phase_stopped_with_its_reason() -> None:
    s = spec(runPolicy={"stop": {"reason": "Pruned", "message": "lags the other trials"}})
    status = JobStatus(phase=Phase.RUNNING, attempts=1,
                       ledger=Ledger(active_since=format_time(T0)))
    plan = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.STOPPED and plan.status.reason == "Pruned"
    stopped = get_condition(plan.status, ConditionType.STOPPED)
    assert stopped is not None and stopped.message == "lags the other trials"
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]  # graceful: SIGTERM, checkpoint
    assert not any(e.type == "Warning" for e in plan.events)
    later = decide(s, plan.status, [], T0 + dt.timedelta(seconds=5))
    assert later.status.phase == Phase.STOPPED and later.create_ranks == []


def test_deadline_fails_and_removes_pods() -> None:
    s = spec(runPolicy={"activeDeadlineSeconds": 60})
    status = JobStatus(phase=Phase.RUNNING, start_time=format_time(T0), attempts=1,
                       ledger=Ledger(active_since=format_time(T0)))
    plan = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")],
                  T0 + dt.timedelta(seconds=61))
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "DeadlineExceeded"
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]


def test_ttl_deletes_the_finished_job_only_when_due() -> None:
    s = spec(runPolicy={"ttlSecondsAfterFinished": 30})
    done = JobStatus(phase=Phase.SUCCEEDED, completion_time=format_time(T0))
    assert not decide(s, done, [], T0 + dt.timedelta(seconds=29)).delete_job
    assert decide(s, done, [], T0 + dt.timedelta(seconds=30)).delete_job


def test_gpu_hours_survive_a_gang_restart() -> None:
    s = spec()
    hour, grace = dt.timedelta(hours=1), dt.timedelta(seconds=30)
    pods = [pod(s, 0, "Running"), pod(s, 1, "Failed", exit_code=137, finished=T0 + hour)]
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1), pods, T0 + hour)
    # the failed pod has ended: its 4 GPUs × 1 hour are settled, and it may go
    assert plan.status.ledger.retired_gpu_seconds == 4 * 3600
    assert plan.status.ledger.settled_pods == ["uid-1-1"] and plan.release == ["demo-1"]
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]
    assert plan.status.gpu_hours == 8, "the deleted pod is charged while it stops"
    # rank 0 took its grace period to checkpoint and stop: those 30 s are charged too
    stopped = pod(s, 0, "Failed", exit_code=143, finished=T0 + hour + grace, deleting=True)
    later = decide(s, plan.status, [stopped, pods[1]], T0 + 2 * hour)
    assert later.status.ledger.retired_gpu_seconds == 4 * 3600 + 4 * 3630
    assert sorted(later.release) == ["demo-0", "demo-1"]
    assert later.status.ledger.settled_pods == ["uid-1-1", "uid-0-1"]
    after = decide(s, later.status, [], T0 + 3 * hour)
    assert after.status.gpu_hours == round((4 * 3600 + 4 * 3630) / 3600, 6), \
        "time between attempts is not counted"
    assert after.status.ledger.settled_pods == [], "gone pods need no memory"


def test_a_pod_is_charged_once_however_often_it_is_seen() -> None:
    s = spec()
    hour = dt.timedelta(hours=1)
    done = [pod(s, 0, "Succeeded", finished=T0 + hour), pod(s, 1, "Succeeded", finished=T0 + hour)]
    first = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1), done, T0 + hour)
    assert first.status.phase == Phase.SUCCEEDED and first.status.gpu_hours == 8
    # the operator stopped after writing the status, before releasing the pods: seen again
    again = decide(s, first.status, done, T0 + 5 * hour)
    assert again.status.ledger.retired_gpu_seconds == 8 * 3600
    assert again.status.gpu_hours == 8
    assert sorted(again.release) == ["demo-0", "demo-1"], "released, not charged again"


def test_a_pod_on_a_lost_node_is_charged_until_its_deletion_deadline() -> None:
    s = spec()
    hour = dt.timedelta(hours=1)
    status = JobStatus(phase=Phase.RESTARTING, attempts=1, restarts=1)
    lost = pod(s, 0, "Running", deleting=True, deadline=T0 + hour)  # no kubelet says it stopped
    plan = decide(s, status, [lost], T0 + hour / 2)
    assert plan.status.gpu_hours == 2 and not plan.release, "still held, for all we know"
    plan = decide(s, plan.status, [lost], T0 + 3 * hour)
    assert plan.status.gpu_hours == 4 and plan.release == ["demo-0"]


def test_a_partly_created_gang_is_completed_not_duplicated() -> None:
    s = spec()
    plan = decide(s, JobStatus(phase=Phase.PENDING, attempts=1),
                  [pod(s, 0, "Pending", started=None)], T0)
    assert plan.create_ranks == [1] and plan.attempt == 1


def test_a_child_name_held_by_another_owner_blocks_creation_and_says_so() -> None:
    plan = decide(spec(), JobStatus(), [], T0, taken=("service/demo",))
    assert not plan.create_ranks
    created = get_condition(plan.status, ConditionType.CREATED)
    assert created is not None and created.status == "False"
    assert created.reason == "ChildNameTaken" and "service/demo" in created.message
    assert plan.status.phase == Phase.PENDING


def test_budget_exhausted_stops_the_job() -> None:
    s = spec(runPolicy={"maxGPUHours": 8})
    hour = dt.timedelta(hours=1)
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1, start_time=format_time(T0)),
                  [pod(s, 0, "Running"), pod(s, 1, "Running")], T0 + hour)
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "BudgetExhausted"
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"]
    assert plan.status.gpu_hours == 8


def test_cost_estimate_prices_each_pod_by_its_gpu_product() -> None:
    import dataclasses

    s = spec()
    hour = dt.timedelta(hours=1)
    pods = [dataclasses.replace(pod(s, 0, "Running"), price=2.0),
            dataclasses.replace(pod(s, 1, "Running"), price=3.0)]
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1), pods, T0 + hour)
    assert plan.status.cost_estimate == 4 * 2.0 + 4 * 3.0


def test_a_finished_jobs_gpu_hours_are_final_once_its_pods_have_ended() -> None:
    s = spec()
    done = JobStatus(phase=Phase.SUCCEEDED, completion_time=format_time(T0), gpu_hours=5,
                     ledger=Ledger(retired_gpu_seconds=5 * 3600))
    assert decide(s, done, [], T0 + dt.timedelta(days=1)).status.gpu_hours == 5
    failed = JobStatus(phase=Phase.FAILED, completion_time=format_time(T0), attempts=1)
    stopping = [pod(s, 0, "Running", deleting=True), pod(s, 1, "Running", deleting=True)]
    plan = decide(s, failed, stopping, T0 + dt.timedelta(hours=1))
    assert plan.status.gpu_hours == 8, "pods still stopping after the failure hold their GPUs"


def test_a_pod_deleted_by_someone_else_is_a_counted_gang_restart() -> None:
    s = spec(runPolicy={"backoffLimit": 3})
    status = decide(s, JobStatus(), [], T0).status
    status = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], T0).status
    later = T0 + dt.timedelta(hours=1)
    plan = decide(s, status, [pod(s, 0, "Running", deleting=True), pod(s, 1, "Running")], later)
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.restarts == 1
    assert plan.delete_pods == ["demo-1"], "the rest of the gang goes; the deleted one is going"
    restarting = get_condition(plan.status, ConditionType.RESTARTING)
    assert restarting is not None and restarting.reason == "PodDeleted"
    assert "pod demo-0 was deleted" in restarting.message
    assert plan.status.gpu_hours == 8.0, "both pods' hour is charged, the deleted one's too"
    again = decide(s, plan.status, [pod(s, 0, "Running", deleting=True),
                                    pod(s, 1, "Running", deleting=True)], later)
    assert again.status.restarts == 1, "seen twice, counted once"
    assert again.status.gpu_hours == 8.0


def test_an_evicted_pod_is_a_restart_that_does_not_count() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    status = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], T0).status
    plan = decide(s, status, [pod(s, 0, "Running", deleting=True, disrupted=True),
                              pod(s, 1, "Running")], T0)
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.restarts == 0


def test_the_trainers_message_reaches_the_failed_condition() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    failed = pod(s, 0, "Failed", exit_code=2,
                 message="exit code 2 from rank 0: BadConfig: global batch 12 is not a multiple")
    plan = decide(s, status, [failed, pod(s, 1, "Running")], T0)
    condition = get_condition(plan.status, ConditionType.FAILED)
    assert condition is not None
    assert condition.message == ("pod demo-0 exited with code 2 (invalid trainer config): "
                                 "exit code 2 from rank 0: BadConfig: global batch 12 is not "
                                 "a multiple")


def test_the_schedulers_repeated_words_are_not_repeated() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    message = '0/4 nodes are available: persistentvolumeclaim "datasets" not found. not found'
    plan = decide(s, status, [pod(s, 0, "Pending", started=None, unschedulable=message),
                              pod(s, 1, "Pending", started=None)], T0)
    running = get_condition(plan.status, ConditionType.RUNNING)
    assert running is not None
    assert running.message == ('pod demo-0 cannot be scheduled: 0/4 nodes are available: '
                               'persistentvolumeclaim "datasets" not found')


def test_time_driven_work_is_queued_for_when_it_falls_due() -> None:
    from mentor.controller.training import next_due

    s = spec(runPolicy={"activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 60,
                        "maxGPUHours": 1.0})
    running = JobStatus(phase=Phase.RUNNING, start_time=format_time(T0),
                        ledger=Ledger(active_since=format_time(T0)))
    later = T0 + dt.timedelta(seconds=590)
    assert next_due(s, running, later, 30.0) == 10.0, "the deadline, before the GPU-hours"
    assert next_due(s, running, T0, 30.0) == 30.0, "the GPU-hours' refresh"
    assert next_due(s, running, T0, 30.0, held=16, used=0.99) == pytest.approx(2.25), \
        "16 GPUs use the last 0.01 GPU-hours in 2.25 s: the budget is checked then"
    done = JobStatus(phase=Phase.SUCCEEDED, completion_time=format_time(T0))
    assert next_due(s, done, T0 + dt.timedelta(seconds=45), 30.0) == 15.0, "the TTL"
    assert next_due(spec(), done, T0, 30.0) is None, "finished, no TTL: nothing to wait for"
    assert next_due(s, JobStatus(phase=Phase.SUSPENDED), T0, 30.0) is None


def test_time_alone_writes_within_one_budget_however_many_jobs_hold_pods() -> None:
    """The GPU-hours refresh and the progress flusher share one token bucket: a burst of at
    most `burst`, then `rate` a second; and each holding job's refresh period stretches so that
    all of them together stay within the rate."""
    from mentor.controller.budget import WriteBudget

    clock = [0.0]
    writes = WriteBudget(rate=50, burst=100, clock=lambda: clock[0])
    assert writes.take(150) == 100, "the burst, no more"
    assert writes.take() == 0, "then nothing until time passes"
    clock[0] += 0.5
    assert writes.take(1000) == 25, "half a second: 25 writes"
    clock[0] += 60
    assert writes.take(1000) == 100, "idle time saves no more than the burst"
    assert writes.period(holders=10, floor=30) == 30, "few jobs: every resync"
    assert writes.period(holders=5000, floor=30) == 100, "5,000 jobs at 50 a second: 100 s"


def test_a_create_refused_for_good_fails_the_job_with_the_api_servers_words() -> None:
    from mentor.decide.training import Refusal

    s = spec()
    refused = Refusal('pods "demo-0" is forbidden: violates PodSecurity "restricted:latest": '
                      'hostPath volumes', permanent=True)
    plan = decide(s, JobStatus(), [], T0, refused=refused)
    assert plan.status.phase == Phase.FAILED
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "CreateRefused"
    assert "violates PodSecurity" in failed.message
    assert not plan.create_ranks
    assert [e.reason for e in plan.events] == ["CreateRefused"]


def test_a_create_refused_for_now_waits_and_says_why_without_counting_an_attempt() -> None:
    from mentor.decide.training import Refusal

    refused = Refusal('pods "demo-0" is forbidden: exceeded quota: gpus', permanent=False)
    plan = decide(spec(), JobStatus(), [], T0, refused=refused)
    assert plan.status.phase == Phase.PENDING
    assert plan.status.attempts == 0 and not plan.create_ranks
    running = get_condition(plan.status, ConditionType.RUNNING)
    assert running is not None and running.reason == "CreateDelayed"
    assert "exceeded quota" in running.message and running.message.endswith("; retrying")


def test_the_root_cause_is_the_pod_that_ended_first_not_the_lowest_rank() -> None:
    s = spec(parallelism={"nodes": 3, "gpusPerNode": 1})
    status = decide(s, JobStatus(), [], T0).status
    first = T0 + dt.timedelta(seconds=10)
    pods = [pod(s, 0, "Failed", exit_code=137, finished=first + dt.timedelta(seconds=5)),
            pod(s, 1, "Failed", exit_code=3, finished=first),
            pod(s, 2, "Running")]
    plan = decide(s, status, pods, first + dt.timedelta(seconds=6))
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and "pod demo-1 exited with code 3" in failed.message


def test_the_deadline_counts_active_time_only() -> None:
    s = spec(runPolicy={"activeDeadlineSeconds": 100})
    status = decide(s, JobStatus(), [], T0).status
    status = decide(s, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], T0).status
    assert status.ledger.active_since == format_time(T0)
    paused = spec(runPolicy={"activeDeadlineSeconds": 100, "suspend": True})
    at = T0 + dt.timedelta(seconds=60)
    status = decide(paused, status, [pod(s, 0, "Running"), pod(s, 1, "Running")], at).status
    assert (status.ledger.active_seconds, status.ledger.active_since) == (60, None)
    # An hour suspended, then resumed and running again for 30 s: 90 s of 100 used.
    back = at + dt.timedelta(hours=1)
    status = decide(s, status, [], back).status
    status = decide(s, status, [pod(s, 0, "Running", 2), pod(s, 1, "Running", 2)], back).status
    plan = decide(s, status, [pod(s, 0, "Running", 2), pod(s, 1, "Running", 2)],
                  back + dt.timedelta(seconds=30))
    assert plan.status.phase == Phase.RUNNING
    plan = decide(s, status, [pod(s, 0, "Running", 2), pod(s, 1, "Running", 2)],
                  back + dt.timedelta(seconds=41))
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "DeadlineExceeded"


def test_the_reason_column_says_why_the_job_is_in_its_phase() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    pending = decide(s, status, [pod(s, 0, "Pending", started=None, unschedulable=message),
                                 pod(s, 1, "Pending", started=None)], T0).status
    assert (pending.phase, pending.reason) == (Phase.PENDING, "Unschedulable")
    failed = decide(s, pending, [pod(s, 0, "Failed", exit_code=2), pod(s, 1, "Running")],
                    T0).status
    assert (failed.phase, failed.reason) == (Phase.FAILED, "ExitCode")


def test_a_gang_gated_by_its_queue_is_pending_queued_and_holds_no_gpu() -> None:
    import dataclasses

    s = spec(scheduling={"queueName": "team"})
    status = decide(s, JobStatus(), [], T0).status
    gated = [dataclasses.replace(pod(s, r, "Pending", started=None),
                                 gates=("kueue.x-k8s.io/admission",)) for r in (0, 1)]
    plan = decide(s, status, gated, T0 + dt.timedelta(hours=1))
    assert (plan.status.phase, plan.status.reason) == (Phase.PENDING, "Queued")
    running = get_condition(plan.status, ConditionType.RUNNING)
    assert running is not None and "waits for admission by its queue (team" in running.message
    assert plan.status.gpu_hours == 0


def test_a_failed_pod_of_an_attempt_already_restarted_is_not_counted_again() -> None:
    """A new leader's pod watch can lag its job watch: it may see the status of attempt 2 with
    the failed pod of attempt 1 not yet deleted. That failure was counted once already."""
    s = spec()
    status = JobStatus(phase=Phase.RUNNING, attempts=2, restarts=1)
    late = [pod(s, 0, "Failed", exit_code=137), pod(s, 1, "Running")]  # attempt 1
    plan = decide(s, status, late, T0)
    assert plan.status.restarts == 1 and plan.status.phase == Phase.RUNNING
    assert sorted(plan.delete_pods) == ["demo-0", "demo-1"] and not plan.create_ranks
    assert plan.delete_uids == {"demo-0": "uid-0-1", "demo-1": "uid-1-1"}, \
        "deleted by UID: never the new attempt's pod of the same name"


def evicted(s: TrainingJobSpec, rank: int, ran: dt.timedelta) -> PodView:
    """A pod whose kubelet could not find its container when it evicted it (a node shut down,
    an eviction): `ContainerStatusUnknown`, with no startedAt and no finishedAt."""
    manifest = build_pod(JOB, s, rank, 1, Settings.from_env())
    manifest["metadata"].update(uid=f"uid-{rank}", creationTimestamp=format_time(T0))
    manifest["status"] = {
        "phase": "Failed", "reason": "Evicted", "startTime": format_time(T0),
        "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
             "lastTransitionTime": format_time(T0 + ran)},
            {"type": "Ready", "status": "False", "reason": "PodFailed",
             "lastTransitionTime": format_time(T0 + ran)}],
        "containerStatuses": [{"name": "trainer", "state": {"terminated": {
            "exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated"}}}]}
    return PodView.from_pod(manifest)


def test_an_evicted_pod_with_no_container_times_is_charged_from_its_own_start() -> None:
    """8 GPUs for 10 h: 80 GPU-hours, once 0.0, settled and never recounted."""
    s = spec(parallelism={"nodes": 1, "gpusPerNode": 8})
    lost = evicted(s, 0, dt.timedelta(hours=10))
    assert lost.started_at == T0 and lost.finished_at == T0 + dt.timedelta(hours=10)
    plan = decide(s, JobStatus(phase=Phase.RUNNING), [lost], T0 + dt.timedelta(hours=11))
    assert plan.status.ledger.retired_gpu_seconds == 8 * 10 * 3600
    assert plan.status.gpu_hours == 80
    assert plan.status.restarts == 0, "an eviction is no fault of the job's"


def test_a_pending_pod_holds_no_gpu_time_before_its_container_starts() -> None:
    """The startTime fallback is for containers that ended unseen, not for image pulls."""
    s = spec(parallelism={"nodes": 1, "gpusPerNode": 8})
    waiting = pod(s, 0, "Pending", started=None, waiting="ErrImagePull")
    assert waiting.started_at is None and waiting.gpu_seconds(T0 + dt.timedelta(hours=1)) == 0


def test_a_message_longer_than_the_schema_allows_is_shortened_not_refused() -> None:
    """A pull error on a long image name once made every status write fail: the job froze,
    retried every 5 s, with no failure, deadline or budget."""
    import dataclasses

    s = spec()
    image = "registry.example.com/" + "x" * 9000 + ":v1"
    pods = [dataclasses.replace(pod(s, 0, "Pending", waiting="ImagePullBackOff"),
                                waiting_message=f"Back-off pulling image {image!r}: denied"),
            pod(s, 1, "Pending")]
    plan = decide(s, JobStatus(phase=Phase.PENDING, attempts=1), pods,
                  T0 + dt.timedelta(seconds=300))
    failed = get_condition(plan.status, ConditionType.FAILED)
    assert failed is not None and failed.reason == "ImagePullBackOff"
    assert len(failed.message) <= 4096
    assert "Back-off pulling image 'registry.example.com/xxx" in failed.message
    assert failed.message.endswith(":v1': denied"), "the head and the tail are kept"
    JobStatus.model_validate(plan.status.model_dump(by_alias=True))  # what the server will take


def test_a_job_suspended_during_a_restart_is_no_longer_restarting() -> None:
    s = spec()
    restarting = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1),
                        [pod(s, 0, "Running"), pod(s, 1, "Failed", exit_code=137)], T0).status
    assert get_condition(restarting, ConditionType.RESTARTING).status == "True"  # type: ignore[union-attr]
    paused = decide(spec(runPolicy={"suspend": True}), restarting, [], T0).status
    true = sorted(c.type.value for c in paused.conditions if c.status == "True")
    assert true == ["Suspended"], true


def test_mig_slices_and_other_vendors_gpus_are_charged_by_their_weight() -> None:
    """Only nvidia.com/gpu was ever charged: a MIG slice or an AMD GPU cost nothing and never
    reached maxGPUHours."""
    from mentor.decide.podview import gpus_of

    weights = {"nvidia.com/gpu": 1.0, "nvidia.com/mig-1g.10gb": 1 / 7, "amd.com/gpu": 1.0}
    assert gpus_of({"limits": {"nvidia.com/mig-1g.10gb": "7"}}, weights) == pytest.approx(1.0)
    assert gpus_of({"requests": {"amd.com/gpu": 2}}, weights) == 2
    assert gpus_of({"limits": {"nvidia.com/gpu": "8", "cpu": "4"}}, weights) == 8
    assert gpus_of({"limits": {"example.com/fpga": "1"}}, weights) == 0
    s = spec(parallelism={"nodes": 1, "procsPerNode": 1},
             template={"resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}},
             runPolicy={"maxGPUHours": 1})
    manifest = build_pod(JOB, s, 0, 1, Settings.from_env())
    manifest["metadata"].update(uid="uid-0", creationTimestamp=format_time(T0))
    manifest["status"] = {"phase": "Running", "containerStatuses": [
        {"name": "trainer", "state": {"running": {"startedAt": format_time(T0)}}}]}
    sliced = PodView.from_pod(manifest, weights)
    assert sliced.gpus == pytest.approx(1 / 7)
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1), [sliced],
                  T0 + dt.timedelta(hours=7, seconds=1))
    assert plan.status.phase == Phase.FAILED and plan.status.reason == "BudgetExhausted", \
        "7 hours of a 1/7 slice is one GPU-hour"
    assert PodView.from_pod(manifest).gpus == 0, "by default a MIG slice is not a GPU"


def test_the_result_rank_0_leaves_in_its_termination_message_is_kept() -> None:
    """A TuningJob's objective once came from the last report that reached the status; a lost
    report made the wrong trial win. The termination message is kept with the pod."""
    from mentor.api.results import format_result, parse_result

    line = format_result(100, 1.8345678901234567)
    assert parse_result(line) == (100, 1.8345678901234567)
    assert parse_result(format_result(5, float("nan"))) == (5, None)
    assert parse_result("exit code 2 from rank 0: BadConfig: no data") is None
    s = spec(parallelism={"nodes": 2, "gpusPerNode": 1})
    pods = [pod(s, 0, "Succeeded", message=line), pod(s, 1, "Succeeded")]
    plan = decide(s, JobStatus(phase=Phase.RUNNING, attempts=1), pods, T0)
    assert plan.status.phase == Phase.SUCCEEDED
    assert plan.status.result is not None and plan.status.result.eval_loss == 1.8345678901234567
