"""TuningJob reconciles: read the job, its base model and its trials from memory, decide, act.

The trials are TrainingJobs, so the operator's TrainingJob watch already holds them (and their
progress); a trial's change queues its TuningJob. The plan's creates, stops and finalizer
releases are written here, and the status last, over the version decided from.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import API_VERSION, GROUP, TRAINING_JOB, TUNING_JOB, VERSION
from mentor.api.labels import TRIAL_FINALIZER
from mentor.api.labels import TUNING_JOB as TUNING_LABEL
from mentor.api.status import Phase
from mentor.api.tuning import TuningJobSpec, TuningStatus
from mentor.builders.names import JobRef
from mentor.builders.trials import trial_job
from mentor.controller import kube
from mentor.controller.cache import Jobs, Key
from mentor.controller.events import post_events
from mentor.controller.guard import guarded
from mentor.controller.metrics import METRICS
from mentor.controller.settings import Settings
from mentor.decide.trialview import Trial, trial_of
from mentor.decide.tuning import Plan, decide, resolve_base

log = logging.getLogger(__name__)
KIND, PLURAL = TUNING_JOB.kind, TUNING_JOB.plural


@dataclass
class TuningController:
    settings: Settings
    tunings: Jobs  # the TuningJobs
    jobs: Jobs  # the TrainingJobs: trials and base models

    def trials_of(self, key: Key) -> list[dict[str, Any]]:
        namespace, name = key
        return [body for body in self.jobs.all() if body["metadata"]["namespace"] == namespace
                and (body["metadata"].get("labels") or {}).get(TUNING_LABEL) == name]


def parent_of(body: dict[str, Any]) -> Key | None:
    """The TuningJob a TrainingJob is a trial of, if any: its changes queue that TuningJob."""
    name = (body["metadata"].get("labels") or {}).get(TUNING_LABEL)
    return (body["metadata"]["namespace"], name) if name else None


def reconcile(ctl: TuningController, key: Key) -> float | None:
    """Bring one TuningJob one step closer to its spec; return when to look again."""
    return guarded(TUNING_JOB, ctl.tunings, key, lambda: _reconcile(ctl, key))


def _reconcile(ctl: TuningController, key: Key) -> float | None:
    body = ctl.tunings.get(key)
    children = ctl.trials_of(key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        # The TuningJob is going: its trials go with it (garbage collection), released here.
        _release([c for c in children if c["metadata"].get("deletionTimestamp")])
        return None
    meta = body["metadata"]
    owner = JobRef(kind=KIND, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    mine = [c for c in children if owner.owns(c["metadata"])]
    spec = TuningJobSpec.model_validate(body["spec"])
    status = TuningStatus.model_validate(body.get("status") or {})
    live: list[Trial] = []
    deleting: list[Trial] = []
    for child in mine:
        (deleting if child["metadata"].get("deletionTimestamp") else live).append(trial_of(child))
    ref = spec.base_model.training_job_ref if spec.base_model else None
    base = resolve_base(spec, ctl.jobs.get((owner.namespace, ref.name)) if ref else None,
                        status.lineage)
    now = dt.datetime.now(dt.UTC)
    def decided(taken: tuple[str, ...] = ()) -> Plan:
        return decide(owner.name, spec, status, live, deleting, base, now,
                      meta.get("generation"), search_id=meta["uid"][:8], taken=taken)

    plan = decided()
    taken = tuple(new.name for new in plan.create if _held_by_another(ctl, owner, new.name))
    if taken:
        plan = decided(taken)
    _apply(ctl, body, owner, plan)
    METRICS.observe_tuning(owner.namespace, owner.name, plan.status, spec.budget.max_gpu_hours)
    if plan.status.phase in (Phase.SUCCEEDED, Phase.FAILED) and not any(
            t.state == "Running" for t in live):
        return None
    return ctl.settings.resync_seconds


def _apply(ctl: TuningController, body: dict[str, Any], owner: JobRef, plan: Plan) -> None:
    custom = kube.custom()
    for new in plan.create:
        manifest = trial_job(owner, new.number, new.spec, new.params)
        try:
            created = custom.create_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, TRAINING_JOB.plural, manifest)
            ctl.jobs.observe(kube.to_json(created))  # counted at once, not when the watch says
        except ApiException as e:
            if e.status != 409:
                raise
            held = custom.get_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, TRAINING_JOB.plural, new.name)
            ctl.jobs.observe(held)
            if not owner.owns(held["metadata"]):
                # Taken since the cache saw it: this plan counted a trial that is not ours, so
                # its status is not written; the next decision finds the name taken.
                return
    for name, (reason, message) in plan.stop.items():
        patch = {"spec": {"runPolicy": {"stop": {"reason": reason, "message": message}}}}
        try:
            ctl.jobs.observe(kube.to_json(custom.patch_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, TRAINING_JOB.plural, name, patch)))
        except ApiException as e:
            if e.status != 404:
                raise
    new_status = plan.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    old_status = body.get("status") or {}
    if new_status != old_status:
        ctl.tunings.observe(kube.patch_status(PLURAL, body, old_status, new_status))
    # Only now, with their GPU-hours in the written status, may deleted trials go.
    by_name = {c["metadata"]["name"]: c for c in ctl.trials_of((owner.namespace, owner.name))}
    _release([by_name[n] for n in plan.release if n in by_name])
    post_events(body, plan.events)


def _held_by_another(ctl: TuningController, owner: JobRef, name: str) -> bool:
    held = ctl.jobs.get((owner.namespace, name))
    return held is not None and not owner.owns(held["metadata"])


def _release(trials: list[dict[str, Any]]) -> None:
    """Remove the accounting finalizer of trials whose GPU-hours are settled."""
    for trial in trials:
        kube.remove_finalizer(trial["metadata"], TRIAL_FINALIZER, API_VERSION, TRAINING_JOB.kind)


def resync(ctl: TuningController, add: Any) -> None:
    """The safety net: every TuningJob (page by page), queued."""
    for body in kube.list_all(GROUP, VERSION, PLURAL, ctl.settings.namespaces):
        ctl.tunings.observe(body)
        add((body["metadata"]["namespace"], body["metadata"]["name"]))
