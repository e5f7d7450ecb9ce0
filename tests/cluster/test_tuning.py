"""TuningJobs on the real control plane: trials are real TrainingJobs, their pods kwok's, and
their eval losses reach the operator through the trainer's own progress reporter."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness import Kube, Operator, report, training_job, tuning_job

from mentor.api.tuning import SearchSpec
from mentor.decide.search import suggest
from mentor.decide.trialview import trial_of

pytestmark = pytest.mark.cluster
LABEL = "mentor.dev/tuning-job"


def trials(kube: Kube, name: str) -> list[dict[str, Any]]:
    out = kube("get", "trainingjobs", "-l", f"{LABEL}={name}", "-o", "json")
    items = json.loads(out)["items"]
    return sorted(items, key=lambda t: int(t["metadata"]["labels"]["mentor.dev/trial"]))


def wait_for(check: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what or check}")


def wait_trials(kube: Kube, name: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    return wait_for(lambda: (found := trials(kube, name)) and len(found) >= count and found,
                    timeout, f"{count} trials of {name}")


def finish(op: Operator, kube: Kube, trial: str, evals: list[tuple[int, float]]) -> None:
    """The trial's trainer reports its eval losses, then its pods succeed."""
    kube.wait(f"trainingjob/{trial}", "condition=Running")
    report(op, kube, trial, [{"step": s, "eval_loss": v} for s, v in evals])
    kube.wait(f"trainingjob/{trial}", f"jsonpath={{.status.progress.evalLoss}}={evals[-1][1]}")
    kube.end_pods(trial, "succeed")
    kube.wait(f"trainingjob/{trial}", "condition=Succeeded")


def status(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.get("tuningjob", name).get("status") or {})


GRID = {"algorithm": "grid", "maxTrials": 4, "parallelTrials": 2, "parameters": [
    {"path": "optimization.learningRate", "values": [0.001, 0.003]},
    {"path": "method.lora.rank", "values": [4, 16]}]}


def test_grid_runs_every_combination_in_order_within_parallel_trials(
        operator: Operator, kube: Kube) -> None:
    kube.apply(tuning_job("grid", search=GRID))
    first = wait_trials(kube, "grid", 2)
    time.sleep(2)  # the operator had time to start more, and must not have
    assert len(trials(kube, "grid")) == 2
    owner = kube.get("tuningjob", "grid")["metadata"]["uid"]
    for number, trial in enumerate(first):  # outputs under the search's UID, never reused
        meta, spec = trial["metadata"], trial["spec"]
        assert meta["name"] == f"grid-t{number}"
        assert meta["ownerReferences"][0]["uid"] == owner
        assert "mentor.dev/trial-accounting" in meta["finalizers"]
        assert spec["model"]["from"] == "/models/base"
        assert spec["output"]["uri"] == f"/models/grid/{owner[:8]}/grid-t{number}"
    params = [json.loads(t["metadata"]["annotations"]["mentor.dev/trial-parameters"])
              for t in first]
    assert params == [{"method.lora.rank": 4, "optimization.learningRate": 0.001},
                      {"method.lora.rank": 16, "optimization.learningRate": 0.001}]
    assert first[1]["spec"]["adaptation"]["lora"]["rank"] == 16
    assert first[1]["spec"]["optimization"]["learningRate"] == 0.001

    losses = {"grid-t0": 2.4, "grid-t1": 2.1, "grid-t2": 1.8, "grid-t3": 2.2}
    finish(operator, kube, "grid-t0", [(50, 2.6), (100, losses["grid-t0"])])
    third = wait_trials(kube, "grid", 3)[2]
    assert json.loads(third["metadata"]["annotations"]["mentor.dev/trial-parameters"]) == \
        {"method.lora.rank": 4, "optimization.learningRate": 0.003}
    for name in ("grid-t1", "grid-t2"):
        finish(operator, kube, name, [(100, losses[name])])
    wait_trials(kube, "grid", 4)
    finish(operator, kube, "grid-t3", [(100, losses["grid-t3"])])
    kube.wait("tuningjob/grid", "condition=Succeeded")
    final = status(kube, "grid")
    assert final["reason"] == "SearchComplete"
    assert final["trials"]["succeeded"] == 4 and final["trials"]["created"] == 4
    assert final["bestTrial"]["name"] == "grid-t2"
    assert final["bestTrial"]["objective"] == pytest.approx(1.8)
    search_id = kube.get("tuningjob", "grid")["metadata"]["uid"][:8]
    assert final["bestTrial"]["modelURI"] == f"/models/grid/{search_id}/grid-t2"
    assert [t["name"] for t in final["topTrials"]] == ["grid-t2", "grid-t1", "grid-t3", "grid-t0"]
    assert final["shown"]["trials"] == "4/4"
    table = kube("get", "tuningjob", "grid")
    assert "4/4" in table.splitlines()[1] and "SearchComplete" in table
    metrics = urllib.request.urlopen(f"{operator.http}/metrics", timeout=5).read().decode()
    series = f'namespace="{kube.ns}",state="Succeeded",tuning_job="grid"'
    assert f"mentor_tuning_trials{{{series}}} 4.0" in metrics
    assert f'mentor_tuning_best_objective{{namespace="{kube.ns}",tuning_job="grid"}} 1.8' \
        in metrics


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_random_and_tpe_sample_distinct_trials_within_the_range(
        operator: Operator, kube: Kube, algorithm: str) -> None:
    search = {"algorithm": algorithm, "maxTrials": 3, "parallelTrials": 3, "seed": 7,
              "parameters": [{"path": "optimization.learningRate", "min": 1e-4, "max": 1e-2,
                              "scale": "log"},
                             {"path": "method.lora.rank", "min": 2, "max": 32}]}
    kube.apply(tuning_job(algorithm, search=search))
    found = wait_trials(kube, algorithm, 3)
    params = [json.loads(t["metadata"]["annotations"]["mentor.dev/trial-parameters"])
              for t in found]
    assert len({p["optimization.learningRate"] for p in params}) == 3
    for p in params:
        assert 1e-4 <= p["optimization.learningRate"] <= 1e-2
        assert isinstance(p["method.lora.rank"], int) and 2 <= p["method.lora.rank"] <= 32
    # The parameters are a function of the seed and the earlier trials: the operator's
    # choices are the ones the search itself makes from what the trials hold.
    spec = SearchSpec.model_validate(search)
    seen = [trial_of(t) for t in found]
    for number in range(3):
        assert suggest(spec, [t for t in seen if t.number < number], number) == params[number]


