"""A real Prometheus (Debian's package) for the tests: loopback only, 1 s scrapes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from controlplane import free_port


class Prometheus:
    def __init__(self, work: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.work, self.port = work, free_port()
        binary = shutil.which("prometheus")
        assert binary, "install Debian's prometheus package (.ci/run does)"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            # honor_labels as the chart's ServiceMonitor: the operator's `namespace` label is
            # the job's namespace, not the operator's.
            "scrape_configs": [{"job_name": "mentor-operator", "metrics_path": "/metrics",
                                "honor_labels": True,
                                "static_configs": [{"targets": targets}]}],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, check: Any = bool, timeout: float = 60) -> list[dict[str, Any]]:
        """Poll a query until `check(result)` holds; returns that result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if check(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql}: {result}")
