"""TrainingJob handlers: read the job and its pods, call the pure decision, carry out the plan.

Every trigger (the job created or changed, one of its pods changed, the periodic resync) ends in
`reconcile`, under a per-job lock and on a fresh read of the job, so triggers that race each other
cannot double-count a restart or create a pod twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import GROUP, TRAINING_JOB, VERSION
from mentor.api.status import JobStatus
from mentor.api.training import TrainingJobSpec
from mentor.builders.names import JobRef
from mentor.builders.pods import build_config_map, build_pod, build_service, build_trainer_config
from mentor.config import Settings
from mentor.podview import PodView
from mentor.reconcile import Event, Plan, decide

log = logging.getLogger(__name__)
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def job_ref(body: dict[str, Any]) -> JobRef:
    meta = body["metadata"]
    return JobRef(kind=TRAINING_JOB.kind, name=meta["name"], namespace=meta["namespace"],
                  uid=meta["uid"])


def _get_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAINING_JOB.plural, name)
        return cast(dict[str, Any], job)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _create(kind: str, manifest: dict[str, Any], job: JobRef) -> None:
    """Create a child; if the name is taken, accept it only when this job owns it."""
    core: Any = client.CoreV1Api()
    create: Any = {"Pod": core.create_namespaced_pod, "Service": core.create_namespaced_service,
              "ConfigMap": core.create_namespaced_config_map}[kind]
    read: Any = {"Pod": core.read_namespaced_pod, "Service": core.read_namespaced_service,
            "ConfigMap": core.read_namespaced_config_map}[kind]
    name = manifest["metadata"]["name"]
    try:
        create(job.namespace, manifest)
    except ApiException as e:
        if e.status != 409:
            raise
        existing = read(name, job.namespace).to_dict()
        owners = existing["metadata"].get("owner_references") or []
        if not any(o.get("controller") and o.get("uid") == job.uid for o in owners):
            raise kopf.TemporaryError(
                f"{kind} {name} exists and is not owned by this job; it is never adopted",
                delay=30) from e


def _list_pods(job: JobRef) -> list[PodView]:
    pods = client.CoreV1Api().list_namespaced_pod(job.namespace, label_selector=job.selector())
    api: Any = client.ApiClient()
    views = []
    for pod in pods.items:
        raw = api.sanitize_for_serialization(pod)
        if job.owns(raw["metadata"]):
            views.append(PodView.from_pod(raw))
    return views


def _post(body: dict[str, Any], events: list[Event]) -> None:
    for e in events:
        kopf.event(cast(kopf.Body, body), type=e.type, reason=e.reason, message=e.message)


def _apply(body: dict[str, Any], job: JobRef, spec: TrainingJobSpec, plan: Plan,
           settings: Settings) -> None:
    core = client.CoreV1Api()
    if plan.create_ranks:
        _create("ConfigMap", build_config_map(job, build_trainer_config(spec)), job)
        _create("Service", build_service(job, settings), job)
        for rank in plan.create_ranks:
            _create("Pod", build_pod(job, spec, rank, plan.attempt, settings), job)
    for name in plan.delete_pods:
        try:
            core.delete_namespaced_pod(name, job.namespace, grace_period_seconds=30)
        except ApiException as e:
            if e.status != 404:
                raise
    new_status = plan.status.wire()
    if new_status != (body.get("status") or {}):
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP, VERSION, job.namespace, TRAINING_JOB.plural, job.name, {"status": new_status})
    _post(body, plan.events)
    if plan.delete_job:
        client.CustomObjectsApi().delete_namespaced_custom_object(
            GROUP, VERSION, job.namespace, TRAINING_JOB.plural, job.name,
            body=client.V1DeleteOptions(propagation_policy="Background"))


def reconcile(namespace: str, name: str, settings: Settings) -> None:
    """Bring one TrainingJob one step closer to its spec."""
    with _locks[f"{namespace}/{name}"]:
        body = _get_job(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        job = job_ref(body)
        spec = TrainingJobSpec.model_validate(body["spec"])
        status = JobStatus.model_validate(body.get("status") or {})
        plan = decide(spec, status, _list_pods(job), dt.datetime.now(dt.UTC),
                      body["metadata"].get("generation"))
        _apply(body, job, spec, plan, settings)