def test_pruning_stops_a_lagging_trial_gracefully(operator: Operator, kube: Kube) -> None:
    search = {"algorithm": "random", "maxTrials": 3, "parallelTrials": 2,
              "parameters": [{"path": "optimization.learningRate", "min": 1e-4, "max": 1e-2}],
              "pruner": {"type": "median", "startupTrials": 1}}
    kube.apply(tuning_job("prune", search=search))
    wait_trials(kube, "prune", 2)
    finish(operator, kube, "prune-t0", [(10, 2.5), (20, 2.0), (30, 1.9)])
    kube.wait("trainingjob/prune-t1", "condition=Running")
    report(operator, kube, "prune-t1", [{"step": 10, "eval_loss": 4.0}])
    kube.wait("trainingjob/prune-t1", "jsonpath={.status.phase}=Stopped")
    pruned = kube.get("trainingjob", "prune-t1")
    assert pruned["spec"]["runPolicy"]["stop"]["reason"] == "Pruned"
    assert pruned["status"]["reason"] == "Pruned"
    stopped = kube.condition("prune-t1", "Stopped")
    assert "eval loss 4.0000 at step 10" in stopped["message"]
    # Its pods were deleted gracefully (SIGTERM: the trainer checkpoints), not killed.
    kube.wait("pod/prune-t1-0", "delete", timeout=60)
    wait_for(lambda: status(kube, "prune").get("trials", {}).get("pruned") == 1, 30, "counted")
    assert wait_trials(kube, "prune", 3)[2]["metadata"]["name"] == "prune-t2"


