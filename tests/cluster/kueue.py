"""Kueue beside the test control plane, out of cluster, as PEERS.md describes.

Built from its Go module (tests/cluster/tools/build-kueue.sh). Its webhooks are the module's own
manifests with each Service reference replaced by a loopback URL (there is no kube-proxy), and
scoped to namespaces labelled `kueue.mentor.dev/managed=true`, so the rest of the test suite
never meets them. Only the pod integration is on, with `manageJobsWithoutQueueName`, so that a
test can show what that setting does to a job that names no queue.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from controlplane import ControlPlane, free_port

HERE = Path(__file__).resolve().parent
MANAGED = {"kueue.mentor.dev/managed": "true"}


def build() -> Path:
    out = subprocess.run([str(HERE / "tools" / "build-kueue.sh")], check=True,
                         capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


class Kueue:
    def __init__(self, cp: ControlPlane, work: Path) -> None:
        self.cp, self.work = cp, work
        self.dir = build()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "kueue.log"

    def start(self) -> None:
        self.cp.kubectl("apply", "--server-side", "-f", str(self.dir / "crds"))
        self.cp.wait_established("clusterqueues.kueue.x-k8s.io", "workloads.kueue.x-k8s.io",
                                 "localqueues.kueue.x-k8s.io", "resourceflavors.kueue.x-k8s.io")
        certs = self.work / "certs"
        certs.mkdir(exist_ok=True)
        crt, key = self.cp.pki.pair("apiserver")  # serves 127.0.0.1, signed by the test CA
        shutil.copy(crt, certs / "tls.crt")
        shutil.copy(key, certs / "tls.key")
        # Without internal cert management, v0.17 reads its metrics certificate from a fixed
        # path (cmd/kueue/main.go), even with the metrics server off.
        metrics = Path("/etc/kueue/metrics/certs")
        if not (metrics / "tls.crt").exists():
            metrics.mkdir(parents=True, exist_ok=True)
            shutil.copy(crt, metrics / "tls.crt")
            shutil.copy(key, metrics / "tls.key")
        webhook, health = free_port(), free_port()
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": True,
            "managedJobsNamespaceSelector": {"matchLabels": MANAGED},
            "integrations": {"frameworks": ["pod"]},
        }
        (self.work / "kueue.yaml").write_text(yaml.safe_dump(config))
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(self.dir / "bin" / "kueue"), f"--config={self.work / 'kueue.yaml'}",
             "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=2"],
            env=self.cp.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait(f"http://127.0.0.1:{health}/readyz")
        self.cp.kubectl("apply", "--server-side", "-f", "-",
                        input=json.dumps(self._webhooks(webhook)))

    def _wait(self, url: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(self.tail())

    def _webhooks(self, port: int) -> dict[str, Any]:
        """The module's webhooks for pods and Kueue's own objects, pointed at loopback."""
        ca = base64.b64encode(self.cp.pki.ca_crt.read_bytes()).decode()
        items = []
        for doc in yaml.safe_load_all((self.dir / "webhooks.yaml").read_text()):
            if not doc:
                continue
            kept = []
            for hook in doc["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                if "-v1-pod" not in path and "kueue-x-k8s-io" not in path:
                    continue
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
                if "-v1-pod" in path:
                    hook["namespaceSelector"] = {"matchLabels": MANAGED}
                kept.append(hook)
            doc["metadata"] = {"name": f"kueue-{doc['metadata']['name']}"}
            doc["webhooks"] = kept
            items.append(doc)
        return {"apiVersion": "v1", "kind": "List", "items": items}

    def stop(self) -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.cp.kubectl("delete", kind, "kueue-mutating-webhook-configuration",
                            "kueue-validating-webhook-configuration", "--ignore-not-found",
                            check=False)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
