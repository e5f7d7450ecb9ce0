"""What the operator needs to know of a pod, read once from its manifest.

Keeping this separate from the decisions means the decisions never parse Kubernetes JSON, and the
parsing is tested against real pod objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mentor.api.labels import (
    ATTEMPT,
    DEFAULT_GPU_WEIGHTS,
    GPU_FINALIZER,
    NODE_RANK,
    TRAINER_CONTAINER,
)
from mentor.decide.times import parse_time

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})


def tidy(message: str) -> str:
    """The scheduler's message without the sentence it repeats: for a missing claim it says
    `persistentvolumeclaim "x" not found. not found`."""
    sentences = message.split(". ")
    kept = [s for i, s in enumerate(sentences)
            if i == 0 or not sentences[i - 1].rstrip(".").endswith(s.rstrip("."))]
    return ". ".join(kept)


def gpus_of(resources: dict[str, Any], weights: Mapping[str, float]) -> float:
    """The GPUs a container holds: each counted resource (limits, else requests) times its
    weight. Extended resources are whole counts; anything else counts as none."""
    held = 0.0
    for name, weight in weights.items():
        quantity = (resources.get("limits") or {}).get(name) or \
            (resources.get("requests") or {}).get(name)
        try:
            held += weight * int(str(quantity or 0))
        except ValueError:
            continue
    return held


def _started(status: dict[str, Any], running: dict[str, Any],
             terminated: dict[str, Any]) -> dt.datetime | None:
    """When the trainer began to hold its GPUs. A container the kubelet could no longer find
    (`ContainerStatusUnknown`: an eviction, a node shut down) ends with no startedAt at all;
    the pod's own startTime stands in, or 10 GPU-hours would be settled as nothing."""
    started = running.get("startedAt") or terminated.get("startedAt")
    if started is None and terminated:
        started = status.get("startTime")
    return parse_time(started)


def _finished(status: dict[str, Any], terminated: dict[str, Any],
              conditions: dict[str, Any]) -> dt.datetime | None:
    """When it let them go: the container's finish. A pod that ended with no finishedAt (the
    container lost, as above; or a pod of a deleted node, failed by the pod GC) stopped when it
    was last said to: its Ready=False or DisruptionTarget transition."""
    if terminated.get("finishedAt"):
        return parse_time(terminated["finishedAt"])
    if not terminated and status.get("phase") not in ("Succeeded", "Failed"):
        return None
    said = [parse_time(c.get("lastTransitionTime")) for c in (
        conditions.get("Ready", {}), conditions.get("DisruptionTarget", {}))
        if c.get("status") == ("False" if c.get("type") == "Ready" else "True")]
    return max((t for t in said if t), default=None)


@dataclass(frozen=True)
class PodView:
    name: str
    rank: int
    attempt: int
    phase: str
    deleting: bool
    gpus: float  # in GPUs: a MIG slice is a fraction of one
    exit_code: int | None = None
    terminated_reason: str | None = None
    # The container's termination message: the launcher's root cause ("exit code 2 from rank
    # 0: BadConfig: ..."), or the log's tail where it could not write one.
    termination_message: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    unschedulable: str | None = None
    disruption: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    node: str | None = None
    created_at: dt.datetime | None = None
    price: float | None = None  # per GPU-hour, from the node's GPU product (None: unpriced)
    uid: str = ""
    gates: tuple[str, ...] = ()  # scheduling gates: Kueue's admission, until it admits the gang
    tracked: bool = False  # holds Mentor's GPU-accounting finalizer
    # When a deleted pod must be gone: the API server sets deletionTimestamp to the deletion's
    # time plus its grace period, after which the kubelet kills the container.
    deletion_deadline: dt.datetime | None = None

    @classmethod
    def from_pod(cls, pod: dict[str, Any],
                 gpu_weights: Mapping[str, float] = DEFAULT_GPU_WEIGHTS) -> PodView:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        container: dict[str, Any] = next((c for c in spec.get("containers", [])
                          if c.get("name") == TRAINER_CONTAINER), {})
        state: dict[str, Any] = {}
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") == TRAINER_CONTAINER:
                state = cs.get("state") or {}
        running, terminated = state.get("running") or {}, state.get("terminated") or {}
        waiting = state.get("waiting") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        scheduled = conditions.get("PodScheduled", {})
        # Kubernetes' DisruptionTarget (eviction, preemption, pod GC), or Kueue's
        # TerminationTarget (its workload evicted or preempted): no fault of the job.
        disrupted: dict[str, Any] = next((c for c in (conditions.get("DisruptionTarget", {}),
                                      conditions.get("TerminationTarget", {}))
                          if c.get("status") == "True"), {})
        return cls(
            name=meta["name"],
            rank=int(labels.get(NODE_RANK, "0")),
            attempt=int(annotations.get(ATTEMPT, "1")),
            phase=status.get("phase", "Pending"),
            deleting=bool(meta.get("deletionTimestamp")),
            gpus=gpus_of(container.get("resources") or {}, gpu_weights),
            exit_code=terminated.get("exitCode"),
            terminated_reason=terminated.get("reason"),
            termination_message=(terminated.get("message") or "").strip() or None,
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message"),
            unschedulable=tidy(scheduled.get("message") or "unschedulable")
            if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
            else None,
            disruption=(disrupted.get("reason") or "Disrupted")
            if disrupted.get("status") == "True" else None,
            started_at=_started(status, running, terminated),
            finished_at=_finished(status, terminated, conditions),
            node=spec.get("nodeName"),
            gates=tuple(g.get("name", "") for g in spec.get("schedulingGates") or []),
            created_at=parse_time(meta.get("creationTimestamp")),
            uid=meta.get("uid", ""),
            tracked=GPU_FINALIZER in (meta.get("finalizers") or []),
            deletion_deadline=parse_time(meta.get("deletionTimestamp")),
        )

    def cost(self, now: dt.datetime) -> float:
        return self.gpu_seconds(now) / 3600 * (self.price or 0.0)

    def end(self, now: dt.datetime) -> dt.datetime:
        """When the container stopped holding its GPUs: its finish, or for a deleted pod whose
        kubelet never said (a lost node) its deletion deadline, or now while it runs."""
        if self.finished_at:
            return self.finished_at
        if self.deletion_deadline:
            return min(now, self.deletion_deadline)
        return now

    def gpu_seconds(self, now: dt.datetime) -> float:
        """GPUs requested × the time the container ran: from start to end, or to now."""
        if not self.gpus or self.started_at is None:
            return 0.0
        return self.gpus * max(0.0, (self.end(now) - self.started_at).total_seconds())

    def ended(self, now: dt.datetime) -> bool:
        """Its GPU time can grow no more: finished, never started and deleted, or deleted and
        past its deadline. Then it is settled into the job's ledger, once."""
        if self.phase in ("Succeeded", "Failed") or self.finished_at:
            return True
        if self.deletion_deadline is None:
            return False
        return self.started_at is None or now >= self.deletion_deadline