def test_reservations_prevent_overshoot_and_the_budget_ends_the_search(
        operator: Operator, kube: Kube) -> None:
    # Each trial holds 1 GPU. 0.002 GPU-hours (7.2 s) are reserved per trial before it starts:
    # two do not fit in 0.003, so only one trial runs though two may run at once.
    search = {"algorithm": "random", "maxTrials": 5, "parallelTrials": 2,
              "parameters": [{"path": "optimization.learningRate", "min": 1e-4, "max": 1e-2}]}
    kube.apply(tuning_job("budget", search=search,
                          budget={"maxGPUHours": 0.003, "trialGPUHours": 0.002}))
    wait_trials(kube, "budget", 1)
    kube.wait("tuningjob/budget", "jsonpath={.status.phase}=Running")
    time.sleep(3)
    assert len(trials(kube, "budget")) == 1
    assert status(kube, "budget")["reservedGPUHours"] > 0
    kube.wait("tuningjob/budget", "jsonpath={.status.reason}=BudgetExhausted", timeout=90)
    final = status(kube, "budget")
    assert final["phase"] == "Failed"  # no trial finished: there is no best to keep
    assert len(trials(kube, "budget")) == 1
    # The trial ends too: stopped by its TuningJob, or by the budget it was given (what was
    # left when it started), whichever saw it first. What it used is within a resync or two.
    wait_for(lambda: kube.get("trainingjob", "budget-t0")["status"].get("reason")
             in ("SearchEnded", "BudgetExhausted"), 30, "the trial to end")
    assert 0.003 <= final["gpuHours"] <= 0.003 + 3 / 3600


def test_a_queued_trial_is_never_charged(operator: Operator, kube: Kube) -> None:
    # 16 GPUs per pod fit on no node (they have 8): the trial waits, holding nothing.
    kube.apply(tuning_job("queued", parallelism={"nodes": 1, "gpusPerNode": 16},
                          optimization={"steps": 100, "globalBatchSize": 16,
                                        "microBatchSize": 1}))
    wait_trials(kube, "queued", 1)
    kube.wait("trainingjob/queued-t0", "jsonpath={.status.reason}=Unschedulable")
    time.sleep(3)
    assert kube.get("trainingjob", "queued-t0")["status"]["gpuHours"] == 0
    assert status(kube, "queued")["gpuHours"] == 0


def test_an_operator_restart_mid_search_repeats_and_loses_no_trial(
        operator: Operator, kube: Kube) -> None:
    search = {"algorithm": "tpe", "maxTrials": 4, "parallelTrials": 2, "seed": 3,
              "parameters": [{"path": "optimization.learningRate", "min": 1e-4, "max": 1e-2,
                              "scale": "log"}]}
    kube.apply(tuning_job("restart", search=search))
    before = wait_trials(kube, "restart", 2)
    finish(operator, kube, "restart-t0", [(100, 2.05)])
    operator.stop()
    try:
        kube.end_pods("restart-t1", "succeed")  # a trial ends while no operator watches
        time.sleep(1)
    finally:
        operator.start()
    kube.wait("trainingjob/restart-t1", "condition=Succeeded")
    after = wait_trials(kube, "restart", 4)
    time.sleep(2)
    after = trials(kube, "restart")
    assert [t["metadata"]["name"] for t in after] == [f"restart-t{n}" for n in range(4)]
    for old, new in zip(before, after[:2], strict=True):
        assert old["metadata"]["uid"] == new["metadata"]["uid"]  # never recreated
        assert old["metadata"]["annotations"] == new["metadata"]["annotations"]
    counts = status(kube, "restart")["trials"]
    assert counts["created"] == 4 and counts["succeeded"] == 2 and counts["running"] == 2


def test_a_deleted_trial_is_counted_with_its_gpu_hours(operator: Operator, kube: Kube) -> None:
    search = {"algorithm": "grid", "parallelTrials": 1, "maxTrials": 2, "parameters": [
        {"path": "optimization.learningRate", "values": [0.001, 0.002]}]}
    kube.apply(tuning_job("deleted", search=search))
    wait_trials(kube, "deleted", 1)
    kube.wait("trainingjob/deleted-t0", "condition=Running")
    time.sleep(3)
    kube.wait("trainingjob/deleted-t0", "jsonpath={.status.phase}=Running")
    kube("delete", "trainingjob", "deleted-t0", "--wait=false")
    # Its GPU-hours reach the TuningJob's ledger, then its finalizer goes and it is gone.
    kube.wait("trainingjob/deleted-t0", "delete", timeout=60)
    final = wait_for(lambda: (s := status(kube, "deleted")).get("trials", {}).get("failed") == 1
                     and s, 30, "the deleted trial counted")
    assert final["ledger"]["retiredGPUSeconds"] > 0
    assert final["gpuHours"] >= round(final["ledger"]["retiredGPUSeconds"] / 3600, 6)  # as kept
    assert any(e["reason"] == "TrialDeleted" for e in kube.events("deleted"))
    assert wait_trials(kube, "deleted", 1)[0]["metadata"]["name"] == "deleted-t1"


