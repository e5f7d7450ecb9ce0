"""A real MLflow tracking server for the tracking tests: `mlflow server` from PyPI (sqlite, its
artifact proxy) on loopback, in a virtual environment of its own that
tests/cluster/tools/build-mlflow.sh installs. The tests read what Mentor logged through MLflow's
REST API, as any client would, and may stop and start the server again on the same store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from controlplane import free_port

TOOLS = Path(__file__).resolve().parents[1] / "cluster" / "tools"


def install() -> Path:
    """The server's environment (installed once per version, in ~/.cache/mentor)."""
    done = subprocess.run([str(TOOLS / "build-mlflow.sh")], capture_output=True, text=True,
                          check=True)
    return Path(done.stdout.strip().splitlines()[-1])


class MlflowServer:
    def __init__(self, root: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.env_dir, self.root, self.host = install(), root, host
        self.port = port or free_port()
        self.uri = f"http://{host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.env_dir / "bin" / "python"), "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"),
             "--host", self.host, "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.process.returncode}: "
                                   f"{(self.root / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server not up in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def call(self, method: str, endpoint: str, body: dict[str, Any] | None = None,
             **query: Any) -> dict[str, Any]:
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url, data=json.dumps(body).encode() if body is not None else None, method=method,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
        return answer

    def run(self, run_id: str) -> dict[str, Any]:
        """A run as {info, metrics (latest), params, tags}."""
        run = self.call("GET", "runs/get", run_id=run_id)["run"]
        data = run.get("data", {})
        return {"info": run["info"],
                "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
                "params": {p["key"]: p["value"] for p in data.get("params", [])},
                "tags": {t["key"]: t["value"] for t in data.get("tags", [])}}

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every logged (step, value) of a metric, in step order."""
        found = self.call("GET", "metrics/get-history", run_id=run_id, metric_key=key,
                          max_results=25000).get("metrics", [])
        return sorted((m["step"], m["value"]) for m in found)

    def runs(self, experiment: str, where: str = "") -> list[dict[str, Any]]:
        found = self.call("GET", "experiments/get-by-name", experiment_name=experiment)
        ids = [found["experiment"]["experiment_id"]]
        runs = self.call("POST", "runs/search", {"experiment_ids": ids, "filter": where,
                                                 "max_results": 1000}).get("runs", [])
        return [self.run(r["info"]["run_id"]) for r in runs]

    def versions(self, name: str) -> list[dict[str, Any]]:
        found = self.call("GET", "model-versions/search", filter=f"name='{name}'")
        return list(found.get("model_versions", []))

    def alias(self, name: str, alias: str) -> dict[str, Any]:
        return self.call("GET", "registered-models/alias", name=name,
                         alias=alias)["model_version"]

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        found = self.call("GET", "artifacts/list", run_id=run_id, path=path)
        return [f["path"] for f in found.get("files", [])]
