"""A test-only kubelet: runs the pods bound to one node as local processes.

It registers a Node (which kwok leaves alone: it lacks kwok's annotation), keeps it Ready, and for
every pod scheduled onto it starts the pod's command with its env, mapping each volume to a local
directory: configMaps and Secrets are written out, emptyDirs are fresh directories, and a PVC is
`<pvc_root>/<claim>`. The container's termination-message file is a fresh file too. Those paths
in the env, the arguments and the configMap files are rewritten to the local directories, and
the rendezvous address to loopback (every "node" is this machine); nothing else is changed.

The phase, start and finish times, the exit code and the termination message go back through the
API, as a kubelet reports them: the message is the file's content, or with
`FallbackToLogsOnError` and a failure, the log's last 80 lines (at most 2 KiB). Deleting a pod
sends SIGTERM to its process group, then SIGKILL after the grace period; the pod's final status
(Failed, with the exit code) is written before it is removed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client
from kubernetes.client.exceptions import ApiException

NODE_LABEL = "mentor.dev/test-node"
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048  # what a kubelet keeps of a failed container's log


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    started: str
    root: Path
    log: Path
    termination_log: Path
    fallback_to_logs: bool
    killed_at: float | None = None

    def termination_message(self, code: int) -> str:
        text = self.termination_log.read_text(errors="replace").strip()
        if not text and code != 0 and self.fallback_to_logs:
            lines = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            text = "\n".join(lines)[-LOG_TAIL_BYTES:]
        return text


@dataclass
class NodeAgent:
    name: str
    pvc_root: Path
    api: client.ApiClient
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    pods: dict[str, Running] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="node-agent-")))

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)

    # -- lifecycle

    def start(self) -> None:
        self.core.create_node({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {
                NODE_LABEL: "local", "kubernetes.io/hostname": self.name,
                "kubernetes.io/os": "linux"}},
        })
        self._heartbeat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for running in self.pods.values():
            if running.proc.poll() is None:
                os.killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    def _heartbeat(self) -> None:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
        self.core.patch_node_status(self.name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test node agent", "lastHeartbeatTime": now(),
                            "lastTransitionTime": now()}],
        }})

    def _loop(self) -> None:
        beat = time.monotonic()
        while not self._stop.is_set():
            try:
                self._sync()
                if time.monotonic() - beat > 10:
                    self._heartbeat()
                    beat = time.monotonic()
            except ApiException as e:
                print(f"node agent: API error {e.status}: {e.reason}", file=sys.stderr)
            self._stop.wait(0.3)

    # -- pods

    def _sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}")
        seen = set()
        for pod in pods.items:
            key = f"{pod.metadata.namespace}/{pod.metadata.name}/{pod.metadata.uid}"
            seen.add(key)
            running = self.pods.get(key)
            if pod.metadata.deletion_timestamp:
                self._terminate(pod, key, running)
            elif running is None and key not in self.done:
                if pod.status.phase in ("Succeeded", "Failed"):  # ended before this agent
                    self.done.add(key)
                else:
                    self._start(pod, key)
            elif running is not None and running.proc.poll() is not None and key not in self.done:
                self._finish(pod, key, running)
        for key in list(self.pods):
            if key not in seen:
                running = self.pods.pop(key)
                if running.proc.poll() is None:
                    os.killpg(running.proc.pid, signal.SIGKILL)

    def _start(self, pod: Any, key: str) -> None:
        ns = pod.metadata.namespace
        root = Path(tempfile.mkdtemp(prefix=f"{pod.metadata.name}-", dir=self.logs))
        container = pod.spec.containers[0]
        mounts = self._volumes(pod, root)
        paths = {m.mount_path: str(mounts[m.name]) for m in container.volume_mounts or []
                 if m.name in mounts}
        termination_log = root / "termination-log"
        termination_log.touch()  # as the kubelet does: the container may write it
        paths[container.termination_message_path or "/dev/termination-log"] = \
            str(termination_log)

        # One pass, longest mount first, so a replaced path is never replaced again.
        pattern = re.compile("|".join(re.escape(m) for m in sorted(paths, key=len, reverse=True))
                             + r"(?=/|$|\"|\s)") if paths else None

        def local(text: str) -> str:
            return pattern.sub(lambda m: paths[m.group(0)], text) if pattern else text

        for m in container.volume_mounts or []:  # configMap files name mounted paths too
            source = pod_volume(pod, m.name)
            if source is not None and source.config_map is not None:
                for f in Path(paths[m.mount_path]).iterdir():
                    f.write_text(local(f.read_text()))
        env = {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
               "HOME": str(root), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
               "PYTHONUNBUFFERED": "1"}
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = local(var.value)
            elif var.value_from and var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, ns)
                env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        env["PET_MASTER_ADDR"] = "127.0.0.1"
        command = [local(c) for c in (container.command or []) + (container.args or [])]
        log_path = self.logs / f"{pod.metadata.name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(command, env=env, cwd=root, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        started = now()
        self.pods[key] = Running(
            proc, started, root, log_path, termination_log,
            fallback_to_logs=container.termination_message_policy == "FallbackToLogsOnError")
        self.core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
            "phase": "Running", "startTime": started, "podIP": "127.0.0.1",
            "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
            "containerStatuses": [{"name": container.name, "image": container.image,
                                   "imageID": "", "ready": True, "restartCount": 0,
                                   "started": True,
                                   "state": {"running": {"startedAt": started}}}],
        }})

    def _volumes(self, pod: Any, root: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            path = root / "volumes" / volume.name
            if volume.persistent_volume_claim is not None:
                path = self.pvc_root / volume.persistent_volume_claim.claim_name
                path.mkdir(parents=True, exist_ok=True)
            elif volume.config_map is not None:
                path.mkdir(parents=True)
                cm = self.core.read_namespaced_config_map(volume.config_map.name,
                                                          pod.metadata.namespace)
                for name, text in (cm.data or {}).items():
                    (path / name).write_text(text)
            else:  # emptyDir and anything else: a fresh directory
                path.mkdir(parents=True)
            out[volume.name] = path
        return out

    def _finish(self, pod: Any, key: str, running: Running) -> None:
        code = running.proc.returncode
        code = 128 - code if code < 0 else code
        container = pod.spec.containers[0]
        finished = now()
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "startedAt": running.started, "finishedAt": finished}
        message = running.termination_message(code)
        if message:
            terminated["message"] = message
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {
            "status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False",
                                "lastTransitionTime": finished}],
                "containerStatuses": [{
                    "name": container.name, "image": container.image, "imageID": "",
                    "ready": False, "restartCount": 0, "started": False,
                    "state": {"terminated": terminated}}],
            }})
        self.done.add(key)

    def _terminate(self, pod: Any, key: str, running: Running | None) -> None:
        grace = pod.metadata.deletion_grace_period_seconds or 0
        if running is not None and running.proc.poll() is None:
            if running.killed_at is None:
                os.killpg(running.proc.pid, signal.SIGTERM)
                running.killed_at = time.monotonic()
            elif time.monotonic() - running.killed_at > grace:
                os.killpg(running.proc.pid, signal.SIGKILL)
            return
        if running is not None and key not in self.done:  # the final status, then the delete
            self._finish(pod, key, running)
        try:  # the process is gone: the kubelet's final delete
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                            grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise
        self.pods.pop(key, None)
        if running is not None:
            shutil.rmtree(running.root, ignore_errors=True)

    def workers(self, pod: str) -> list[psutil.Process]:
        """The trainer processes (torchrun's workers) of a running pod, lowest rank first."""
        running = next(r for k, r in self.pods.items() if k.split("/")[1] == pod
                       and r.proc.poll() is None)
        children = psutil.Process(running.proc.pid).children(recursive=True)
        return [c for c in children if "mentor_trainer" in " ".join(c.cmdline())]

    def log(self, pod: str) -> str:
        path = self.logs / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def pod_volume(pod: Any, name: str) -> Any:
    return next((v for v in pod.spec.volumes or [] if v.name == name), None)