def test_a_training_job_ref_waits_for_its_job_then_records_the_lineage(
        operator: Operator, kube: Kube) -> None:
    kube.apply(tuning_job("lineage", baseModel={"trainingJobRef": {"name": "pretrain"}}))
    kube.wait("tuningjob/lineage", "jsonpath={.status.reason}=WaitingForBaseModel")
    kube.apply(training_job("pretrain", parallelism={"nodes": 1, "gpusPerNode": 1}))
    kube.wait("trainingjob/pretrain", "condition=Running")
    time.sleep(1)
    assert trials(kube, "lineage") == []
    assert "pretrain is Running" in kube.get("tuningjob", "lineage")["status"]["conditions"][0][
        "message"]
    finish(operator, kube, "pretrain", [(100, 1.7)])
    trial = wait_trials(kube, "lineage", 1)[0]
    assert trial["spec"]["model"]["from"] == "/models/pretrain"
    lineage = status(kube, "lineage")["lineage"]
    assert lineage == {"trainingJob": "pretrain",
                       "uid": kube.get("trainingjob", "pretrain")["metadata"]["uid"],
                       "evalLoss": 1.7, "modelURI": "/models/pretrain"}


def test_only_trial_counts_and_budget_change_while_running(kube: Kube) -> None:
    search = {"algorithm": "random", "maxTrials": 2, "parallelTrials": 1,
              "parameters": [{"path": "optimization.learningRate", "min": 1e-4, "max": 1e-2}]}
    kube.apply(tuning_job("edits", search=search))
    kube.wait("tuningjob/edits", "jsonpath={.status.phase}=Running")
    kube("patch", "tuningjob", "edits", "--type=merge", "-p",
         json.dumps({"spec": {"search": {"maxTrials": 3, "parallelTrials": 2},
                              "budget": {"maxGPUHours": 5}}}))
    wait_trials(kube, "edits", 2)
    refused = refusal(kube.cp, kube.ns, "patch", "tuningjob", "edits", "--type=merge", "-p",
                      json.dumps({"spec": {"optimization": {"learningRate": 0.1}}}))
    assert "only search.maxTrials, search.parallelTrials and budget can change" in refused
    assert kube.get("tuningjob", "edits")["spec"]["optimization"]["learningRate"] != 0.1


IMPOSSIBLE = [
    # 7 parameters x 10 values with maxTrials 2 once took the operator to 2.9 GB; now the API
    # server refuses a grid beyond the limit, naming its size.
    ({"algorithm": "grid", "maxTrials": 2, "parameters": [
        {"path": p, "values": [float(v) for v in range(1, 11)]} for p in (
            "optimization.warmupSteps", "optimization.evalInterval", "method.lora.rank",
            "method.lora.alpha", "optimization.microBatchSize", "optimization.evalBatches",
            "optimization.steps")]},
     "spec.search.parameters: Invalid value: this grid has 10,000,000 points; a grid search may "
     "have at most 100000 points"),
    ({"algorithm": "grid", "parameters": [{"path": "optimization.learningRate", "values": []}]},
     "spec.search.parameters[0].values"),
    ({"parameters": [{"path": "optimization.learningRate", "min": 0.1, "max": 0.01}]},
     "spec.search.parameters[0].min: Invalid value"),
    ({"parameters": [{"path": "optimization.learningRate", "min": 0, "max": 0.1,
                      "scale": "log"}]}, "a log scale needs a positive range"),
    ({"maxTrials": 2, "parallelTrials": 3,
      "parameters": [{"path": "optimization.learningRate", "min": 0.01, "max": 0.1}]},
     "spec.search.parallelTrials: Invalid value"),
    ({"parameters": [{"path": "optimization.nope", "min": 0.01, "max": 0.1}]},
     "spec.search.parameters[0].path: Unsupported value"),
    ({"parameters": [{"path": "optimization.schedule", "choices": ["cosine", "zigzag"]}]},
     "optimization.schedule takes one of 'cosine', 'linear', 'constant'"),
    ({"parameters": [{"path": "optimization.learningRate", "min": -0.01, "max": 0.01}]},
     "spec.search.parameters[0]: Invalid value: optimization.learningRate takes values > 0 and "
     "<= 10"),
]


@pytest.mark.parametrize(("search", "expected"), IMPOSSIBLE)
def test_impossible_searches_are_refused_at_admission_with_the_field_path(
        control_plane: Any, crds: None, namespace: str, search: dict[str, Any],
        expected: str) -> None:
    error = refusal(control_plane, namespace, "apply", "-f", "-",
                    input=json.dumps(tuning_job("bad", search=search)))
    assert expected in error, error
    assert Kube(control_plane, namespace)("get", "tuningjobs", "-o", "name") == ""


