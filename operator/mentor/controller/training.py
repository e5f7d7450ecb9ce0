"""TrainingJob reconciles: read the job and its pods from memory, decide, carry out the plan.

A reconcile runs on a work-queue worker (mentor.controller.workqueue), one per job at a time,
whatever triggered it: the job changed, one of its pods changed, or a time it asked for came. It
reads the job and its pods from the operator's memory (mentor.controller.cache), calls the pure
decision (mentor.decide.training), writes what the plan says through the one API client
(mentor.controller.kube), and returns when it wants to run again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mentor.api.kinds import GROUP, TRAINING_JOB, VERSION
from mentor.api.labels import GPU_FINALIZER
from mentor.api.status import JobStatus, Phase
from mentor.api.training import TrainingJobSpec
from mentor.builders.names import JobRef
from mentor.builders.pods import build_pods, build_service
from mentor.controller import kube
from mentor.controller.budget import WriteBudget
from mentor.controller.cache import Expectations, Jobs, Key, Pods, version_of
from mentor.controller.events import post_events
from mentor.controller.guard import guarded
from mentor.controller.metrics import METRICS
from mentor.controller.namespaces import NamespaceObjects
from mentor.controller.settings import Settings
from mentor.controller.workqueue import Background, WorkQueue
from mentor.decide.ledger import active_seconds, gpu_hours, held_gpus
from mentor.decide.podview import PodView
from mentor.decide.times import parse_time
from mentor.decide.training import TERMINAL, Plan, Refusal, decide

log = logging.getLogger(__name__)
KIND, PLURAL = TRAINING_JOB.kind, TRAINING_JOB.plural


ACCOUNTING = ("gpuHours", "costEstimate")  # status fields that change with time alone
CREATE_RETRY_SECONDS = 15.0  # after a create refused for now (a quota, 429, 5xx)


@dataclass
class Controller:
    """What every reconcile shares: the settings and the operator's in-memory state."""

    settings: Settings
    jobs: Jobs
    pods: Pods
    expectations: Expectations
    namespaces: NamespaceObjects
    # Shared with the progress flusher: the writes that time alone causes (mentor.controller.
    # budget).
    writes: WriteBudget
    # When each job's GPU-hours were last written: alone, they are written at most once a
    # refresh period (with any other change, at once).
    accounted: dict[Key, float] = field(default_factory=dict)
    # The jobs whose GPU-hours grow with time: the refresh period is shared among them.
    holding: set[Key] = field(default_factory=set)
    # The jobs whose refresh found the budget spent: they try again at the next token, not a
    # period later (which let the same job lose every round).
    denied: set[Key] = field(default_factory=set)
    # The resourceVersion each job's last reconcile decided from, or wrote: a watch event of
    # that version or an older one (the echo of its own status write, a watch's listing again)
    # has nothing new to decide (2 of a job's 7 reconciles in a burst). A version written by
    # anyone else, the operator's TuningJob reconciles included, is newer.
    decided: dict[Key, int] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        """A deleted job leaves nothing behind."""
        self.jobs.forget(key)
        self.expectations.forget(key)
        self.accounted.pop(key, None)
        self.holding.discard(key)
        self.denied.discard(key)
        self.decided.pop(key, None)

    def news(self, key: Key, body: dict[str, Any]) -> bool:
        """Whether this version of a job is newer than what its reconciles decided on."""
        return version_of(body) > self.decided.get(key, -1)

    def refresh_period(self) -> float:
        return self.writes.period(len(self.holding), self.settings.resync_seconds)


