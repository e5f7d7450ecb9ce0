"""TrainingJob handlers: read the job and its pods, call the pure decision, carry out the plan.

Every trigger (the job created or changed, one of its pods changed, the periodic resync) ends in
`reconcile`, under a per-job lock and on a fresh read of the job, so triggers that race each other
cannot double-count a restart or create a pod twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket
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
from mentor.builders.pods import (
    build_config_map,
    build_pod,
    build_report_secret,
    build_service,
    build_trainer_config,
)
from mentor.config import Settings
from mentor.metrics import METRICS
from mentor.podview import PodView, format_time
from mentor.progress import token_for
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


def _core() -> Any:
    return client.CoreV1Api()


def _read_child(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    read = {"Service": _core().read_namespaced_service,
            "ConfigMap": _core().read_namespaced_config_map}[kind]
    try:
        api: Any = client.ApiClient()
        return cast(dict[str, Any], api.sanitize_for_serialization(read(name, namespace)))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _taken(job: JobRef) -> tuple[str, ...]:
    """Children's names that another owner holds: they are never adopted."""
    taken = []
    for kind, name in (("ConfigMap", job.config_map), ("Service", job.service)):
        existing = _read_child(kind, name, job.namespace)
        if existing is not None and not job.owns(existing["metadata"]):
            taken.append(f"{kind.lower()}/{name}")
    return tuple(taken)


def _create(kind: str, manifest: dict[str, Any], job: JobRef) -> None:
    """Create a child; an existing one is fine only if this job owns it (a retried reconcile)."""
    core = _core()
    create = {"Pod": core.create_namespaced_pod, "Service": core.create_namespaced_service,
              "ConfigMap": core.create_namespaced_config_map,
              "Secret": core.create_namespaced_secret}[kind]
    try:
        create(job.namespace, manifest)
    except ApiException as e:
        if e.status != 409:
            raise


_products: dict[str, str | None] = {}


def _price(node: str | None, settings: Settings) -> float | None:
    """The price per GPU-hour of a node's GPU product (nodes do not change product: cached)."""
    if not settings.gpu_prices or node is None:
        return None
    if node not in _products:
        try:
            labels = _core().read_node(node).metadata.labels or {}
        except ApiException:
            return None
        _products[node] = labels.get("nvidia.com/gpu.product")
    product = _products[node]
    return settings.gpu_prices.get(product) if product else None


def _list_pods(job: JobRef, settings: Settings) -> list[PodView]:
    pods = client.CoreV1Api().list_namespaced_pod(job.namespace, label_selector=job.selector())
    api: Any = client.ApiClient()
    views = []
    for pod in pods.items:
        raw = api.sanitize_for_serialization(pod)
        if job.owns(raw["metadata"]):
            view = PodView.from_pod(raw)
            views.append(dataclasses.replace(view, price=_price(view.node, settings)))
    return views


def _post(body: dict[str, Any], events: list[Event]) -> None:
    """Record Kubernetes Events on the job. Best effort: a lost event never fails a reconcile."""
    meta = body["metadata"]
    now = format_time(dt.datetime.now(dt.UTC))
    for e in events:
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"],
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"]},
            "type": e.type, "reason": e.reason, "message": e.message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "mentor-operator"},
            "reportingComponent": "mentor.dev/operator", "reportingInstance": socket.gethostname(),
        }
        try:
            _core().create_namespaced_event(meta["namespace"], event)
        except ApiException as error:
            log.warning("could not record event %s on %s: %s", e.reason, meta["name"],
                        error.reason)


def _apply(body: dict[str, Any], job: JobRef, spec: TrainingJobSpec, plan: Plan,
           settings: Settings) -> None:
    core = _core()
    if plan.create_ranks:
        _create("ConfigMap", build_config_map(job, build_trainer_config(spec)), job)
        _create("Service", build_service(job, settings), job)
        if settings.report_url:
            _create("Secret", build_report_secret(job, token_for(settings.report_key, job.uid)),
                    job)
        for rank in plan.create_ranks:
            _create("Pod", build_pod(job, spec, rank, plan.attempt, settings), job)
    for name in plan.delete_pods:
        try:
            core.delete_namespaced_pod(name, job.namespace, grace_period_seconds=30)
        except ApiException as e:
            if e.status != 404:
                raise
    # progress and checkpoint belong to the trainers' reports (mentor.server): leaving them out
    # of this merge patch means a reconcile never overwrites a newer report with an older one.
    new_status = plan.status.model_dump(by_alias=True, exclude_none=True, mode="json",
                                        exclude={"progress", "checkpoint"})
    old_status = {k: v for k, v in (body.get("status") or {}).items()
                  if k not in ("progress", "checkpoint")}
    if new_status != old_status:
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP, VERSION, job.namespace, TRAINING_JOB.plural, job.name, {"status": new_status})
    _post(body, plan.events)
    if plan.delete_job:
        client.CustomObjectsApi().delete_namespaced_custom_object(
            GROUP, VERSION, job.namespace, TRAINING_JOB.plural, job.name,
            body=client.V1DeleteOptions(propagation_policy="Background"))


def _reconcile(namespace: str, name: str, settings: Settings) -> None:
    # The job and its pods are read fresh, under the job's lock, on every trigger (the resync's
    # list is not reused): a stale view of a failed pod would charge its restart twice.
    body = _get_job(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    job = job_ref(body)
    spec = TrainingJobSpec.model_validate(body["spec"])
    status = JobStatus.model_validate(body.get("status") or {})
    pods = _list_pods(job, settings)
    taken = _taken(job) if not pods else ()
    plan = decide(spec, status, pods, dt.datetime.now(dt.UTC),
                  body["metadata"].get("generation"), taken)
    _apply(body, job, spec, plan, settings)
    if not plan.delete_job:
        METRICS.observe_status(namespace, job.kind, name, plan.status,
                               spec.run_policy.max_gpu_hours)


def reconcile(namespace: str, name: str, settings: Settings) -> None:
    """Bring one TrainingJob one step closer to its spec.

    API errors become one-line temporary errors that Kopf retries; a namespace being deleted
    is not an error at all (its jobs are going away with it).
    """
    kind = TRAINING_JOB.kind
    with _locks[f"{namespace}/{name}"], METRICS.reconcile_seconds.labels(kind).time():
        try:
            _reconcile(namespace, name, settings)
        except ApiException as e:
            if e.status == 404 or (e.status == 403 and "NamespaceTerminating" in str(e.body)):
                return
            METRICS.reconcile_errors.labels(kind).inc()
            raise kopf.TemporaryError(f"API error {e.status} {e.reason}: "
                                      f"{str(e.body)[:300]}", delay=5) from None


def resync_all(settings: Settings) -> None:
    """Reconcile every unfinished job, or finished one with a TTL, once (the periodic resync)."""
    api: Any = client.CustomObjectsApi()
    if settings.namespaces:
        jobs = [j for ns in settings.namespaces for j in api.list_namespaced_custom_object(
            GROUP, VERSION, ns, TRAINING_JOB.plural)["items"]]
    else:
        jobs = api.list_cluster_custom_object(GROUP, VERSION, TRAINING_JOB.plural)["items"]
    for body in jobs:
        phase = (body.get("status") or {}).get("phase")
        ttl = (body["spec"].get("runPolicy") or {}).get("ttlSecondsAfterFinished")
        if phase in ("Succeeded", "Failed") and ttl is None:
            continue
        meta = body["metadata"]
        try:
            reconcile(meta["namespace"], meta["name"], settings)
        except kopf.TemporaryError as e:
            log.warning("resync of %s/%s failed: %s", meta["namespace"], meta["name"], e)
