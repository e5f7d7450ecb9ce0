"""The operator process: everything it holds, made once at start-up, and what it runs.

One `Operator` owns the settings, the in-memory state (the jobs, the TuningJobs, the pods, the
expectations), the two work queues, the Lease and the progress book. Kopf's handlers
(mentor.controller.main) hand it every event; its queues' workers reconcile; its background
tasks lead, resync and serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from mentor.api.kinds import TRAINING_JOB
from mentor.api.labels import LEADER
from mentor.controller import kube, server, training, tuning
from mentor.controller.budget import WriteBudget
from mentor.controller.cache import Expectations, Jobs, Key, Pods, key_of
from mentor.controller.leader import Leadership
from mentor.controller.metrics import METRICS
from mentor.controller.namespaces import NamespaceObjects
from mentor.controller.server import ProgressBook
from mentor.controller.settings import Settings
from mentor.controller.workqueue import WorkQueue

log = logging.getLogger(__name__)


class Operator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        jobs = Jobs()
        self.pods = Pods(TRAINING_JOB.kind, settings.namespaces, on_change=self._pod_changed)
        # A flush's worth at once: the flusher spends an interval's tokens together.
        self.writes = WriteBudget(settings.status_writes_per_second,
                                  settings.status_writes_per_second * settings.progress_interval)
        self.training = training.Controller(settings, jobs, self.pods, Expectations(),
                                            NamespaceObjects(settings), self.writes)
        self.tuning = tuning.TuningController(settings, Jobs(), jobs)
        self.queue = WorkQueue(self._reconcile_training, settings.workers)
        self.tuning_queue = WorkQueue(self._reconcile_tuning, max(1, settings.workers // 4))
        self.leadership = Leadership(settings.lease_name, settings.lease_namespace,
                                     duration=settings.lease_seconds,
                                     deadline=settings.lease_seconds * 2 / 3,
                                     retry=max(settings.lease_seconds / 7.5, 0.2))
        self.book = ProgressBook()
        self.labelled = True  # whether this pod carries the leader label; unknown until cleared
        self.tasks: list[asyncio.Task[None]] = []

    # -- the work queues' callbacks

    def _reconcile_training(self, key: Any) -> float | None:
        return training.reconcile(self.training, key)

    def _reconcile_tuning(self, key: Any) -> float | None:
        return tuning.reconcile(self.tuning, key)

    def _pod_changed(self, key: Key) -> None:
        self.queue.add(key)

    # -- events from Kopf

    def on_training_job(self, type_: str, body: dict[str, Any]) -> None:
        """Every version of every TrainingJob: remembered, and its job queued unless its
        reconciles have decided on that version already (the status its last reconcile wrote, a
        listing again after the watch was reset). A deleted job's series and state go
        with it (no finalizer is needed to see a deletion)."""
        key = key_of(body)
        # A trial: its TuningJob decides again, also on the echo of the trial's own status
        # write (which the TuningJob has not seen).
        parent = tuning.parent_of(body)
        if parent:
            self.tuning_queue.add(parent)
        if type_ == "DELETED":
            self.training.forget(key)
            self.queue.forget(key)
            self.book.jobs.pop(key, None)
            METRICS.forget(key[0], TRAINING_JOB.kind, key[1])
            return
        self.training.jobs.observe(body)
        if self.training.news(key, body):
            self.queue.add(key)

    def on_tuning_job(self, type_: str, body: dict[str, Any]) -> None:
        """Every version of every TuningJob: remembered and queued, or forgotten."""
        key = key_of(body)
        if type_ == "DELETED":
            self.tuning.tunings.forget(key)
            METRICS.forget_tuning(*key)
        else:
            self.tuning.tunings.observe(body)
        self.tuning_queue.add(key)  # a deleted one too: its trials' finalizers are released

    # -- the process's life

    def start(self) -> None:
        self.pods.start()  # every replica watches, so a standby takes over with its memory warm
        self.tasks = [
            asyncio.create_task(self._lead()),
            # Progress reports in, /metrics out; reports only while leading.
            asyncio.create_task(server.serve(self.settings, self.book, METRICS,
                                             self.training.jobs, self.leadership.acquired,
                                             self.ready, self.pods.of, self.writes)),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.pods.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.queue.stop)
        await loop.run_in_executor(None, self.tuning_queue.stop)
        if self.leadership.is_leader:  # reports go to the next leader, not to this pod
            await loop.run_in_executor(None, self._set_leader_label, False)
        await loop.run_in_executor(None, self.leadership.stop)  # a standby takes over now

    async def _lead(self) -> None:
        """Work only while this replica holds the Lease (or alone, with election off): the
        queues' workers and the safety resync start once it is acquired."""
        loop = asyncio.get_running_loop()
        if self.settings.leader_election:
            # A pod that led, lost the Lease and restarted in place still carries the label
            # the Service selects by: reports would reach a standby, which answers 503.
            await loop.run_in_executor(None, self._set_leader_label, False)
            self.leadership.on_acquired = lambda: self._set_leader_label(True)
            self.leadership.start()
            # Polled, not a blocking wait in an executor thread: a standby that is told to stop
            # stops now (asyncio waits for its executor's threads at exit, and this one would
            # wait for a Lease that never comes).
            while not self.leadership.acquired.is_set():
                await asyncio.sleep(0.2)
            # A standby's pod watch may lag: decide from a fresh list (job statuses are guarded
            # by their resourceVersion instead).
            await loop.run_in_executor(None, self.pods.refresh)
        else:
            self.labelled = False
            self.leadership.acquired.set()
        METRICS.leader.set(1)
        self.queue.start()
        self.tuning_queue.start()
        await self._resync_forever()

    def _set_leader_label(self, leading: bool) -> None:
        """Label this replica's pod as the leader, or not: the chart's Service selects the
        leader, so the trainers' progress reports reach the replica that writes them."""
        pod = os.environ.get("MENTOR_POD_NAME")
        if not pod:
            self.labelled = False
            return
        try:
            kube.core().patch_namespaced_pod(pod, self.settings.lease_namespace, {
                "metadata": {"labels": {LEADER: "true" if leading else None}}})
            self.labelled = leading
        except Exception as e:  # reports are best effort; leading is not
            log.warning("could not %s the leader label of this pod: %s",
                        "set" if leading else "remove", getattr(e, "reason", e))

    def ready(self) -> bool:
        """Ready unless the Service would send reports here that this replica cannot take:
        labelled the leader (or not known not to be) while not leading."""
        return self.leadership.is_leader or not self.labelled

    async def _resync_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.safety_resync_seconds)
            try:
                await loop.run_in_executor(None, training.resync, self.training, self.queue)
                await loop.run_in_executor(None, tuning.resync, self.tuning,
                                           self.tuning_queue.add)
            except Exception as e:  # the API server restarting, RBAC being changed: retry
                log.warning("safety resync failed (%s); retrying", getattr(e, "reason", e))
