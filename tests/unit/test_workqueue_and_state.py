"""The work queue merges bursts and never runs one job twice at once; expectations hold a job
back until the watch shows what its last reconcile did."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any

from mentor.controller.cache import Expectations, Jobs
from mentor.controller.workqueue import WorkQueue


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_burst_of_events_for_one_job_is_one_reconcile() -> None:
    runs: Counter[str] = Counter()
    gate = threading.Event()

    def process(key: Any) -> None:
        gate.wait()
        runs[key] += 1

    queue = WorkQueue(process, workers=4)
    for _ in range(1000):
        queue.add("job-a")
    queue.add("job-b")
    queue.start()
    gate.set()
    wait_until(lambda: runs["job-a"] == 1 and runs["job-b"] == 1 and len(queue) == 0)
    time.sleep(0.1)
    assert runs == {"job-a": 1, "job-b": 1}
    queue.stop()


def test_a_job_is_never_reconciled_twice_at_once_and_no_event_is_lost() -> None:
    busy: set[str] = set()
    overlaps, runs = [], Counter[str]()
    lock = threading.Lock()

    def process(key: Any) -> None:
        with lock:
            if key in busy:
                overlaps.append(key)
            busy.add(key)
        time.sleep(0.02)
        with lock:
            busy.discard(key)
            runs[key] += 1

    queue = WorkQueue(process, workers=8)
    queue.start()
    for _ in range(20):
        queue.add("job")
        time.sleep(0.005)
    wait_until(lambda: len(queue) == 0)
    queue.add("job")  # an event after the last run: it must cause one more
    wait_until(lambda: len(queue) == 0)
    queue.stop()
    assert not overlaps
    assert 2 <= runs["job"] <= 21


def test_a_reconcile_is_queued_again_when_it_asks_to_be() -> None:
    times: list[float] = []

    def process(key: Any) -> float | None:
        times.append(time.monotonic())
        return 0.2 if len(times) < 3 else None

    queue = WorkQueue(process, workers=2)
    queue.start()
    queue.add("deadline")
    wait_until(lambda: len(times) == 3)
    queue.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.19 for gap in gaps), gaps


def test_a_forgotten_job_leaves_nothing_queued() -> None:
    queue = WorkQueue(lambda key: None, workers=1)
    queue.add("gone", after=60)
    assert len(queue) == 1
    queue.forget("gone")
    assert len(queue) == 0


def pod(name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_expectations_wait_for_the_watch_to_show_creates_and_deletes() -> None:
    expectations = Expectations()
    key = ("ns", "job")
    assert expectations.met(key, [])
    expectations.expect(key, created=["job-0", "job-1"], deleted=[])
    assert not expectations.met(key, [pod("job-0")]), "job-1 not seen yet: do not create it again"
    assert expectations.met(key, [pod("job-0"), pod("job-1")])
    expectations.expect(key, created=[], deleted=["job-0", "job-1"])
    assert not expectations.met(key, [pod("job-0"), pod("job-1")])
    assert expectations.met(key, [pod("job-0", deleting=True)]), "terminating or gone"


def test_the_newest_version_of_a_job_wins() -> None:
    jobs = Jobs()
    old = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "resourceVersion": "7"}}
    new = {"metadata": {"namespace": "ns", "name": "j", "uid": "u", "resourceVersion": "9"}}
    jobs.observe(new)
    jobs.observe(old)  # a late watch event after Mentor's own write
    assert jobs.get(("ns", "j")) is new
    recreated = {"metadata": {"namespace": "ns", "name": "j", "uid": "v",
                              "resourceVersion": "3"}}
    jobs.observe(recreated)
    assert jobs.get(("ns", "j")) is recreated, "a new job under the old name is another job"


def test_a_late_watch_event_never_overwrites_a_newer_pod() -> None:
    """After a relist (a new leader's), the watch may still deliver older events: an older
    version of a pod, or the deletion of the old pod whose name a restart has reused."""
    from mentor.controller.cache import Pods

    pods = Pods("TrainingJob", (), on_change=lambda key: None)
    key = ("team", "llm")

    def pod(uid: str, version: int) -> dict[str, object]:
        return {"metadata": {"name": "llm-0", "namespace": "team", "uid": uid,
                             "resourceVersion": str(version),
                             "labels": {"mentor.dev/job-name": "llm"}}}

    pods._apply(key, "MODIFIED", pod("new", 20))
    pods._apply(key, "MODIFIED", pod("new", 10))  # older than what the relist showed
    pods._apply(key, "DELETED", pod("old", 15))   # the previous attempt's pod of that name
    (kept,) = pods.of(key)
    assert kept["metadata"]["uid"] == "new" and kept["metadata"]["resourceVersion"] == "20"
    pods._apply(key, "DELETED", pod("new", 21))
    assert pods.of(key) == []


def test_a_version_already_decided_on_is_not_decided_again_but_any_newer_one_is() -> None:
    """The watch event of the reconciler's own status write shows what it has just decided on,
    and a watch that lists again shows what it had: neither is queued. Any newer version (an
    edit, a progress report, a trial made or stopped by the TuningJob's reconciles, a write by
    another replica) is queued as ever."""
    from mentor.controller.operator import Operator
    from mentor.controller.settings import Settings

    key = ("ns", "j")

    def event(version: str) -> dict[str, Any]:
        return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
                "metadata": {"namespace": "ns", "name": "j", "uid": "u",
                             "resourceVersion": version}, "spec": {}}

    made_by_tuning = Operator(Settings.from_env({}))
    made_by_tuning.training.jobs.observe(event("9"))  # held from the create's answer
    made_by_tuning.on_training_job("ADDED", event("9"))
    assert len(made_by_tuning.queue) == 1, "held but never decided on: queued"

    operator = Operator(Settings.from_env({}))
    operator.training.jobs.observe(event("9"))
    operator.training.decided[key] = 9  # its reconcile decided on it, or wrote it
    operator.on_training_job("MODIFIED", event("9"))
    operator.on_training_job(None, event("9"))  # type: ignore[arg-type]  # Kopf's listing
    operator.on_training_job("MODIFIED", event("8"))
    assert len(operator.queue) == 0, "nothing new to decide"
    assert operator.training.jobs.get(key) == event("9"), "the newest held is kept"
    operator.on_training_job("MODIFIED", event("10"))
    assert len(operator.queue) == 1 and operator.training.jobs.get(key) == event("10")


def gated_queue() -> tuple[WorkQueue, list[str], threading.Event]:
    """A one-worker queue that records the order of its keys, each once the gate is open."""
    order: list[str] = []
    gate = threading.Event()

    def process(key: Any) -> None:
        gate.wait()
        order.append(key)

    return WorkQueue(process, workers=1), order, gate


def test_the_safety_resync_queues_a_missed_version_now_and_a_known_one_only_as_upkeep() -> None:
    """A job the safety resync lists at a version the operator had not seen was missed: it is
    queued as any event. A known version is queued as upkeep, and only if nothing is planned
    for its job already: 5,000 running jobs (each with its refresh due) queue nothing."""
    from mentor.controller.workqueue import Background

    queue, order, gate = gated_queue()
    queue.add("planned", after=Background(60))
    for key in ("planned", "idle"):
        queue.upkeep(key)
    queue.add("missed")
    queue.start()
    gate.set()
    wait_until(lambda: len(order) == 2)
    assert order == ["missed", "idle"], "news first, then the upkeep"
    assert len(queue) == 1, "the planned job's timer stands, and nothing else was queued"
    queue.stop()


def test_upkeep_waits_while_anything_else_is_ready() -> None:
    """A GPU-hours refresh (Background) that falls due is run after the events and timers that
    are ready, however long it has waited; an event for a key waiting as upkeep promotes it."""
    from mentor.controller.workqueue import Background

    queue, order, gate = gated_queue()
    for name in ("refresh-a", "refresh-b", "refresh-c"):
        queue.add(name, after=Background(0.01))
    time.sleep(0.05)  # all three are due, before any event
    queue.add("new-job")
    queue.add("deadline", after=0.01)
    time.sleep(0.05)
    queue.add("refresh-c")  # an event for a job waiting as upkeep
    queue.start()
    gate.set()
    wait_until(lambda: len(order) == 5)
    assert sorted(order[:3]) == ["deadline", "new-job", "refresh-c"], order
    assert sorted(order[3:]) == ["refresh-a", "refresh-b"], order
    assert len(queue) == 0
    queue.stop()
