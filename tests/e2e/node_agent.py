"""A test-only kubelet: runs the pods bound to one node as local processes.

It registers a Node (which kwok leaves alone: it lacks kwok's annotation), keeps it Ready, and for
every pod scheduled onto it starts the pod's command with its env, mapping each volume to a local
directory: configMaps, Secrets and downward API annotations are written out, emptyDirs are fresh
directories, and a PVC is `<pvc_root>/<claim>`. The container's termination-message file is a
fresh file too. Those paths in the env, the arguments and the config files are rewritten to the
local directories, and the rendezvous address to loopback (every "node" is this machine); nothing
else is changed.

The phase, start and finish times, the exit code and the termination message go back through the
API, as a kubelet reports them: the message is the file's content, or with
`FallbackToLogsOnError` and a failure, the log's last 80 lines (at most 2 KiB). Deleting a pod
sends SIGTERM to its process group, then SIGKILL after the grace period; the pod's final status
(Failed, with the exit code) is written before it is removed.

Like a kubelet it serves each container's log, timestamped line by line, on an HTTPS port that
the node's status advertises, so `kubectl logs` (and Mentor's SDK) read it through the API server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

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
    pumped: threading.Event = field(default_factory=threading.Event)
    killed_at: float | None = None

    def termination_message(self, code: int) -> str:
        text = self.termination_log.read_text(errors="replace").strip()
        if not text and code != 0 and self.fallback_to_logs:
            lines = untimed(self.log.read_text(errors="replace")).splitlines()[-LOG_TAIL_LINES:]
            text = "\n".join(lines)[-LOG_TAIL_BYTES:]
        return text


def untimed(log: str) -> str:
    """A timestamped log (`<RFC 3339> <line>` per line) as the process wrote it."""
    return "".join(line.split(" ", 1)[1] if " " in line else "\n"
                   for line in log.splitlines(keepends=True))


def pump(stream: Any, path: Path, done: threading.Event) -> None:
    """Copy a process's output into its log, each line stamped with when it came, as the
    kubelet's container runtime does."""
    with path.open("ab") as log:
        for line in iter(stream.readline, b""):
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            log.write(stamp + b" " + line)
            log.flush()
    done.set()


@dataclass
class NodeAgent:
    name: str
    pvc_root: Path
    api: client.ApiClient
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    pods: dict[str, Running] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="node-agent-")))
    # GPUs the node advertises, as a kwok GPU node does: pods that request them are charged for
    # them (the processes run on the CPU).
    gpus: int = 0

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self.log_server = LogServer(self)

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
        self.log_server.stop()
        self._stop.set()
        self._thread.join(timeout=30)
        for running in self.pods.values():
            if running.proc.poll() is None:
                os.killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    def _heartbeat(self) -> None:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110",
                    **({"nvidia.com/gpu": str(self.gpus), "amd.com/gpu": str(self.gpus)}
                       if self.gpus else {})}
        self.core.patch_node_status(self.name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port}},
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

        for m in container.volume_mounts or []:  # config files name mounted paths too
            source = pod_volume(pod, m.name)
            if source is not None and (source.config_map or source.downward_api) is not None:
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
                try:
                    secret = self.core.read_namespaced_secret(ref.name, ns)
                except ApiException as e:
                    if e.status == 404 and ref.optional:  # as the kubelet: left unset
                        continue
                    raise
                env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        env["PET_MASTER_ADDR"] = "127.0.0.1"
        command = [local(c) for c in (container.command or []) + (container.args or [])]
        log_path = self.logs / pod.metadata.name / f"{pod.metadata.uid}.log"
        log_path.parent.mkdir(exist_ok=True)
        proc = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        started = now()
        running = Running(
            proc, started, root, log_path, termination_log,
            fallback_to_logs=container.termination_message_policy == "FallbackToLogsOnError")
        threading.Thread(target=pump, args=(proc.stdout, log_path, running.pumped),
                         daemon=True).start()
        self.pods[key] = running
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
            elif volume.downward_api is not None:  # the pod's own annotations, as files
                path.mkdir(parents=True)
                for item in volume.downward_api.items or []:
                    annotation = re.fullmatch(r"metadata\.annotations\['(.+)'\]",
                                              item.field_ref.field_path)
                    assert annotation, f"this node agent reads annotations only: {item}"
                    (path / item.path).write_text(
                        (pod.metadata.annotations or {})[annotation.group(1)])
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

    def latest(self, namespace: str, pod: str) -> Running | None:
        """The newest container this agent ran for a pod of that name."""
        runs = [r for k, r in self.pods.items() if k.split("/")[:2] == [namespace, pod]]
        return max(runs, key=lambda r: r.started, default=None)

    def workers(self, pod: str, marker: str = "mentor_trainer") -> list[psutil.Process]:
        """The trainer processes (torchrun's workers: `marker` in their command line) of a
        running pod, lowest rank first."""
        running = next(r for k, r in self.pods.items() if k.split("/")[1] == pod
                       and r.proc.poll() is None)
        children = psutil.Process(running.proc.pid).children(recursive=True)
        return [c for c in children if marker in " ".join(c.cmdline())]

    def log(self, pod: str) -> str:
        """Everything every pod of this name printed here, oldest first (all its attempts)."""
        files = sorted((self.logs / pod).glob("*.log"), key=lambda f: f.stat().st_mtime)
        return "".join(untimed(f.read_text(errors="replace")) for f in files)


def pod_volume(pod: Any, name: str) -> Any:
    return next((v for v in pod.spec.volumes or [] if v.name == name), None)


class LogServer:
    """The kubelet's `/containerLogs/<namespace>/<pod>/<container>` over HTTPS (follow,
    timestamps, tailLines), which the API server proxies for `pods/log`. It presents a
    self-signed certificate: the API server here verifies no kubelet certificate."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(agent.logs / "tls"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self.server, self.port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self.agent

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                query = parse_qs(url.query)
                running = agent.latest(parts[1], parts[2]) if len(parts) == 4 and \
                    parts[0] == "containerLogs" else None
                if running is None:
                    self.send_error(404, "no such container on this node")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                stamped = query.get("timestamps") == ["true"]
                with running.log.open("rb") as log:
                    lines = log.readlines()
                    if "tailLines" in query:
                        lines = lines[-int(query["tailLines"][0]):]
                    self._write(lines, stamped)
                    while query.get("follow") == ["true"]:
                        ended = running.pumped.is_set()
                        more = log.readlines()
                        self._write(more, stamped)
                        if ended and not more:
                            break
                        time.sleep(0.2)

            def _write(self, lines: list[bytes], stamped: bool) -> None:
                for line in lines:
                    self.wfile.write(line if stamped else line.split(b" ", 1)[-1])
                self.wfile.flush()

        return Handler


def self_signed(directory: Path) -> tuple[str, str]:
    """A throwaway serving certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-agent")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / "tls.crt", directory / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)
