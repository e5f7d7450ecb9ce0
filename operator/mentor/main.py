"""The operator's entry point: `kopf run -m mentor.main` or `mentor operator`.

It only registers handlers and startup options; the work is in mentor.handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from mentor import server
from mentor.api.kinds import GROUP, TRAINING_JOB, VERSION
from mentor.builders.names import JOB_KIND, JOB_NAME
from mentor.config import Settings
from mentor.handlers import training
from mentor.metrics import METRICS
from mentor.server import ProgressBook

SETTINGS = Settings()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf keeps its own state in annotations: the status schema is strict and is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]


@kopf.on.resume(GROUP, VERSION, TRAINING_JOB.plural)
@kopf.on.create(GROUP, VERSION, TRAINING_JOB.plural)
@kopf.on.update(GROUP, VERSION, TRAINING_JOB.plural, field="spec")
def on_job(name: str, namespace: str | None, **_: Any) -> None:
    training.reconcile(namespace or "", name, SETTINGS)


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, **_: Any) -> None:
    """Deadlines, TTLs and GPU-hours advance with time, not with events: one loop lists the jobs
    every MENTOR_RESYNC_SECONDS and reconciles each (one list call, not a timer per job)."""
    memo["resync"] = asyncio.create_task(_resync_forever())


@kopf.on.startup()
async def start_server(memo: kopf.Memo, **_: Any) -> None:
    """Progress reports in, /metrics out (mentor.server)."""
    memo["server"] = asyncio.create_task(server.serve(SETTINGS, ProgressBook(), METRICS))


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    memo["resync"].cancel()
    memo["server"].cancel()


@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
def on_job_event(type: str, name: str, namespace: str | None, **_: Any) -> None:
    """A deleted job's series go with it. Watching the DELETED event needs no finalizer, so
    nothing ever holds a job's deletion back."""
    if type == "DELETED":
        METRICS.forget(namespace or "", TRAINING_JOB.kind, name)


async def _resync_forever() -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SETTINGS.resync_seconds)
        try:
            await loop.run_in_executor(None, training.resync_all, SETTINGS)
        except ApiException as e:  # the API server restarting, RBAC being changed: try again
            logging.getLogger(__name__).warning("resync failed (%s %s); retrying", e.status,
                                                e.reason)
        except Exception:  # the loop must outlive any one failure
            logging.getLogger(__name__).exception("resync failed; retrying")


@kopf.on.event("", "v1", "pods", labels={JOB_KIND: TRAINING_JOB.kind, JOB_NAME: kopf.PRESENT})
def on_pod(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A pod's phase is the job's news: carry it back into the job's status."""
    training.reconcile(namespace or "", labels[JOB_NAME], SETTINGS)
