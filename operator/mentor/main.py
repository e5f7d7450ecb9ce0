"""The operator's entry point: `kopf run -m mentor.main` or `mentor operator`.

It only wires things together; the work is in mentor.handlers. Kopf watches the TrainingJobs and
hands every event to one handler, which records the job in memory and queues it; a label-selected
watch does the same for the jobs' pods; work-queue workers reconcile. No handler writes
annotations or finalizers on a job: the status (with observedGeneration) is Mentor's whole record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import kopf

from mentor import kube, server
from mentor.api.kinds import GROUP, TRAINING_JOB, TUNING_JOB, VERSION
from mentor.config import Settings
from mentor.handlers import training, tuning
from mentor.handlers.training import Controller
from mentor.handlers.tuning import TuningController, parent_of
from mentor.leader import Leadership
from mentor.metrics import METRICS
from mentor.progress import stored_key
from mentor.server import ProgressBook
from mentor.state import Expectations, Jobs, Pods, key_of
from mentor.workqueue import WorkQueue

SETTINGS = Settings()
log = logging.getLogger(__name__)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    kube.api_client()  # fail fast on a bad configuration
    config = SETTINGS
    if config.report_key_secret and not os.environ.get("MENTOR_REPORT_KEY"):
        key = await asyncio.get_running_loop().run_in_executor(
            None, stored_key, config.lease_namespace, config.report_key_secret)
        config = dataclasses.replace(config, report_key=key)
    jobs, expectations = Jobs(), Expectations()
    queue: WorkQueue = WorkQueue(lambda key: None, config.workers)
    pods = Pods(TRAINING_JOB.kind, config.namespaces, on_change=queue.add)
    controller = Controller(config, jobs, pods, expectations)
    queue.process = lambda key: training.reconcile(controller, key)  # type: ignore[arg-type]
    tuner = TuningController(config, Jobs(), jobs)
    tuning_queue: WorkQueue = WorkQueue(
        lambda key: tuning.reconcile(tuner, key),  # type: ignore[arg-type]
        max(1, config.workers // 4))
    leadership = Leadership(config.lease_name, config.lease_namespace,
                            duration=config.lease_seconds,
                            deadline=config.lease_seconds * 2 / 3,
                            retry=max(config.lease_seconds / 7.5, 0.2))
    pods.start()  # every replica watches, so a standby takes over with its memory warm
    book = ProgressBook()
    memo["controller"], memo["queue"], memo["book"] = controller, queue, book
    memo["tuner"], memo["tuning_queue"] = tuner, tuning_queue
    memo["leadership"] = leadership
    memo["tasks"] = [
        asyncio.create_task(_lead(leadership, controller, queue, tuner, tuning_queue)),
        # Progress reports in, /metrics out (mentor.server); reports only while leading.
        asyncio.create_task(server.serve(config, book, METRICS, jobs, leadership.acquired)),
    ]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo["tasks"]:
        task.cancel()
    memo["controller"].pods.stop()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, memo["queue"].stop)
    await loop.run_in_executor(None, memo["tuning_queue"].stop)
    await loop.run_in_executor(None, memo["leadership"].stop)  # a standby takes over now


@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
def on_job(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every version of every job: remembered, and its job queued. A deleted job's series and
    state go with it (no finalizer is needed to see a deletion, so none holds it back)."""
    body: dict[str, Any] = dict(event["object"])
    key = key_of(body)
    controller: Controller = memo["controller"]
    queue: WorkQueue = memo["queue"]
    parent = parent_of(body)  # a trial: its TuningJob decides again
    if parent:
        memo["tuning_queue"].add(parent)
    if type == "DELETED":
        controller.forget(key)
        queue.forget(key)
        memo["book"].jobs.pop(key, None)
        METRICS.forget(key[0], TRAINING_JOB.kind, key[1])
        return
    controller.jobs.observe(body)
    queue.add(key)


@kopf.on.event(GROUP, VERSION, TUNING_JOB.plural)
def on_tuning_job(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every version of every TuningJob: remembered and queued, or forgotten."""
    body: dict[str, Any] = dict(event["object"])
    key = key_of(body)
    tuner: TuningController = memo["tuner"]
    if type == "DELETED":
        tuner.tunings.forget(key)
        METRICS.forget_tuning(*key)
    else:
        tuner.tunings.observe(body)
    memo["tuning_queue"].add(key)  # a deleted one too: its trials' finalizers are released


async def _lead(leadership: Leadership, controller: Controller, queue: WorkQueue,
                tuner: TuningController, tuning_queue: WorkQueue) -> None:
    """Work only while this replica holds the Lease (or alone, with election off): the queue's
    workers and the safety resync start once it is acquired."""
    loop = asyncio.get_running_loop()
    if SETTINGS.leader_election:
        leadership.on_acquired = _label_leader
        leadership.start()
        await loop.run_in_executor(None, leadership.acquired.wait)
        # A standby's pod watch may lag: decide from a fresh list (job statuses are guarded by
        # their resourceVersion instead).
        await loop.run_in_executor(None, controller.pods.refresh)
    else:
        leadership.acquired.set()
    METRICS.leader.set(1)
    queue.start()
    tuning_queue.start()
    await _resync_forever(controller, queue, tuner, tuning_queue)


def _label_leader() -> None:
    """Label this replica's pod as the leader: the chart's Service selects it, so the trainers'
    progress reports reach the replica that writes them."""
    pod = os.environ.get("MENTOR_POD_NAME")
    if not pod:
        return
    try:
        kube.core().patch_namespaced_pod(pod, SETTINGS.lease_namespace, [
            {"op": "add", "path": "/metadata/labels/mentor.dev~1leader", "value": "true"}])
    except Exception as e:  # reports are best effort; leading is not
        log.warning("could not label this pod as the leader: %s", getattr(e, "reason", e))


async def _resync_forever(controller: Controller, queue: WorkQueue, tuner: TuningController,
                          tuning_queue: WorkQueue) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SETTINGS.safety_resync_seconds)
        try:
            await loop.run_in_executor(None, training.resync, controller, queue.add)
            await loop.run_in_executor(None, tuning.resync, tuner, tuning_queue.add)
        except Exception as e:  # the API server restarting, RBAC being changed: try again
            log.warning("safety resync failed (%s); retrying", getattr(e, "reason", e))
