"""The operator's Prometheus metrics: one registry, base units, labels bounded by namespace, kind
and job, and a job's series removed when the job is deleted.

GPU time is exported two ways: a per-job gauge read from the job's status (authoritative, survives
operator restarts because the status does) and a counter by namespace and kind that grows by the
GPU-seconds observed while this operator runs, for rate() and increase().
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mentor.api.status import JobStatus, Phase

# "job" is Prometheus' own target label, so the job's name is "job_name".
JOB_LABELS = ("namespace", "kind", "job_name")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("mentor_jobs", "Jobs by kind and phase.", ["kind", "phase"], registry=r)
        self.gpu_seconds = Counter(
            "mentor_gpu_seconds_total",
            "GPU-seconds held (GPUs requested × time running), observed by this operator.",
            ["namespace", "kind"], registry=r)
        self.job_gpu_seconds = Gauge("mentor_job_gpu_seconds",
                                     "GPU-seconds held by a job over all its attempts.",
                                     JOB_LABELS, registry=r)
        self.job_loss = Gauge("mentor_job_loss", "The last training loss.", JOB_LABELS,
                              registry=r)
        self.job_eval_loss = Gauge("mentor_job_eval_loss", "The last validation loss.",
                                   JOB_LABELS, registry=r)
        self.job_tokens = Gauge("mentor_job_tokens_per_second", "Training throughput.",
                                JOB_LABELS, registry=r)
        self.job_step = Gauge("mentor_job_step", "The last completed step.", JOB_LABELS,
                              registry=r)
        self.job_restarts = Gauge("mentor_job_restarts", "Gang restarts charged to the job.",
                                  JOB_LABELS, registry=r)
        self.job_pending = Gauge(
            "mentor_job_pending", "1 while the job waits for its pods to run, by reason.",
            [*JOB_LABELS, "reason"], registry=r)
        self.job_running = Gauge("mentor_job_running", "1 while all of the job's pods run.",
                                 JOB_LABELS, registry=r)
        self.job_failed = Gauge("mentor_job_failed", "1 once the job failed, by reason.",
                                [*JOB_LABELS, "reason"], registry=r)
        self.job_max_gpu_seconds = Gauge("mentor_job_max_gpu_seconds",
                                         "The job's GPU budget (spec.runPolicy.maxGPUHours).",
                                         JOB_LABELS, registry=r)
        self.reconcile_seconds = Histogram("mentor_reconcile_duration_seconds",
                                           "Time to reconcile one job.", ["kind"], registry=r)
        self.reconcile_errors = Counter("mentor_reconcile_errors_total",
                                        "Reconciles that failed and will be retried.", ["kind"],
                                        registry=r)
        self.leader = Gauge("mentor_operator_leader",
                            "1 on the replica that holds the Lease and works.", registry=r)
        self._lock = threading.Lock()
        self._gpu_seen: dict[tuple[str, str, str], float] = {}
        self._phases: dict[tuple[str, str, str], str] = {}
        self._pending: dict[tuple[str, str, str], str] = {}

    def observe_status(self, namespace: str, kind: str, job: str, status: JobStatus,
                       max_gpu_hours: float | None = None) -> None:
        key = (namespace, kind, job)
        seconds = status.gpu_hours * 3600
        with self._lock:
            previous = self._gpu_seen.get(key)
            if previous is not None and seconds > previous:
                # A job first seen after an operator restart sets a baseline and adds nothing,
                # so increase() never counts its earlier GPU time twice.
                self.gpu_seconds.labels(namespace, kind).inc(seconds - previous)
            self._gpu_seen[key] = max(seconds, previous or 0.0)
            self._phases[key] = (status.phase or Phase.PENDING).value
            self._set_jobs_by_phase()
            old_reason = self._pending.pop(key, None)
            if old_reason:
                self.job_pending.remove(*key, old_reason)
            if status.phase in (Phase.PENDING, Phase.RESTARTING):
                running = next((c for c in status.conditions if c.type == "Running"), None)
                reason = running.reason if running else "PodsPending"
                self._pending[key] = reason
                self.job_pending.labels(*key, reason).set(1)
        self.job_gpu_seconds.labels(*key).set(seconds)
        self.job_restarts.labels(*key).set(status.restarts)
        self.job_running.labels(*key).set(1 if status.phase == Phase.RUNNING else 0)
        if status.phase == Phase.FAILED:
            failed = next((c for c in status.conditions if c.type == "Failed"), None)
            self.job_failed.labels(*key, failed.reason if failed else "Unknown").set(1)
        if max_gpu_hours:
            self.job_max_gpu_seconds.labels(*key).set(max_gpu_hours * 3600)

    def observe_report(self, namespace: str, kind: str, job: str, report: dict[str, Any]) -> None:
        key = (namespace, kind, job)
        if "loss" in report:
            self.job_loss.labels(*key).set(float(report["loss"]))
            self.job_step.labels(*key).set(int(report["step"]))
            self.job_tokens.labels(*key).set(float(report["tokens_per_second"]))
        if "eval_loss" in report:
            self.job_eval_loss.labels(*key).set(float(report["eval_loss"]))

    def forget(self, namespace: str, kind: str, job: str) -> None:
        """Remove every series of a deleted job."""
        key = (namespace, kind, job)
        with self._lock:
            self._gpu_seen.pop(key, None)
            self._phases.pop(key, None)
            self._set_jobs_by_phase()
            reason = self._pending.pop(key, None)
            if reason:
                self.job_pending.remove(*key, reason)
        for gauge in (self.job_gpu_seconds, self.job_loss, self.job_eval_loss, self.job_tokens,
                      self.job_step, self.job_restarts, self.job_running,
                      self.job_max_gpu_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)
        for labels in list(self.job_failed._metrics):
            if labels[:3] == key:
                self.job_failed.remove(*labels)

    def _set_jobs_by_phase(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (_, kind, _), phase in self._phases.items():
            counts[(kind, phase)] = counts.get((kind, phase), 0) + 1
        self.jobs.clear()
        for (kind, phase), n in counts.items():
            self.jobs.labels(kind, phase).set(n)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


METRICS = Metrics()