def refusal(control_plane: Any, namespace: str, *args: str, input: str | None = None) -> str:
    """The API server's error for a kubectl command that must be refused."""
    done = subprocess.run([str(control_plane.bin_dir / "kubectl"), "-n", namespace, *args],
                          input=input, env=control_plane.env(), capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_the_cli_and_the_sdk_know_tuning_jobs(operator: Operator, kube: Kube) -> None:
    """`mentor ls` shows TuningJobs beside TrainingJobs, `describe tj/NAME` shows the trials as a
    table with the best marked, and the SDK submits a TuningJob to its own endpoint."""
    from mentor.client.sdk import Client

    client = Client(namespace=kube.ns, kubeconfig=str(kube.cp.kubeconfig))
    submitted = client.submit(tuning_job("cli", search={
        "algorithm": "grid", "maxTrials": 2, "parallelTrials": 2, "parameters": [
            {"path": "optimization.learningRate", "values": [0.001, 0.003]}]}))
    assert submitted.kind.kind == "TuningJob" and submitted.ref == "tuningjob/cli"
    wait_trials(kube, "cli", 2)
    finish(operator, kube, "cli-t1", [(100, 1.5)])
    wait_for(lambda: (status(kube, "cli").get("bestTrial") or {}).get("name") == "cli-t1",
             what="cli-t1 as the best trial")
    assert [t.name for t in client.trials("cli")] == ["cli-t0", "cli-t1"]

    def mentor(*args: str) -> str:
        command = [str(Path(sys.executable).with_name("mentor")), *args, "-n", kube.ns,
                   "--kubeconfig", str(kube.cp.kubeconfig)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = mentor("ls").split("\n\n")
    assert listed[0].split()[:9] == ["NAME", "PHASE", "REASON", "NODES", "PROGRESS", "LOSS",
                                     "RESTARTS", "GPU-HOURS", "AGE"]
    assert {"cli-t0", "cli-t1"} <= {line.split()[0] for line in listed[0].splitlines()[1:]}
    tuning = listed[1].splitlines()
    assert tuning[0].split() == ["NAME", "PHASE", "REASON", "TRIALS", "BEST", "OBJECTIVE",
                                 "GPU-HOURS", "AGE"]
    assert tuning[1].split()[:6] == ["cli", "Running", "TrialsRunning", "1/2", "cli-t1",
                                     "1.5000"]
    described = mentor("describe", "tj/cli")
    rows = described.split("Trials:\n", 1)[1].splitlines()
    assert rows[0].split() == ["TRIAL", "STATE", "OBJECTIVE", "STEP", "GPU-HOURS", "PARAMETERS"]
    assert rows[1].split()[:2] == ["cli-t0", "Running"]
    assert rows[2].split()[:4] == ["cli-t1", "*", "Succeeded", "1.5000"]
    assert "learningRate=0.003" in rows[2]
    assert json.loads(mentor("get", "tuningjob/cli", "-o", "json"))["kind"] == "TuningJob"
    assert "tuningjob cli deleted" in mentor("delete", "tj/cli")
    wait_for(lambda: "cli" not in kube("get", "tuningjobs", "-o", "name"), what="deletion")


def test_a_trial_name_held_by_a_users_job_is_said_and_never_adopted(
        operator: Operator, kube: Kube) -> None:
    kube.apply(training_job("held-t0", parallelism={"nodes": 1, "gpusPerNode": 1}))
    kube.apply(tuning_job("held"))
    kube.wait("tuningjob/held", "jsonpath={.status.reason}=ChildNameTaken", timeout=60)
    mine = kube.get("trainingjob", "held-t0")
    assert "ownerReferences" not in mine["metadata"], "a user's job is never adopted"
    assert status(kube, "held")["trials"]["created"] == 0
    kube("delete", "trainingjob", "held-t0", "--wait=true")
    wait_for(lambda: any(r.get("kind") == "TuningJob" for r in kube.get(
        "trainingjob", "held-t0")["metadata"].get("ownerReferences", []))
        if "held-t0" in kube("get", "trainingjobs", "-o", "name") else False,
        what="the trial created once the name is free")
    assert status(kube, "held")["reason"] == "TrialsRunning"
