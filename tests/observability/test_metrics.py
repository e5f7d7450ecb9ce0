"""GPU-hours, loss and progress through a real Prometheus scraping the operator.

Ground truth for GPU-hours comes from the pods themselves: GPUs requested × (finishedAt, or the
deletion time, minus startedAt), as kwok reports them through the API server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane
from harness import PRICE, Kube, Operator, report, training_job, tuning_job
from prometheus import Prometheus

from mentor.decide.times import format_time

pytestmark = pytest.mark.cluster

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "mentor" / "files"
RUNBOOK = "https://github.com/mentor-dev/mentor/blob/main/README.md"
# The alerts' thresholds as the tests use them against a live Prometheus (seconds)...
ALERT_TIMING = {"PENDING_SECONDS": "2", "NO_PROGRESS_SECONDS": "60", "LOAD_GRACE_SECONDS": "60",
                "FAILED_SECONDS": "3600", "BUDGET_RATIO": "0.9", "RUNBOOK": RUNBOOK}
# ...and the chart's defaults, which promtool's unit tests check (alerts_test.yaml).
CHART_DEFAULTS = {"PENDING_SECONDS": "1800", "NO_PROGRESS_SECONDS": "900",
                  "LOAD_GRACE_SECONDS": "3600", "FAILED_SECONDS": "3600", "BUDGET_RATIO": "0.9",
                  "RUNBOOK": RUNBOOK}


def render_rules(values: dict[str, str], annotations: bool = True) -> list[dict[str, Any]]:
    """files/alerts.yaml with its placeholders filled, as the chart's template fills them."""
    text = (CHART_FILES / "alerts.yaml").read_text()
    for name, value in values.items():
        text = text.replace(name, value)
    rules: list[dict[str, Any]] = yaml.safe_load(text)
    if not annotations:
        for rule in rules:
            rule.pop("annotations")
    return rules


@pytest.fixture(scope="module")
def op(operator: Operator) -> Operator:
    """The session's operator: a second one would race it for the same jobs."""
    return operator


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "mentor.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "mentor.rules",
                                                "rules": render_rules(ALERT_TIMING)}]}))
    return path


@pytest.fixture(scope="module")
def prom(op: Operator, rules: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"),
                        [op.http.removeprefix("http://")], [rules])
    yield server
    server.stop()


