"""The operator's entry point: `kopf run -m mentor.main` or `mentor operator`.

It only registers handlers and startup options; the work is in mentor.handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import config as kube_config

from mentor.api.kinds import GROUP, TRAINING_JOB, VERSION
from mentor.builders.names import JOB_KIND, JOB_NAME
from mentor.config import Settings
from mentor.handlers import training

SETTINGS = Settings()
FINALIZER = f"{GROUP}/finalizer"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf keeps its own state in annotations: the status schema is strict and is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
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


@kopf.timer(GROUP, VERSION, TRAINING_JOB.plural, interval=SETTINGS.resync_seconds,
            initial_delay=SETTINGS.resync_seconds)
def resync(name: str, namespace: str | None, **_: Any) -> None:
    """Deadlines, TTLs and GPU-hours advance with time, not with events."""
    training.reconcile(namespace or "", name, SETTINGS)


@kopf.on.event("", "v1", "pods", labels={JOB_KIND: TRAINING_JOB.kind, JOB_NAME: kopf.PRESENT})
def on_pod(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A pod's phase is the job's news: carry it back into the job's status."""
    training.reconcile(namespace or "", labels[JOB_NAME], SETTINGS)
