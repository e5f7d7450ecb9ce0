"""GPU-hour accounting and the job's active clock, pure: the ledger in the status is the record.

A pod's GPU time is charged from its trainer's start to its end, and moved into the ledger once
per pod UID when the pod has ended; the pod's finalizer goes only after that status is written.
The active clock (for activeDeadlineSeconds) runs only while the job runs, never while it is
suspended or waits for its first run.
"""

from __future__ import annotations

import datetime as dt

from mentor.api.status import JobStatus
from mentor.decide.podview import PodView
from mentor.decide.times import parse_time


def settle(status: JobStatus, pods: list[PodView], now: dt.datetime) -> list[str]:
    """Move the GPU time of every pod that has ended into the ledger, once per pod UID; return
    the pods whose finalizer may go once this status is written (an operator stopped between
    the two finds the UID settled and only releases the pod)."""
    ledger = status.ledger
    settled = set(ledger.settled_pods)
    release = []
    for pod in pods:
        if pod.uid not in settled and pod.ended(now):
            ledger.retired_gpu_seconds += pod.gpu_seconds(now)
            ledger.retired_cost += pod.cost(now)
            ledger.settled_pods.append(pod.uid)
            settled.add(pod.uid)
        if pod.uid in settled and pod.tracked:
            release.append(pod.name)
    present = {p.uid for p in pods}  # a released pod that is gone needs no memory
    ledger.settled_pods = [uid for uid in ledger.settled_pods if uid in present]
    return release


def unsettled(status: JobStatus, pods: list[PodView]) -> list[PodView]:
    settled = set(status.ledger.settled_pods)
    return [p for p in pods if p.uid not in settled]


def gpu_hours(status: JobStatus, pods: list[PodView], now: dt.datetime) -> float:
    """The settled pods' GPU-hours plus those the others have held until now."""
    held = sum(p.gpu_seconds(now) for p in unsettled(status, pods))
    return (status.ledger.retired_gpu_seconds + held) / 3600


def held_gpus(status: JobStatus, pods: list[PodView], now: dt.datetime) -> float:
    """The GPUs the job's pods hold now: how fast its GPU-hours grow."""
    return sum(p.gpus for p in unsettled(status, pods)
               if p.started_at is not None and not p.ended(now))


def account(status: JobStatus, pods: list[PodView], now: dt.datetime) -> None:
    """GPU-hours and cost into the status."""
    status.gpu_hours = round(gpu_hours(status, pods, now), 6)
    priced = any(p.price is not None for p in pods)
    if priced or status.ledger.retired_cost:
        cost = status.ledger.retired_cost + sum(p.cost(now) for p in unsettled(status, pods))
        status.cost_estimate = round(cost, 4)


def active_seconds(status: JobStatus, now: dt.datetime) -> float:
    """How long the job has run, suspended time and the wait for its first run left out."""
    since = parse_time(status.ledger.active_since)
    running = (now - since).total_seconds() if since else 0.0
    return status.ledger.active_seconds + max(running, 0.0)


def stop_clock(status: JobStatus, now: dt.datetime) -> None:
    """Suspended or finished: the active time so far is banked, and the clock stops."""
    status.ledger.active_seconds = round(active_seconds(status, now), 3)
    status.ledger.active_since = None


def start_clock(status: JobStatus, stamp: str) -> None:
    """All pods run: the deadline's clock runs from here (if it was not already)."""
    if status.ledger.active_since is None:
        status.ledger.active_since = stamp