def job_ref(body: dict[str, Any]) -> JobRef:
    meta = body["metadata"]
    return JobRef(kind=KIND, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def reconcile(ctl: Controller, key: Key) -> float | None:
    """Bring one TrainingJob one step closer to its spec; return the seconds until it should be
    looked at again (None: only when something changes).

    API errors are handled as for every kind (mentor.controller.guard).
    """
    return guarded(TRAINING_JOB, ctl.jobs, key, lambda: _reconcile(ctl, key))


def _reconcile(ctl: Controller, key: Key) -> float | None:
    if not ctl.pods.synced.is_set():  # an empty view would look like a job with no pods
        return 0.5
    body = ctl.jobs.get(key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        # The job is going and its record with it: its pods are collected, and released.
        ctl.expectations.forget(key)
        _release([p for p in ctl.pods.of(key) if p["metadata"].get("deletionTimestamp")])
        return None
    ctl.decided[key] = version_of(body)
    job = job_ref(body)
    pods: list[dict[str, Any]] = []
    foreign: list[dict[str, Any]] = []
    for pod in ctl.pods.of(key):
        (pods if job.owns(pod["metadata"]) else foreign).append(pod)
    if not ctl.expectations.met(key, pods):
        return 1.0  # the watch has not shown the last creates or deletes yet; it will call back
    earlier = [p for p in foreign if job.predecessor_owns(p["metadata"])]
    if earlier and not pods:
        # Pods of an earlier job of this name (deleted, and created again): never adopted;
        # the new job waits until the garbage collector has taken them. Any other pod that
        # merely carries the label (no owner, another owner) is ignored: nothing would ever
        # take it, and waiting on it stalled the job for ever, saying nothing. If it holds a
        # child's name, the create's 409 says ChildNameTaken.
        _release([p for p in earlier if p["metadata"].get("deletionTimestamp")])
        return 1.0
    spec = TrainingJobSpec.model_validate(body["spec"])
    status = JobStatus.model_validate(body.get("status") or {})
    views = [PodView.from_pod(p, ctl.settings.gpu_resources) for p in pods]
    if ctl.settings.gpu_prices:
        views = [dataclasses.replace(v, price=_price(v.node, ctl.settings)) for v in views]
    now = dt.datetime.now(dt.UTC)
    generation = body["metadata"].get("generation")
    plan = decide(spec, status, views, now, generation)
    try:
        if plan.create_ranks:
            names = {job.pod(rank) for rank in plan.create_ranks}
            taken = tuple(f"pod/{p['metadata']['name']}" for p in foreign
                          if p["metadata"]["name"] in names)
            if not taken:
                ctl.namespaces.ensure(job.namespace)
                taken = _create_service(job, ctl.settings)
            if taken:  # a name held by another owner: never adopted, said in the status
                plan = decide(spec, status, views, now, generation, taken)
        _apply(ctl, body, job, spec, plan)
    except (ApiException, ValidationError) as e:
        refused = refusal(e) if plan.create_ranks else None
        if refused is None:
            raise
        plan = decide(spec, status, views, now, generation, refused=refused)
        _apply(ctl, body, job, spec, plan)
        if not refused.permanent:
            return CREATE_RETRY_SECONDS
    if not plan.delete_job:
        METRICS.observe_status(job.namespace, KIND, job.name, plan.status,
                               spec.run_policy.max_gpu_hours)
    if plan.status.phase in TERMINAL or plan.status.phase == Phase.SUSPENDED:
        ctl.holding.discard(key)
        ctl.denied.discard(key)  # nothing to refresh: no retry at the next token
    else:
        ctl.holding.add(key)
    again = next_due(spec, plan.status, now, ctl.refresh_period(),
                     held_gpus(plan.status, views, now), gpu_hours(plan.status, views, now))
    if key in ctl.denied:  # its refresh found the budget spent: again at the next token
        retry = Background(1.0 / ctl.settings.status_writes_per_second)
        again = retry if again is None or retry < again else again
    return again


def refusal(e: ApiException | ValidationError) -> Refusal | None:
    """What an API error on a create means for the job, if it is a refusal of the object: 422
    (invalid) and admission's 403 (Pod Security, a webhook) for good; a quota's 403, 429 and 5xx
    for now. Other errors are the operator's own (and retried as such). The kubernetes client
    checks a body before sending it: what it refuses (a template's volume without a name, an
    unknown affinity field) is refused for good too, in its words."""
    if isinstance(e, ValidationError):
        first = e.errors()[:3]
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:])}: {err['msg']}"
                          for err in first)
        return Refusal(f"the pod built from this spec is invalid: {where}", permanent=True)
    message = str(kube.error_body(e).get("message") or e.reason)
    if e.status == 422:
        return Refusal(message, permanent=True)
    if e.status == 403:
        return Refusal(message, permanent="exceeded quota" not in message)
    if e.status == 429 or (e.status or 0) >= 500:
        return Refusal(message, permanent=False)
    return None


def next_due(spec: TrainingJobSpec, status: JobStatus, now: dt.datetime, period: float,
             held: float = 0.0, used: float = 0.0) -> float | None:
    """When time alone changes what the job should be: its TTL, its deadline, the moment its
    `held` GPUs use up its maxGPUHours, or (while it holds pods) its GPU-hours and cost,
    refreshed every `period` (Controller.refresh_period), as upkeep (`Background`)."""
    policy = spec.run_policy
    if status.phase in TERMINAL:
        finished = parse_time(status.completion_time)
        ttl = policy.ttl_seconds_after_finished
        if finished is None or ttl is None:
            return None
        return max((finished - now).total_seconds() + ttl, 0.0)
    if status.phase == Phase.SUSPENDED:
        return None
    due = []
    if policy.active_deadline_seconds and status.ledger.active_since:
        due.append(policy.active_deadline_seconds - active_seconds(status, now))
    if policy.max_gpu_hours and held:
        due.append((policy.max_gpu_hours - used) * 3600 / held)
    if due and min(due) < period:
        return max(min(due), 0.0)
    return Background(period)  # only the GPU-hours' refresh: after whatever else is ready


def _create(manifest: dict[str, Any], job: JobRef) -> bool | None:
    """Create a child: True if created, None if it existed and is this job's (a retried
    reconcile, an earlier attempt), False if another owner holds the name (never adopted)."""
    try:
        kube.create(job.namespace, manifest, answer=False)  # the watch shows it
        return True
    except ApiException as e:
        if e.status != 409:
            raise
    path = kube.collection(manifest["apiVersion"], manifest["kind"], job.namespace)
    existing = kube.request("GET", f"{path}/{manifest['metadata']['name']}")
    return None if job.owns(existing["metadata"]) else False


