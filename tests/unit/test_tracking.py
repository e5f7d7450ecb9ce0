"""spec.tracking without a server: the platform's defaults, what the pods carry, a trial's parent,
the status a tracker's report leads to, the operator's answer, and the outbox's bookkeeping."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from test_reconcile import JOB, T0, pod, spec

from mentor.api.status import ConditionType, JobStatus, Ledger, Progress, TrackingStatus
from mentor.api.tracking import PARENT_ENV, TrackingSpec, resolved
from mentor.api.tuning import TuningJobSpec
from mentor.builders.pods import build_pod
from mentor.builders.trials import trial_spec
from mentor.controller.server import answer
from mentor.controller.settings import Settings
from mentor.decide.conditions import get_condition
from mentor.decide.progress import parse_report
from mentor.decide.training import decide
from mentor_trainer import tracking

PLATFORM = Settings(tracking_uri="http://mlflow.platform:5000", tracking_experiment="team")


def config_of(pod_manifest: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(pod_manifest["metadata"]["annotations"][
        "mentor.dev/config"])
    return parsed


def test_the_platform_sets_the_server_once_and_a_job_may_name_its_own_or_opt_out() -> None:
    default = config_of(build_pod(JOB, spec(), 0, 1, PLATFORM))["tracking"]
    assert default == {"enabled": True, "tensorboard": True, "mlflow": {
        "uri": "http://mlflow.platform:5000", "experiment": "team"}}
    own = spec(tracking={"mlflow": {"uri": "https://mine.example/mlflow", "experiment": "x"}})
    assert config_of(build_pod(JOB, own, 0, 1, PLATFORM))["tracking"]["mlflow"] == {
        "uri": "https://mine.example/mlflow", "experiment": "x"}
    off = config_of(build_pod(JOB, spec(tracking={"enabled": False}), 0, 1, PLATFORM))
    assert tracking.settings(off) is None
    assert resolved(None).mlflow is None, "no platform server: TensorBoard only"
    assert resolved(TrackingSpec(), "http://m:1").mlflow.experiment is None  # type: ignore[union-attr]


def test_credentials_reach_the_pods_from_the_jobs_secret_and_never_the_operator() -> None:
    s = spec(tracking={"mlflow": {"uri": "http://m:5000", "credentialsSecret": "mlflow-creds"}})
    env = build_pod(JOB, s, 0, 1, PLATFORM)["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e
            and e["valueFrom"]["secretKeyRef"]["name"] == "mlflow-creds"}
    assert refs == {
        "MLFLOW_TRACKING_TOKEN": {"name": "mlflow-creds", "key": "token", "optional": True},
        "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-creds", "key": "username",
                                     "optional": True},
        "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-creds", "key": "password",
                                     "optional": True}}
    plain = {e["name"]: e.get("value") for e in env}
    assert plain["MENTOR_IMAGE"] == PLATFORM.trainer_image, "the run is tagged with its image"


def test_a_trial_nests_under_its_search_and_keeps_tracking_and_registration() -> None:
    tuning = TuningJobSpec.model_validate({
        "baseModel": {"uri": "/models/base"}, "data": {"source": "/d"},
        "optimization": {"steps": 10}, "output": {"uri": "/o", "register": {"name": "m"}},
        "tracking": {"mlflow": {"uri": "http://m:5000"}},
        "search": {"parameters": [{"path": "optimization.learningRate",
                                   "values": [0.1, 0.2]}],
                   "objective": {"metric": "eval_loss", "direction": "minimize"}}})
    body = trial_spec(tuning, "tune-t0", "/models/base", {"optimization.learningRate": 0.1},
                      None, "uid-7", "tune")
    assert body["tracking"]["mlflow"]["uri"] == "http://m:5000"
    assert body["output"] == {"uri": "/o/uid-7/tune-t0", "register": {"name": "m"}}
    parent = json.loads(next(e["value"] for e in body["template"]["env"]
                             if e["name"] == PARENT_ENV))
    assert parent == {"name": "tune", "key": "uid-7", "metric": "eval_loss",
                      "direction": "minimize"}


def test_an_unreachable_server_is_a_warning_once_and_the_job_goes_on() -> None:
    s = spec()
    status = decide(s, JobStatus(), [], T0).status
    running = [pod(s, 0, "Running"), pod(s, 1, "Running")]
    status = decide(s, status, running, T0).status
    status.progress = Progress(step=5, tracking=TrackingStatus(
        state="Unavailable", message="http://m:5000: Connection refused"))
    plan = decide(s, status, running, T0 + dt.timedelta(seconds=5))
    condition = get_condition(plan.status, ConditionType.TRACKING)
    assert condition is not None and condition.status == "False"
    assert condition.reason == "TrackingUnavailable" and "Connection refused" in condition.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "TrackingUnavailable")]
    assert plan.status.phase == "Running"
    again = decide(s, plan.status, running, T0 + dt.timedelta(seconds=10))
    assert again.events == [] and again.status == plan.status.model_copy(
        update={"gpu_hours": again.status.gpu_hours}), "at rest: no new event, nothing to write"
    plan.status.progress = Progress(step=9, tracking=TrackingStatus(
        state="Recording", run_id="abc", url="http://m:5000/#/experiments/1/runs/abc"))
    back = decide(s, plan.status, running, T0 + dt.timedelta(seconds=15))
    condition = get_condition(back.status, ConditionType.TRACKING)
    assert condition is not None and condition.status == "True"
    assert condition.reason == "Recording"


def test_the_operator_answers_a_tracker_with_the_ledgers_gpu_hours_and_a_pruning() -> None:
    s = spec()
    held = [pod(s, 0, "Running"), pod(s, 1, "Running")]
    job = {"spec": {"runPolicy": {"stop": {"reason": "Pruned"}}},
           "status": JobStatus(ledger=Ledger(retired_gpu_seconds=3600.0)).wire()}
    manifests = []
    for view in held:
        manifest = build_pod(JOB, s, view.rank, 1, Settings.from_env())
        manifest["metadata"]["uid"] = view.uid
        manifest["status"] = {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
        manifests.append(manifest)
    said = answer(job, parse_report({"step": 3, "ledger": True}), manifests, Settings.from_env())
    now = dt.datetime.now(dt.UTC)
    expected = 1 + 2 * 4 * (now - T0).total_seconds() / 3600  # settled, and 2 pods × 4 GPUs
    assert said["stop"] == "Pruned"
    assert abs(said["gpuHours"] - expected) < 0.01
    assert "gpuHours" not in answer(job, parse_report({"step": 3}), manifests,
                                    Settings.from_env()), "computed only when asked"


def test_params_are_the_whole_spec_flattened_and_metrics_every_number_reported() -> None:
    params = tracking.flatten({"optimization": {"learningRate": 0.003, "steps": 10},
                               "lora": {"targetModules": ["c_attn"]}, "name": "x"})
    assert params == {"optimization.learningRate": "0.003", "optimization.steps": "10",
                      "lora.targetModules": '["c_attn"]', "name": "x"}
    record = {"time": 1.0, "step": 4, "total_steps": 10, "loss": 2.5, "learning_rate": 1e-3,
              "tokens_per_second": 100, "mfu": None, "gpus": 8, "metrics": {"accuracy": 0.5}}
    assert tracking.metrics_of(record, gpu_hours=0.25) == {
        "loss": 2.5, "learning_rate": 1e-3, "tokens_per_second": 100.0, "accuracy": 0.5,
        "gpu_hours": 0.25}
    assert tracking.metrics_of({"step": 5, "loss": float("nan"), "grad_norm": 1.0}) == {
        "grad_norm": 1.0}, "JSON has no NaN: a diverged loss is the job's failure, not a record"


def test_the_outbox_resends_nothing_sent_and_a_resumed_attempt_logs_no_step_twice(
        tmp_path: Path) -> None:
    box = tracking.Outbox(tmp_path)
    box.append({"metrics": [{"key": "loss", "value": 1.0, "timestamp": 1, "step": 1}]},
               {"metrics": [{"key": "loss", "value": 0.9, "timestamp": 2, "step": 2},
                            {"key": "eval_loss", "value": 1.1, "timestamp": 2, "step": 2}]})
    entries, offset = box.pending()
    assert len(entries) == 2
    box.done(offset)
    assert box.pending() == ([], offset), "what was sent is not sent again"
    assert box.last_steps() == {"loss": 2, "eval_loss": 2}
    with box.path.open("a") as f:
        f.write('{"metrics": [')  # an attempt killed mid-write: the torn line waits
    assert box.pending() == ([], offset)


def test_batches_keep_mlflows_limits_and_the_order_of_everything_else() -> None:
    metric = {"key": "loss", "value": 1.0, "timestamp": 1, "step": 1}
    entries = [{"params": {f"p{i}": "1" for i in range(60)}},
               {"params": {f"q{i}": "1" for i in range(60)}},
               {"metrics": [metric] * 700}, {"metrics": [metric] * 400},
               {"status": "FINISHED"}, {"metrics": [metric]}]
    batches = tracking._batches(entries)
    assert [len(b) for b in batches] == [1, 2, 1, 1, 1]
    assert all(sum(len(e.get("metrics", [])) for e in b) <= 1000 for b in batches)
    assert all(sum(len(e.get("params", {})) for e in b) <= 100 for b in batches)
    assert batches[3] == [{"status": "FINISHED"}]
