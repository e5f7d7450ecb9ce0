"""What rank 0 tells the world: a log line, a metrics log, Prometheus, and the operator.

The operator's endpoint is best effort: reports go through a queue to a background thread that
retries them for a while, and training never waits for them but at its very end. Training must
not depend on the control plane being reachable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mentor_trainer import tracking

log = logging.getLogger("mentor_trainer")


class OperatorReporter:
    """POSTs progress to MENTOR_REPORT_URL with the namespace's MENTOR_REPORT_TOKEN, naming the
    job's UID (MENTOR_JOB_UID) so that a report never lands on a newer job of the same name.

    A report that does not get through (the network, a standby's 503 during a failover, a 5xx)
    is tried again with backoff; one the operator refuses (a 4xx) is not. Training never waits
    for it, except for the last reports at the end (`flush`)."""

    RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, url: str, token: str, job: dict[str, str]) -> None:
        self.url, self.token, self.job = url, token, job
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=256)
        # From the operator's answers: the ledger's GPU-hours (when a report asks for them).
        self.gpu_hours: float | None = None
        self.stop_reason: str | None = None  # why the operator stops the job (Pruned, ...)
        self.thread = threading.Thread(target=self._run, name="mentor-report", daemon=True)
        self.thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(queue.Full):  # the newest report will carry the news
            self.queue.put_nowait({**self.job, **payload})

    def flush(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until every report sent so far is delivered or given up."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            payload = self.queue.get()
            try:
                for delay in (*self.RETRY_SECONDS, None):
                    if self._post(payload):
                        break
                    if delay is None:
                        log.debug("progress report dropped after %d tries",
                                  len(self.RETRY_SECONDS) + 1)
                    else:
                        time.sleep(delay)
            finally:
                self.queue.task_done()

    def _post(self, payload: dict[str, Any]) -> bool:
        """True when the report is done with: accepted, or refused for good (a 4xx but 429)."""
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                answer = response.read(4096)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                said = json.loads(answer)
                hours = said.get("gpuHours")
                self.gpu_hours = float(hours) if hours is not None else self.gpu_hours
                self.stop_reason = said.get("stop") or self.stop_reason
            return True
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500 and e.code != 429:
                log.warning("progress report refused (%d): %s", e.code,
                            e.read(500).decode(errors="replace"))
                return True
            return False
        except OSError:
            return False


def operator_reporter() -> OperatorReporter | None:
    """The reporter to the operator that the pod's variables describe (None outside a pod)."""
    url, token = os.environ.get("MENTOR_REPORT_URL"), os.environ.get("MENTOR_REPORT_TOKEN")
    if not (url and token):
        return None
    job = {"name": os.environ.get("MENTOR_JOB_NAME", ""),
           "namespace": os.environ.get("MENTOR_JOB_NAMESPACE", ""),
           "kind": os.environ.get("MENTOR_JOB_KIND", "")}
    endpoint = f"{url.rstrip('/')}/v1/progress/{job['namespace']}/{job['name']}"
    uid = os.environ.get("MENTOR_JOB_UID")
    return OperatorReporter(endpoint, token, {**job, **({"uid": uid} if uid else {})})


class Metrics:
    """The trainer's own /metrics, for direct scraping (a PodMonitor)."""

    def __init__(self, port: int, job: dict[str, str]) -> None:
        from prometheus_client import Gauge, start_http_server

        labels = ["namespace", "kind", "job_name"]
        values = [job.get("namespace", ""), job.get("kind", ""), job.get("name", "")]

        def gauge(name: str, doc: str) -> Any:
            return Gauge(f"mentor_trainer_{name}", doc, labels).labels(*values)

        self.step = gauge("step", "The last completed optimizer step.")
        self.loss = gauge("loss", "The training loss at the last step.")
        self.eval_loss = gauge("eval_loss", "The last validation loss.")
        self.tokens_per_second = gauge("tokens_per_second", "Training throughput, all ranks.")
        self.learning_rate = gauge("learning_rate", "The learning rate at the last step.")
        self.mfu = gauge("mfu_ratio", "Model FLOPs utilisation estimate (0-1), GPU only.")
        start_http_server(port)

    def update(self, record: dict[str, Any]) -> None:
        for key in ("step", "loss", "eval_loss", "tokens_per_second", "learning_rate", "mfu"):
            if record.get(key) is not None:
                getattr(self, key if key != "mfu" else "mfu").set(record[key])


class Reporter:
    """Fans one record out to the log, metrics.jsonl, Prometheus and the operator (rank 0)."""

    def __init__(self, output_dir: Path, enabled: bool,
                 config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.log_path = output_dir / "metrics.jsonl"
        job = {"name": os.environ.get("MENTOR_JOB_NAME", ""),
               "namespace": os.environ.get("MENTOR_JOB_NAMESPACE", ""),
               "kind": os.environ.get("MENTOR_JOB_KIND", "")}
        self.operator: OperatorReporter | None = None
        self.metrics: Metrics | None = None
        self.tracker: Any = None
        self.step = 0
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self.operator = operator_reporter()
        port = int(os.environ.get("MENTOR_METRICS_PORT", "0"))
        if port:
            try:
                self.metrics = Metrics(port, job)
            except OSError as e:  # metrics are a view of training, never a reason to stop it
                log.warning("no /metrics: cannot listen on port %d (%s)", port, e.strerror)
        track = tracking.settings(config or {})
        if track:
            try:
                self.tracker = tracking.Tracker(output_dir, config or {}, track, self._tracking)
            except OSError as e:  # tracking never stops training
                log.warning("tracking: off for this attempt (%s)", e)

    def _tracking(self, state: dict[str, Any]) -> None:
        """The tracker's state (recording, or the server unreachable) for the job's status."""
        if self.operator:
            self.operator.send({"step": self.step, "tracking": state})

    def record(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), **record}
        self.step = int(record.get("step") or self.step)
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.metrics:
            self.metrics.update(record)
        if self.tracker:
            self.tracker.log(record, self.operator.gpu_hours if self.operator else None)
        if self.operator:
            # An evaluation asks for the ledger's GPU-hours, which the tracker logs.
            self.operator.send({**record, "ledger": True} if self.tracker and "eval_loss" in record
                               else record)
        if "learning_rate" in record:  # the built-in trainer's step
            log.info("step %d/%d loss %.4f lr %.2e grad %.3f tok/s %.0f%s", record["step"],
                     record["total_steps"], record["loss"], record["learning_rate"],
                     record.get("grad_norm") or 0.0, record["tokens_per_second"],
                     f" mfu {record['mfu']:.1%}" if record.get("mfu") else "")
        elif "eval_loss" in record and "loss" not in record:
            log.info("step %d eval loss %.4f", record["step"], record["eval_loss"])
        else:  # a custom trainer's report
            said = {k: v for k, v in record.items() if k not in ("time", "metrics")}
            log.info("report %s", json.dumps({**said, **record.get("metrics", {})}))

    def close(self, timeout: float = 10.0) -> None:
        """The last reports reach the operator before the process ends, if it can be done in
        `timeout`: the final eval loss above all."""
        if self.tracker:
            self.tracker.close(timeout)
        if self.operator and not self.operator.flush(timeout):
            log.warning("the operator did not take the last progress reports in %.0f s", timeout)
