"""The operator's entry point: `kopf run -m mentor.main` or `mentor operator`.

It only wires things together; the work is in mentor.handlers. Kopf watches the TrainingJobs and
hands every event to one handler, which records the job in memory and queues it; a label-selected
watch does the same for the jobs' pods; work-queue workers reconcile. No handler writes
annotations or finalizers on a job: the status (with observedGeneration) is Mentor's whole record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from mentor import kube, server
from mentor.api.kinds import GROUP, TRAINING_JOB, VERSION
from mentor.config import Settings
from mentor.handlers import training
from mentor.handlers.training import Controller
from mentor.metrics import METRICS
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
    jobs, expectations = Jobs(), Expectations()
    queue: WorkQueue = WorkQueue(lambda key: None, SETTINGS.workers)
    pods = Pods(TRAINING_JOB.kind, SETTINGS.namespaces, on_change=queue.add)
    controller = Controller(SETTINGS, jobs, pods, expectations)
    queue.process = lambda key: training.reconcile(controller, key)  # type: ignore[arg-type]
    pods.start()
    queue.start()
    book = ProgressBook()
    memo["controller"], memo["queue"], memo["book"] = controller, queue, book
    memo["tasks"] = [
        asyncio.create_task(_resync_forever(controller, queue)),
        # Progress reports in, /metrics out (mentor.server).
        asyncio.create_task(server.serve(SETTINGS, book, METRICS, jobs)),
    ]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo["tasks"]:
        task.cancel()
    memo["controller"].pods.stop()
    await asyncio.get_running_loop().run_in_executor(None, memo["queue"].stop)


@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
def on_job(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every version of every job: remembered, and its job queued. A deleted job's series and
    state go with it (no finalizer is needed to see a deletion, so none holds it back)."""
    body: dict[str, Any] = dict(event["object"])
    key = key_of(body)
    controller: Controller = memo["controller"]
    queue: WorkQueue = memo["queue"]
    if type == "DELETED":
        controller.forget(key)
        queue.forget(key)
        memo["book"].jobs.pop(key, None)
        METRICS.forget(key[0], TRAINING_JOB.kind, key[1])
        return
    controller.jobs.observe(body)
    queue.add(key)


async def _resync_forever(controller: Controller, queue: WorkQueue) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SETTINGS.safety_resync_seconds)
        try:
            await loop.run_in_executor(None, training.resync, controller, queue.add)
        except Exception as e:  # the API server restarting, RBAC being changed: try again
            log.warning("safety resync failed (%s); retrying", getattr(e, "reason", e))
