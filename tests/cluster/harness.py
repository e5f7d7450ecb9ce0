"""Helpers of the cluster tests: the operator as a subprocess, kubectl in one namespace, jobs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from controlplane import ControlPlane, free_port

# The chart's memory limit for the operator: beyond it, a cluster OOM-kills it.
CHART_MEMORY_LIMIT_MIB = 512
REPORT_KEY = "test-key"  # the operator's key for the jobs' progress tokens, in the tests
PRICE = 2.5  # per GPU-hour of the fake nodes' GPU product


class Operator:
    """`mentor operator` as a subprocess: exactly how it runs in a cluster, minus the image."""

    def __init__(self, cp: ControlPlane, log: Path, **env: str) -> None:
        self.cp, self.log_path, self.port = cp, log, free_port()
        # Each operator of a test run has its own Lease (one per port), unless a test makes
        # replicas share one; a short Lease lets a standby take over within seconds.
        self.env = {**cp.env(), "MENTOR_RESYNC_SECONDS": "1", "MENTOR_POD_NAMESPACE": "default",
                    "MENTOR_LEASE_NAME": f"mentor-{self.port}", "MENTOR_LEASE_SECONDS": "3",
                    **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = ""

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mentor.cli", "operator", "--standalone",
             f"--liveness=http://127.0.0.1:{self.port}/healthz"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def dump_threads(self) -> str:
        """Every thread's stack (the operator prints them on SIGUSR1): what it is waiting on."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
        return self.log_path.read_text(errors="replace")[-20000:]

    def rss_mib(self) -> float:
        """The operator process's resident memory now."""
        import psutil

        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def errors(self) -> list[str]:
        """Tracebacks in the operator's log: handlers must never crash."""
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "Traceback" in line]


class Kube:
    """Small helpers over kubectl for one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp, self.ns = cp, namespace

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl("-n", self.ns, *args, input=input, check=check)

    def apply(self, obj: dict[str, Any]) -> None:
        self("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self("get", kind, name, "-o", "json")))

    def pods(self, job: str) -> list[dict[str, Any]]:
        out = self("get", "pods", "-l", f"mentor.dev/job-name={job}", "-o", "json")
        return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["name"])

    def pods_of_job(self, job: str) -> list[str]:
        """The pods a batch/v1 Job created."""
        out = self("get", "pods", "-l", f"job-name={job}", "-o",
                   "jsonpath={.items[*].metadata.name}")
        return out.split()

    def wait(self, target: str, condition: str, timeout: int = 60) -> None:
        self.cp.wait(condition, target, timeout=timeout, namespace=self.ns)

    def condition(self, job: str, type_: str) -> dict[str, Any]:
        status = self.get("trainingjob", job).get("status", {})
        return next((c for c in status.get("conditions", []) if c["type"] == type_), {})

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self("get", "events", "-o", "json", "--field-selector",
                   f"involvedObject.name={name}")
        return list(json.loads(out)["items"])

    def end_pods(self, job: str, result: str, exit_code: int | None = None,
                 reason: str | None = None, count: int | None = None,
                 delay: str = "0s") -> None:
        """Make kwok end the job's current pods, as the kubelet would report it."""
        pods = [p for p in self.pods(job) if not p["metadata"].get("deletionTimestamp")]
        for pod in pods[:count]:
            notes = [f"sim.mentor.dev/result={result}", f"sim.mentor.dev/delay={delay}"]
            if exit_code is not None:
                notes.append(f"sim.mentor.dev/exit-code={exit_code}")
            if reason:
                notes.append(f"sim.mentor.dev/reason={reason}")
            self("annotate", "pod", pod["metadata"]["name"], *notes, "--overwrite")


def wait_for(what: str, check: Any, timeout: float = 120.0, every: float = 0.3) -> Any:
    """Poll `check` until it returns something true, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def report(op: Operator, kube: Kube, job: str, records: list[dict[str, Any]]) -> None:
    """Send progress exactly as rank 0 does, with the trainer's own reporter."""
    from mentor.controller.tokens import token_for
    from mentor_trainer.reporting import OperatorReporter

    uid = kube.get("trainingjob", job)["metadata"]["uid"]
    reporter = OperatorReporter(f"{op.http}/v1/progress/{kube.ns}/{job}",
                                token_for(REPORT_KEY.encode(), kube.ns), {"uid": uid})
    for record in records:
        reporter.send(record)
    deadline = time.monotonic() + 10
    while not reporter.queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)


def training_job(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"size": "tiny"},
        "data": {"source": "/data/shakespeare.txt"},
        # 64 divides over any layout the tests use (nodes × GPUs × a micro batch of 1).
        "optimization": {"steps": 100, "globalBatchSize": 64, "microBatchSize": 1},
        "output": {"uri": "/models/" + name},
        "parallelism": {"nodes": 2, "gpusPerNode": 4},
    }
    body.update(spec)
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": body}


def tuning_job(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "/models/base"},
        "method": {"type": "lora", "lora": {"rank": 8}},
        "data": {"source": "/data/code"},
        "optimization": {"steps": 100, "globalBatchSize": 8, "microBatchSize": 1},
        "parallelism": {"nodes": 1, "gpusPerNode": 1},
        "output": {"uri": f"/models/{name}"},
    }
    body.update(spec)
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob",
            "metadata": {"name": name}, "spec": body}


class StatusWrites:
    """Every version of a namespace's Mentor jobs, from a watch of the test's own: the ground
    truth for "a job at rest is not written" and "a suspended job's clock stands still"."""

    def __init__(self, cp: ControlPlane, namespace: str, plural: str = "trainingjobs") -> None:
        from kubernetes import client, config, watch

        self.api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(cp.kubeconfig)))
        self.ns, self.plural = namespace, plural
        self.seen: list[tuple[float, str, dict[str, Any]]] = []  # (when, name, status)
        self._last: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                for event in self._watch.stream(
                        self.api.list_namespaced_custom_object, "mentor.dev", "v1alpha1",
                        self.ns, self.plural, timeout_seconds=30):
                    obj = event["object"]
                    name, status = obj["metadata"]["name"], dict(obj.get("status") or {})
                    if self._last.get(name) != status:  # a status write, not a label's
                        self._last[name] = status
                        self.seen.append((time.monotonic(), name, status))
            except Exception:  # a dropped watch: watch again
                self._watch = watch.Watch()
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()

    def since(self, name: str, start: float) -> list[dict[str, Any]]:
        """The job's statuses as written after `start`, in order."""
        return [s for when, n, s in self.seen if n == name and when >= start]