def test_the_alert_rules_are_valid(rules: Path) -> None:
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout
    readme = (CHART_FILES.parents[2] / "README.md").read_text()
    anchors = {"#" + re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
               for line in readme.splitlines() if line.startswith("### ")}
    for rule in render_rules(CHART_DEFAULTS):
        notes = rule["annotations"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert notes["summary"] and len(notes["description"]) > 40, rule["alert"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url == RUNBOOK and f"#{anchor}" in anchors, (rule["alert"], anchor)


def test_the_alerts_fire_when_they_should_promtool_unit_tests(tmp_path: Path) -> None:
    """The expressions' timing, with the chart's defaults: no progress fires after 15 minutes
    (not 30) and not while a model loads, pending survives a change of reason, a failure
    resolves after an hour, +Inf is caught, the operator's absence and errors alert, and the
    budget forecast warns an hour ahead."""
    (tmp_path / "mentor.rules.yaml").write_text(yaml.safe_dump({"groups": [
        {"name": "mentor.rules", "rules": render_rules(CHART_DEFAULTS, annotations=False)}]}))
    shutil.copy(Path(__file__).with_name("alerts_test.yaml"), tmp_path / "alerts_test.yaml")
    result = subprocess.run(["promtool", "test", "rules", str(tmp_path / "alerts_test.yaml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


class PodWatcher:
    """Every state of a job's pods, from a watch stream, so no short-lived state is missed."""

    def __init__(self, control_plane: ControlPlane, namespace: str, job: str) -> None:
        from kubernetes import client, config, watch

        self.pods: dict[str, dict[str, Any]] = {}
        api = client.CoreV1Api(config.new_client_from_config(str(control_plane.kubeconfig)))
        self._watch = watch.Watch()

        def run() -> None:
            with contextlib.suppress(Exception):  # the stream ends with the test
                self._run(api, namespace, job)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def _run(self, api: Any, namespace: str, job: str) -> None:
        for event in self._watch.stream(api.list_namespaced_pod, namespace,
                                        label_selector=f"mentor.dev/job-name={job}",
                                        _request_timeout=300):
            pod = api.api_client.sanitize_for_serialization(event["object"])
            uid = pod["metadata"]["uid"]
            self.pods[uid] = merge(self.pods.get(uid), pod)

    def stop(self) -> None:
        self._watch.stop()

    def gpu_seconds(self) -> float:
        def parse(t: str) -> dt.datetime:
            return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))

        total = 0.0
        for pod in self.pods.values():
            gpus = int(pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
            state = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
            if "terminated" in state:
                start, end = state["terminated"]["startedAt"], state["terminated"]["finishedAt"]
            elif "running" in state:  # deleted while running: held until it was released
                meta = pod["metadata"]
                assert "releasedAt" in meta, f"{meta['name']} never seen deleting: {pod}"
                start, end = state["running"]["startedAt"], meta["releasedAt"]
            else:
                continue
            total += gpus * (parse(end) - parse(start)).total_seconds()
        return total


def test_gpu_hours_match_the_pods_across_an_operator_restart_and_a_job_restart(
    control_plane: ControlPlane, op: Operator, prom: Prometheus, restricted_namespace: str
) -> None:
    kube = Kube(control_plane, restricted_namespace)
    kube.apply(training_job("acct"))  # 2 pods × 4 GPUs
    kube.wait("trainingjob/acct", "condition=Running")
    watcher = PodWatcher(control_plane, kube.ns, "acct")

    op.stop()  # the operator goes away while the job holds its GPUs...
    # Pod timestamps have 1 s resolution, so each pod deleted while running (here one) can
    # differ from the operator's sub-second view by up to 4 GPU-seconds: attempts of 30 s keep
    # that under 1% of the total.
    kube.end_pods("acct", "fail", exit_code=137, count=1, delay="30s")
    op.start()  # ...and comes back: nothing of that time may be lost
    kube.wait("trainingjob/acct", "jsonpath={.status.restarts}=1", timeout=90)
    kube.wait("trainingjob/acct", "condition=Running")
    kube.end_pods("acct", "succeed", delay="30s")
    kube.wait("trainingjob/acct", "condition=Succeeded", timeout=90)
    watcher.stop()

    truth = watcher.gpu_seconds()
    assert truth >= 8 * 2 * 30, "two attempts of 8 GPUs, each of 30 s or more"
    status = kube.get("trainingjob", "acct")["status"]
    status_seconds = status["gpuHours"] * 3600
    assert status_seconds == pytest.approx(truth, rel=0.01)
    assert status["costEstimate"] == pytest.approx(status["gpuHours"] * PRICE, rel=1e-3)
    result = prom.wait_for(
        f'mentor_job_gpu_seconds{{namespace="{kube.ns}",job_name="acct"}}',
        lambda r: r and abs(float(r[0]["value"][1]) - status_seconds) < 1)
    prometheus_seconds = float(result[0]["value"][1])
    assert prometheus_seconds == pytest.approx(truth, rel=0.01)
    print(f"\nGPU-seconds: pods {truth:.1f}, status {status_seconds:.1f}, "
          f"Prometheus {prometheus_seconds:.1f}")


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fold a pod's new event into what was seen of it.

    A container's terminated state is kept once seen. A running pod's GPUs are released when its
    deletion is requested: deletionTimestamp − deletionGracePeriodSeconds of the first deleting
    event (the kubelet's final delete later rewrites both).
    """
    meta = new["metadata"]
    if "deletionTimestamp" in meta:
        issued = dt.datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00")) - \
            dt.timedelta(seconds=meta.get("deletionGracePeriodSeconds") or 0)
        meta["releasedAt"] = (old or {}).get("metadata", {}).get("releasedAt") or \
            format_time(issued)
    if old is None:
        return new
    old_state = (old["status"].get("containerStatuses") or [{}])[0].get("state", {})
    new_status = new["status"].get("containerStatuses") or [{}]
    if "terminated" in old_state and "terminated" not in new_status[0].get("state", {}):
        new_status[0]["state"] = old_state
    return new


def test_progress_reports_reach_status_and_prometheus(
    control_plane: ControlPlane, op: Operator, prom: Prometheus, restricted_namespace: str
) -> None:
    kube = Kube(control_plane, restricted_namespace)
    kube.apply(training_job("curve"))
    kube.wait("trainingjob/curve", "condition=Running")
    records = [{"step": s, "total_steps": 100, "loss": 4.0 - s / 50, "learning_rate": 1e-3,
                "tokens_per_second": 1000.0 + s, "seconds_per_step": 0.5} for s in (1, 2, 3)]
    records.append({"step": 3, "eval_loss": 3.5})
    records.append({"step": 3, "checkpoint": "/mnt/pvc/models/curve/checkpoints/step-00000003"})
    report(op, kube, "curve", records)
    kube.wait("trainingjob/curve", "jsonpath={.status.progress.evalLoss}=3.5")
    status = kube.get("trainingjob", "curve")["status"]
    assert status["progress"]["step"] == 3 and status["progress"]["percent"] == 3.0
    assert status["progress"]["shown"] == "3%", "kubectl get prints the percent with its sign"
    assert status["progress"]["etaSeconds"] == 48
    assert status["checkpoint"]["step"] == 3
    prom.wait_for(f'mentor_job_loss{{job_name="curve",namespace="{kube.ns}"}} == 3.94')

    bad = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         "-H", "Authorization: Bearer not-the-token", "-d", json.dumps(records[0]),
         f"{op.http}/v1/progress/{kube.ns}/curve"], capture_output=True, text=True, check=False)
    assert bad.stdout == "403", "another job's (or no) token is refused"

    kube("delete", "trainingjob", "curve")
    prom.wait_for(f'count(mentor_job_loss{{job_name="curve",namespace="{kube.ns}"}}) or vector(0)',
                  lambda r: r and float(r[0]["value"][1]) == 0)


def test_mentor_report_draws_a_cluster_jobs_curve_from_prometheus(
    control_plane: ControlPlane, op: Operator, prom: Prometheus, restricted_namespace: str,
    tmp_path: Path
) -> None:
    kube = Kube(control_plane, restricted_namespace)
    kube.apply(training_job("plotted"))
    kube.wait("trainingjob/plotted", "condition=Running")
    for step in range(1, 6):  # each report held long enough for a 1 s scrape to see it
        report(op, kube, "plotted", [
            {"step": step, "total_steps": 100, "loss": 4.0 - step / 10, "learning_rate": 1e-3,
             "tokens_per_second": 1000.0, "seconds_per_step": 0.5},
            *([{"step": step, "eval_loss": 3.9}] if step == 3 else [])])
        prom.wait_for(f'mentor_job_step{{job_name="plotted",namespace="{kube.ns}"}} == {step}')
        time.sleep(1.5)
    mentor = str(Path(sys.executable).with_name("mentor"))
    png = tmp_path / "plotted.png"
    result = subprocess.run([mentor, "report", "plotted", "-n", kube.ns, "--prometheus",
                             prom.url, "--png", str(png)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "plotted: at step 5/100, no outcome yet" in result.stdout, result.stdout
    assert "loss          3.9000 -> 3.5000" in result.stdout
    assert "eval loss     3.9000 -> 3.9000" in result.stdout
    assert png.stat().st_size > 10_000
    bare = subprocess.run([mentor, "report", "plotted", "-n", kube.ns], capture_output=True,
                          text=True, check=False, env={**os.environ, "MENTOR_PROMETHEUS_URL": ""})
    assert bare.returncode == 0 and "Running at step 5/100" in bare.stdout, bare.stderr
    kube("delete", "trainingjob", "plotted")


def test_every_dashboard_panel_returns_data_and_alerts_fire(
    control_plane: ControlPlane, op: Operator, prom: Prometheus, restricted_namespace: str
) -> None:
    kube = Kube(control_plane, restricted_namespace)
    kube.apply(training_job("busy", runPolicy={"maxGPUHours": 100}))
    kube.apply(training_job("stuck", parallelism={"nodes": 1, "gpusPerNode": 16}))
    kube.apply(training_job("broken", runPolicy={"backoffLimit": 0}))
    kube.wait("trainingjob/busy", "condition=Running")
    kube.wait("trainingjob/broken", "condition=Running")
    kube.end_pods("broken", "fail", exit_code=4, count=1)
    report(op, kube, "busy", [
        {"step": 1, "total_steps": 10, "loss": 3.0, "learning_rate": 1e-3,
         "tokens_per_second": 500.0, "seconds_per_step": 1.0, "mfu": 0.41},
        {"step": 1, "eval_loss": 3.2}])
    kube.end_pods("busy", "fail", exit_code=137, count=1)  # one restart, for the restarts panel
    kube.wait("trainingjob/busy", "jsonpath={.status.restarts}=1")
    kube.apply(tuning_job("tuned", budget={"maxGPUHours": 10}))  # for the Tuning row
    kube.wait("trainingjob/tuned-t0", "create")
    kube.wait("trainingjob/tuned-t0", "condition=Running")
    report(op, kube, "tuned-t0", [{"step": 10, "eval_loss": 2.5}])
    kube.wait("trainingjob/tuned-t0", "jsonpath={.status.progress.evalLoss}=2.5")
    kube.end_pods("tuned-t0", "succeed")
    kube.wait("tuningjob/tuned", "condition=Succeeded")

    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    variables = {"$namespace": ".*", "$job": ".*", "$__range": "1h"}
    assert {v["name"] for v in dashboard["templating"]["list"]} == \
        {"datasource", "namespace", "job"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"]["unit"] != "short" or \
            panel["fieldConfig"]["defaults"].get("decimals") == 0, panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            prom.wait_for(expr, timeout=90)  # every panel returns data for jobs that ran

    prom.wait_for('ALERTS{alertname="MentorJobFailed",alertstate="firing",job_name="broken"}')
    prom.wait_for('ALERTS{alertname="MentorLossNotFinite",alertstate="firing",job_name="broken"}')
    prom.wait_for('ALERTS{alertname="MentorJobPendingTooLong",alertstate="firing",job_name="stuck"}')
