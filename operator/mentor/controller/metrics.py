"""The operator's Prometheus metrics: one registry, base units, labels bounded by namespace, kind
and job, and a job's series removed when the job is deleted.

GPU time and cost are exported two ways: per-job gauges read from the job's status
(authoritative, survive operator restarts because the status does, and go with the job) and
counters by namespace and kind that grow by what this operator observes, for chargeback with
increase() over any range: they survive the jobs' deletion.
Times are exported as Unix timestamps (`*_timestamp_seconds`) taken from the status, so an alert's
clock (pending since, last progress, finished at) survives an operator restart too.
"""

from __future__ import annotations

import contextlib
import threading
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mentor.api.status import ConditionType, JobStatus, Phase
from mentor.api.tuning import TuningStatus
from mentor.decide.progress import Report
from mentor.decide.times import parse_time

# "job" is Prometheus' own target label, so the job's name is "job_name".
JOB_LABELS = ("namespace", "kind", "job_name")
TUNING_LABELS = ("namespace", "tuning_job")


def _version() -> str:
    try:
        return metadata.version("mentor")
    except metadata.PackageNotFoundError:
        return "unknown"


def _stamp(value: str | None) -> float | None:
    parsed = parse_time(value)
    return parsed.timestamp() if parsed else None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("mentor_build_info", "Always 1; the operator's version.",
                                ["version"], registry=r)
        self.build_info.labels(_version()).set(1)
        self.jobs = Gauge("mentor_jobs", "Jobs by namespace, kind and phase.",
                          ["namespace", "kind", "phase"], registry=r)
        self.gpu_seconds = Counter(
            "mentor_gpu_seconds_total",
            "GPU-seconds held (GPUs requested × time running), observed by this operator; "
            "for chargeback, it outlives the jobs.", ["namespace", "kind"], registry=r)
        self.cost = Counter(
            "mentor_cost_total", "The estimated cost of that GPU time (the price table's "
            "currency), observed by this operator; it outlives the jobs.",
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
        self.job_metric = Gauge("mentor_job_metric",
                                "The last value of a metric a custom trainer reports.",
                                [*JOB_LABELS, "metric"], registry=r)
        self.job_mfu = Gauge("mentor_job_mfu_ratio",
                             "Model FLOPs utilisation (0-1) the trainer reports (GPU jobs).",
                             JOB_LABELS, registry=r)
        self.job_restarts = Counter("mentor_job_restarts_total",
                                    "Gang restarts charged to the job.", JOB_LABELS, registry=r)
        self.job_cost = Gauge("mentor_job_cost", "The job's estimated cost (status.costEstimate).",
                              JOB_LABELS, registry=r)
        self.job_pending_since = Gauge(
            "mentor_job_pending_since_timestamp_seconds",
            "When the job last started waiting for its pods (whatever the reason since).",
            JOB_LABELS, registry=r)
        self.job_running_since = Gauge(
            "mentor_job_running_since_timestamp_seconds",
            "When all of the job's pods last started running.", JOB_LABELS, registry=r)
        self.job_last_progress = Gauge(
            "mentor_job_last_progress_timestamp_seconds",
            "When the trainer last reported a step.", JOB_LABELS, registry=r)
        self.job_finished = Gauge(
            "mentor_job_finished_timestamp_seconds", "When the job succeeded or failed.",
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
        self.reconcile_errors.labels("TrainingJob")  # at 0 from the start: rate() has data
        self.tuning_trials = Gauge("mentor_tuning_trials",
                                   "A TuningJob's trials by state (Running, Succeeded, Pruned, "
                                   "Failed).", [*TUNING_LABELS, "state"], registry=r)
        self.tuning_best = Gauge("mentor_tuning_best_objective",
                                 "The best trial's objective (its final eval loss).",
                                 TUNING_LABELS, registry=r)
        self.tuning_gpu_seconds = Gauge("mentor_tuning_gpu_seconds",
                                        "GPU-seconds of all of a TuningJob's trials.",
                                        TUNING_LABELS, registry=r)
        self.tuning_max_gpu_seconds = Gauge("mentor_tuning_max_gpu_seconds",
                                            "The TuningJob's budget (spec.budget.maxGPUHours).",
                                            TUNING_LABELS, registry=r)
        self.reconcile_errors.labels("TuningJob")
        self.leader = Gauge("mentor_operator_leader",
                            "1 on the replica that holds the Lease and works.", registry=r)
        self._lock = threading.Lock()
        self._gpu_seen: dict[tuple[str, str, str], float] = {}
        self._cost_seen: dict[tuple[str, str, str], float] = {}
        self._restarts_seen: dict[tuple[str, str, str], int] = {}
        self._phases: dict[tuple[str, str, str], str] = {}
        self._counts: dict[tuple[str, str, str], int] = {}  # (namespace, kind, phase): jobs
        self._pending: dict[tuple[str, str, str], str] = {}
        # What observe_status last read of each job's status: a reconcile that changed none of
        # it (most of a job's reconciles in a burst) sets no series again.
        self._observed: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def observe_status(self, namespace: str, kind: str, job: str, status: JobStatus,
                       max_gpu_hours: float | None = None) -> None:
        key = (namespace, kind, job)
        seconds = status.gpu_hours * 3600
        read = (status.gpu_hours, status.cost_estimate, status.restarts, status.phase,
                status.completion_time, status.progress.last_update_time if status.progress
                else None, max_gpu_hours, *((c.type, c.status, c.reason, c.last_transition_time)
                                            for c in status.conditions))
        with self._lock:
            if self._observed.get(key) == read:
                return
            self._observed[key] = read
            # A job first seen after an operator restart sets a baseline and adds nothing, so
            # increase() never counts its earlier GPU time (or cost) twice.
            self._grow(self.gpu_seconds, self._gpu_seen, key, seconds)
            self._grow(self.cost, self._cost_seen, key, status.cost_estimate or 0.0)
            counted = self._restarts_seen.get(key, 0)
            if status.restarts > counted:
                self.job_restarts.labels(*key).inc(status.restarts - counted)
                self._restarts_seen[key] = status.restarts
            self._set_phase(key, (status.phase or Phase.PENDING).value)
            old_reason = self._pending.pop(key, None)
            if old_reason:
                self.job_pending.remove(*key, old_reason)
            if status.phase in (Phase.PENDING, Phase.RESTARTING):
                running = next((c for c in status.conditions if c.type == "Running"), None)
                reason = running.reason if running else "PodsPending"
                self._pending[key] = reason
                self.job_pending.labels(*key, reason).set(1)
        self.job_gpu_seconds.labels(*key).set(seconds)
        self.job_restarts.labels(*key)  # present from the start, at 0
        if status.cost_estimate is not None:
            self.job_cost.labels(*key).set(status.cost_estimate)
        self.job_running.labels(*key).set(1 if status.phase == Phase.RUNNING else 0)
        self._timestamps(key, status)
        if status.phase == Phase.FAILED:
            failed = next((c for c in status.conditions if c.type == "Failed"), None)
            self.job_failed.labels(*key, failed.reason if failed else "Unknown").set(1)
        if max_gpu_hours:
            self.job_max_gpu_seconds.labels(*key).set(max_gpu_hours * 3600)

    def _grow(self, counter: Counter, seen: dict[tuple[str, str, str], float],
              key: tuple[str, str, str], value: float) -> None:
        previous = seen.get(key)
        if previous is not None and value > previous:
            counter.labels(key[0], key[1]).inc(value - previous)
        seen[key] = max(value, previous or 0.0)

    def _timestamps(self, key: tuple[str, str, str], status: JobStatus) -> None:
        """The alerts' clocks, from the status. The Running condition's lastTransitionTime
        moves only when it flips, so a new pending reason does not restart the pending clock."""
        running = next((c for c in status.conditions if c.type == ConditionType.RUNNING), None)
        since = _stamp(running.last_transition_time) if running else None
        clocks = (
            (self.job_pending_since, since if status.phase in (Phase.PENDING, Phase.RESTARTING)
             and running is not None and running.status == "False" else None),
            (self.job_running_since, since if status.phase == Phase.RUNNING else None),
            (self.job_last_progress,
             _stamp(status.progress.last_update_time) if status.progress else None),
            (self.job_finished, _stamp(status.completion_time)),
        )
        for gauge, value in clocks:
            if value is None:
                with contextlib.suppress(KeyError):
                    gauge.remove(*key)
            else:
                gauge.labels(*key).set(value)

    def observe_report(self, namespace: str, kind: str, job: str, report: Report) -> None:
        key = (namespace, kind, job)
        if report.loss is not None:
            self.job_loss.labels(*key).set(report.loss)
            self.job_step.labels(*key).set(report.step)
            self.job_tokens.labels(*key).set(report.tokens_per_second or 0.0)
            self.job_last_progress.labels(*key).set_to_current_time()
            if report.mfu is not None:
                self.job_mfu.labels(*key).set(report.mfu)
        if report.eval_loss is not None:
            self.job_eval_loss.labels(*key).set(report.eval_loss)
        for name, value in (report.metrics or {}).items():
            self.job_metric.labels(*key, name).set(value)

    def observe_tuning(self, namespace: str, name: str, status: TuningStatus,
                       max_gpu_hours: float | None) -> None:
        key = (namespace, name)
        with self._lock:
            self._set_phase((namespace, "TuningJob", name), (status.phase or Phase.PENDING).value)
        counts = status.trials
        for state, n in (("Running", counts.running), ("Succeeded", counts.succeeded),
                         ("Pruned", counts.pruned), ("Failed", counts.failed)):
            self.tuning_trials.labels(*key, state).set(n)
        if status.best_trial and status.best_trial.objective is not None:
            self.tuning_best.labels(*key).set(status.best_trial.objective)
        self.tuning_gpu_seconds.labels(*key).set(status.gpu_hours * 3600)
        if max_gpu_hours:
            self.tuning_max_gpu_seconds.labels(*key).set(max_gpu_hours * 3600)

    def forget_tuning(self, namespace: str, name: str) -> None:
        with self._lock:
            self._set_phase((namespace, "TuningJob", name), None)
        for gauge in (self.tuning_best, self.tuning_gpu_seconds, self.tuning_max_gpu_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for state in ("Running", "Succeeded", "Pruned", "Failed"):
            with contextlib.suppress(KeyError):
                self.tuning_trials.remove(namespace, name, state)

    def forget(self, namespace: str, kind: str, job: str) -> None:
        """Remove every series of a deleted job."""
        key = (namespace, kind, job)
        with self._lock:
            for seen in (self._gpu_seen, self._cost_seen, self._restarts_seen, self._observed):
                seen.pop(key, None)
            self._set_phase(key, None)
            reason = self._pending.pop(key, None)
            if reason:
                self.job_pending.remove(*key, reason)
        for gauge in (self.job_gpu_seconds, self.job_loss, self.job_eval_loss, self.job_tokens,
                      self.job_step, self.job_restarts, self.job_running,
                      self.job_max_gpu_seconds, self.job_cost, self.job_mfu,
                      self.job_pending_since,
                      self.job_running_since, self.job_last_progress, self.job_finished):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)
        for labelled in (self.job_failed, self.job_metric):
            for labels in list(labelled._metrics):
                if labels[:3] == key:
                    labelled.remove(*labels)

    def _set_phase(self, key: tuple[str, str, str], phase: str | None) -> None:
        """Move one job between the mentor_jobs counts (None: it is gone). Counted as it
        changes, never recounted: a recount of every job at every reconcile made a burst of N
        jobs cost N² steps."""
        old = self._phases.pop(key, None) if phase is None else self._phases.get(key)
        if old == phase:
            return
        namespace, kind, _ = key
        if old is not None:
            self._counts[(namespace, kind, old)] -= 1
            if self._counts[(namespace, kind, old)]:
                self.jobs.labels(namespace, kind, old).set(self._counts[(namespace, kind, old)])
            else:
                del self._counts[(namespace, kind, old)]
                self.jobs.remove(namespace, kind, old)
        if phase is not None:
            self._phases[key] = phase
            count = self._counts.get((namespace, kind, phase), 0) + 1
            self._counts[(namespace, kind, phase)] = count
            self.jobs.labels(namespace, kind, phase).set(count)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


METRICS = Metrics()