def _create_service(job: JobRef, settings: Settings) -> tuple[str, ...]:
    """The headless Service of a new attempt (the only child but its pods): its name, if
    another owner holds it. The config travels in each pod's annotation; the report token and
    the NetworkPolicy are the namespace's (mentor.controller.namespaces)."""
    manifest = build_service(job, settings)
    if _create(manifest, job) is False:
        return (f"service/{manifest['metadata']['name']}",)
    return ()


_products: dict[str, str | None] = {}


def _price(node: str | None, settings: Settings) -> float | None:
    """The price per GPU-hour of a node's GPU product (nodes do not change product: cached)."""
    if not settings.gpu_prices or node is None:
        return None
    if node not in _products:
        try:
            labels = kube.core().read_node(node).metadata.labels or {}
        except ApiException:
            return None
        _products[node] = labels.get("nvidia.com/gpu.product")
    product = _products[node]
    return settings.gpu_prices.get(product) if product else None


def _apply(ctl: Controller, body: dict[str, Any], job: JobRef, spec: TrainingJobSpec,
           plan: Plan) -> None:
    key = (job.namespace, job.name)
    ctl.expectations.expect(key, [job.pod(rank) for rank in plan.create_ranks],
                            plan.delete_pods)
    try:
        for pod in build_pods(job, spec, plan.create_ranks, plan.attempt, ctl.settings):
            if _create(pod, job) is False:  # taken since the cache saw: the next reconcile says so
                ctl.expectations.forget(key)
        for name in plan.delete_pods:
            uid = plan.delete_uids.get(name)
            try:
                kube.core().delete_namespaced_pod(
                    name, job.namespace, grace_period_seconds=30,
                    body=V1DeleteOptions(preconditions=V1Preconditions(uid=uid)) if uid else None)
            except ApiException as e:
                if e.status not in (404, 409):  # gone, or the name is a newer pod's now
                    raise
    except (ApiException, ValidationError):
        ctl.expectations.forget(key)
        raise
    # progress and checkpoint belong to the trainers' reports (mentor.controller.server): leaving
    # them out of this merge patch means a reconcile never overwrites a newer report with an
    # older one.
    new_status = plan.status.model_dump(by_alias=True, exclude_none=True, mode="json",
                                        exclude={"progress", "checkpoint"})
    old_status = {k: v for k, v in (body.get("status") or {}).items()
                  if k not in ("progress", "checkpoint")}
    if new_status != old_status and _worth_writing(ctl, key, new_status, old_status):
        written = kube.patch_status(PLURAL, body, old_status, new_status)
        ctl.jobs.observe(written)  # the next reconcile starts from what was just written
        ctl.decided[key] = version_of(written)  # and its watch event is not decided again
        ctl.accounted[key] = time.monotonic()
        ctl.denied.discard(key)
    # Only now, with their time in the written status, may settled pods go.
    by_name = {p["metadata"]["name"]: p for p in ctl.pods.of(key)}
    _release([by_name[name] for name in plan.release if name in by_name])
    post_events(body, plan.events)
    if plan.delete_job:
        kube.custom().delete_namespaced_custom_object(
            GROUP, VERSION, job.namespace, PLURAL, job.name,
            body=V1DeleteOptions(propagation_policy="Background"))


def _release(pods: list[dict[str, Any]]) -> None:
    """Remove Mentor's accounting finalizer from pods whose time is settled (or whose job is
    gone)."""
    for pod in pods:
        kube.remove_finalizer(pod["metadata"], GPU_FINALIZER, "v1", "Pod")


def _worth_writing(ctl: Controller, key: Key, new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Any change but the GPU-hours' ticking is written at once; that alone, once per period."""
    def rest(status: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in status.items() if k not in ACCOUNTING}

    if rest(new) != rest(old):
        return True
    if time.monotonic() - ctl.accounted.get(key, 0.0) < ctl.refresh_period():
        return False
    if ctl.writes.take() == 1:
        ctl.denied.discard(key)
        return True
    ctl.denied.add(key)
    return False


def resync(ctl: Controller, queue: WorkQueue) -> None:
    """The slow safety net: list every job (page by page), in case an event was ever missed. A
    job whose listed version is news was missed, and is queued as any event; any other is
    queued as upkeep only if nothing is planned for it already (`WorkQueue.upkeep`): at 5,000
    jobs, 5,000 reconciles with nothing to decide, queued at once ahead of new jobs, made a new
    job wait half a minute for its pods. Everything time-driven is queued for its moment
    instead (`next_due`)."""
    ctl.namespaces.forget()  # a namespace's Secret or policy deleted since is made again
    for body in kube.list_all(GROUP, VERSION, PLURAL, ctl.settings.namespaces):
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        ctl.jobs.observe(body)
        if ctl.news(key, body):
            queue.add(key)
        else:
            queue.upkeep(key)
