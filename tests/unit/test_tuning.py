"""The TuningJob's decisions, pure: trials, budget, pruning, failures, lineage, bounded status."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from mentor.api.tuning import CHOICE, TUNABLE, SearchSpec, TuningJobSpec, TuningStatus
from mentor.api.validation import InvalidJob, validate
from mentor.decide.search import grid_point, grid_size, size, suggest, to_prune
from mentor.decide.trialview import FAILED, PRUNED, RUNNING, SUCCEEDED, Trial
from mentor.decide.tuning import Base, decide, resolve_base
from testdata import search_values

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
BASE = Base(uri="/models/base")
LR = {"path": "optimization.learningRate", "min": 1e-4, "max": 1e-1, "scale": "log"}


def spec(**overrides: Any) -> TuningJobSpec:
    body: dict[str, Any] = {
        "baseModel": {"uri": "/models/base"},
        "data": {"source": "/data/code"},
        "optimization": {"steps": 100, "globalBatchSize": 8, "microBatchSize": 1},
        "parallelism": {"nodes": 1, "gpusPerNode": 1},
        "output": {"uri": "/models/tune"},
    }
    body.update(overrides)
    return TuningJobSpec.model_validate(body)


def search(**overrides: Any) -> dict[str, Any]:
    return {"algorithm": "random", "maxTrials": 4, "parameters": [LR], **overrides}


def trial(number: int, state: str = RUNNING, objective: float | None = None,
          gpu_hours: float = 0.0, **extra: Any) -> Trial:
    return Trial(number=number, name=f"tune-t{number}",
                 params={"optimization.learningRate": 0.001 * (number + 1)}, state=state,
                 objective=objective, gpu_hours=gpu_hours, **extra)


def test_without_a_search_there_is_exactly_one_trial_of_the_spec_itself() -> None:
    plan = decide("tune", spec(), TuningStatus(), [], [], BASE, NOW)
    assert [(t.name, t.params) for t in plan.create] == [("tune-t0", {})]
    body = plan.create[0].spec
    assert body["model"] == {"from": "/models/base", "tokenizer": "pretrained"}
    assert body["adaptation"]["type"] == "lora"
    assert body["output"] == {"uri": "/models/tune/tune-t0"}  # on one machine: no UID
    in_cluster = decide("tune", spec(checkpointing={"uri": "/ckpt"}), TuningStatus(), [], [],
                        BASE, NOW, search_id="1a2b3c4d").create[0].spec
    assert in_cluster["output"] == {"uri": "/models/tune/1a2b3c4d/tune-t0"}, \
        "a search created again never resumes or overwrites the old one's"
    assert in_cluster["checkpointing"]["uri"] == "/ckpt/1a2b3c4d/tune-t0"
    again = decide("tune", spec(), plan.status, [trial(0)], [], BASE, NOW)
    assert again.create == [] and again.status.shown.trials == "0/1"
    done = decide("tune", spec(), again.status, [trial(0, SUCCEEDED, 1.5)], [], BASE, NOW)
    assert done.status.phase == "Succeeded" and done.status.reason == "SearchComplete"
    assert done.status.best_trial is not None and done.status.best_trial.name == "tune-t0"


def test_parameters_are_set_at_their_paths_in_the_trial_spec() -> None:
    s = spec(search={"algorithm": "grid", "parameters": [
        {"path": "method.lora.rank", "values": [4, 16]},
        {"path": "optimization.schedule", "choices": ["linear"]},
        {"path": "optimization.compile", "choices": ["false"]}]})
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW)
    body = plan.create[0].spec
    rank = body["adaptation"]["lora"]["rank"]
    assert rank == 4 and isinstance(rank, int)
    assert body["optimization"]["schedule"] == "linear"
    assert body["optimization"]["compile"] is False


def test_grid_walks_the_combinations_in_order_and_caps_max_trials() -> None:
    s = SearchSpec.model_validate({"algorithm": "grid", "maxTrials": 10, "parameters": [
        {"path": "optimization.learningRate", "values": [0.1, 0.2]},
        {"path": "method.lora.rank", "values": [4, 8, 16]}]})
    points = [grid_point(s, i) for i in range(grid_size(s))]
    assert len(points) == 6
    assert points == [dict(zip(["optimization.learningRate", "method.lora.rank"], combo,
                               strict=True)) for combo in itertools.product([0.1, 0.2], [4, 8, 16])]
    assert points[:2] == [{"optimization.learningRate": 0.1, "method.lora.rank": 4},
                          {"optimization.learningRate": 0.1, "method.lora.rank": 8}]
    plan = decide("tune", spec(search=s.wire() | {"parallelTrials": 10}), TuningStatus(), [], [],
                  BASE, NOW)
    assert [t.params for t in plan.create] == points


def test_the_largest_grid_the_schema_allows_is_counted_and_decoded_without_listing_it() -> None:
    """16 parameters of 64 values: 2**96 points. Counting and decoding must not list them
    (the operator once grew to 2.9 GB on a 7 x 10 grid with maxTrials 2)."""
    numeric = [p for p in TUNABLE if p not in CHOICE][:16]
    s = SearchSpec.model_validate({"algorithm": "grid", "maxTrials": 3, "parameters": [
        {"path": p, "values": [float(v + 1) for v in range(64)]} for p in numeric]})
    assert grid_size(s) == 64 ** 16 and size(s) == 3
    last = grid_point(s, 64 ** 16 - 1)
    assert all(v == 64 for v in last.values())
    assert grid_point(s, 1)[numeric[-1]] == 2 and grid_point(s, 64)[numeric[-2]] == 2
    plan = decide("tune", spec(search=s.wire() | {"parallelTrials": 3}), TuningStatus(), [], [],
                  BASE, NOW)
    # Values 1..64 do not fit every field: the first trial is decoded, checked and refused.
    assert plan.status.reason == "InvalidTrial"
    assert "trial tune-t0 with {" in plan.status.conditions[-1].message


def test_sampled_parameters_depend_only_on_seed_number_and_earlier_trials() -> None:
    s = SearchSpec.model_validate(search(algorithm="tpe", seed=5, maxTrials=20))
    earlier = [trial(n, SUCCEEDED, 2.0 - 0.1 * n) for n in range(6)]
    first = suggest(s, earlier, 6)
    assert suggest(s, earlier, 6) == first  # asked again (a restart): the same trial
    assert suggest(s, earlier, 7) != first
    assert 1e-4 <= first["optimization.learningRate"] <= 1e-1


def test_parallel_trials_are_respected() -> None:
    s = spec(search=search(parallelTrials=2))
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW)
    assert len(plan.create) == 2
    again = decide("tune", s, plan.status, [trial(0), trial(1)], [], BASE, NOW)
    assert again.create == []
    one_done = decide("tune", s, again.status, [trial(0, SUCCEEDED, 2.0), trial(1)], [], BASE,
                      NOW)
    assert [t.name for t in one_done.create] == ["tune-t2"]


def test_reservations_keep_parallel_trials_within_the_budget() -> None:
    s = spec(search=search(parallelTrials=3), budget={"maxGPUHours": 5, "trialGPUHours": 2})
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW)
    assert len(plan.create) == 2  # a third 2 GPU-hours would not fit in 5
    assert plan.status.reserved_gpu_hours == 4
    assert plan.create[0].spec["runPolicy"]["maxGPUHours"] == 5
    assert plan.create[1].spec["runPolicy"]["maxGPUHours"] == 3


def test_the_budget_ends_the_search_with_the_best_trial_so_far() -> None:
    s = spec(search=search(parallelTrials=2), budget={"maxGPUHours": 5})
    trials = [trial(0, SUCCEEDED, 1.9, gpu_hours=2.5), trial(1, gpu_hours=2.6)]
    plan = decide("tune", s, TuningStatus(), trials, [], BASE, NOW)
    assert plan.status.phase == "Succeeded" and plan.status.reason == "BudgetExhausted"
    assert plan.status.best_trial is not None and plan.status.best_trial.name == "tune-t0"
    assert plan.stop == {"tune-t1": ("SearchEnded", "the TuningJob ended: BudgetExhausted")}
    assert plan.create == []
    assert plan.status.gpu_hours == pytest.approx(5.1)


def test_a_next_trial_that_does_not_fit_ends_the_search() -> None:
    s = spec(search=search(), budget={"maxGPUHours": 5})
    trials = [trial(0, SUCCEEDED, 1.9, gpu_hours=3.0)]
    plan = decide("tune", s, TuningStatus(), trials, [], BASE, NOW)
    assert plan.create == [] and plan.status.reason == "BudgetExhausted"


def test_a_tiny_budget_still_gives_each_trial_a_positive_budget_of_its_own() -> None:
    s = spec(search=search(), budget={"maxGPUHours": 1e-7})
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW)
    assert plan.status.reason == "TrialsRunning", plan.status.conditions
    assert [t.spec["runPolicy"]["maxGPUHours"] for t in plan.create] == [1e-7]


def test_failures_end_the_search_only_at_the_limit_or_when_all_failed() -> None:
    s = spec(search=search(maxTrials=3, maxFailedTrials=2))
    one = decide("tune", s, TuningStatus(), [trial(0, FAILED)], [], BASE, NOW)
    assert one.status.phase == "Running" and [t.name for t in one.create] == ["tune-t1"]
    two = decide("tune", s, one.status, [trial(0, FAILED), trial(1, FAILED)], [], BASE, NOW)
    assert two.status.phase == "Failed" and two.status.reason == "MaxFailedTrials"
    s = spec(search=search(maxTrials=2))
    every = decide("tune", s, TuningStatus(), [trial(0, FAILED), trial(1, FAILED)], [], BASE,
                   NOW)
    assert every.status.phase == "Failed" and every.status.reason == "AllTrialsFailed"


def test_a_base_model_that_cannot_be_loaded_fails_the_search() -> None:
    failed = trial(0, FAILED, exit_code=5, message="no model at /models/base")
    plan = decide("tune", spec(search=search()), TuningStatus(), [failed], [], BASE, NOW)
    assert plan.status.phase == "Failed" and plan.status.reason == "BaseModelUnavailable"
    assert "/models/base" in plan.status.conditions[-1].message


def test_a_search_that_makes_an_invalid_trial_fails_with_the_field() -> None:
    s = spec(search={"algorithm": "grid", "parameters": [
        {"path": "optimization.microBatchSize", "values": [3]}]})
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW)
    assert plan.create == [] and plan.status.reason == "InvalidTrial"
    assert "globalBatchSize" in plan.status.conditions[-1].message


def test_a_deleted_trial_is_settled_once_and_then_released() -> None:
    s = spec(search=search(parallelTrials=1))
    gone = trial(0, SUCCEEDED, 1.7, gpu_hours=0.5)
    plan = decide("tune", s, TuningStatus(), [], [gone], BASE, NOW)
    assert plan.release == ["tune-t0"]
    assert plan.status.ledger.retired_gpu_seconds == 1800
    assert plan.status.trials.succeeded == 1 and plan.status.gpu_hours == 0.5
    assert [t.name for t in plan.create] == ["tune-t1"]  # the number is never reused
    again = decide("tune", s, plan.status, [trial(1)], [gone], BASE, NOW)  # not gone yet
    assert again.status.ledger.retired_gpu_seconds == 1800 and again.status.trials.succeeded == 1
    after = decide("tune", s, again.status, [trial(1)], [], BASE, NOW)
    assert after.status.ledger.settled_trials == [] and after.status.gpu_hours == 0.5
    assert after.status.trials.created == 2 and after.create == []


def test_a_training_job_reference_waits_until_its_job_succeeded() -> None:
    s = spec(baseModel={"trainingJobRef": {"name": "pretrain"}})
    assert resolve_base(s, None).waiting
    running = {"metadata": {"uid": "u1"}, "spec": {"output": {"uri": "/models/p"}},
               "status": {"phase": "Running"}}
    waiting = decide("tune", s, TuningStatus(), [], [], resolve_base(s, running), NOW)
    assert waiting.create == [] and waiting.status.reason == "WaitingForBaseModel"
    done = {**running, "status": {"phase": "Succeeded", "progress": {"evalLoss": 1.6}}}
    base = resolve_base(s, done)
    assert base.uri == "/models/p"
    plan = decide("tune", s, TuningStatus(), [], [], base, NOW)
    assert plan.status.lineage is not None and plan.status.lineage.uid == "u1"
    assert plan.status.lineage.eval_loss == 1.6
    failed = {**running, "status": {"phase": "Failed", "reason": "ExitCode"}}
    assert decide("tune", s, TuningStatus(), [], [], resolve_base(s, failed),
                  NOW).status.reason == "BaseModelUnavailable"

    # Recorded, the lineage is the base: the job deleted (its TTL), or another job created
    # under its name, changes nothing for the trials still to come.
    recorded = plan.status.lineage
    for now_there in (None, {**running, "metadata": {"uid": "u2"}}, {
            "metadata": {"uid": "u3"}, "spec": {"output": {"uri": "/models/other"}},
            "status": {"phase": "Succeeded"}}):
        again = resolve_base(s, now_there, recorded)
        assert (again.uri, again.lineage) == ("/models/p", recorded)
        later = decide("tune", s, plan.status, [trial(0)], [], again, NOW)
        assert later.status.phase == "Running" and later.status.lineage == recorded


def test_the_status_stays_bounded_however_many_trials() -> None:
    s = spec(search=search(maxTrials=200, parallelTrials=1))
    trials = [trial(n, SUCCEEDED, 3.0 - n / 100) for n in range(150)]
    plan = decide("tune", s, TuningStatus(), trials, [], BASE, NOW)
    assert len(plan.status.top_trials) == 5
    assert [t.name for t in plan.status.top_trials] == [f"tune-t{n}" for n in range(149, 144, -1)]
    assert plan.status.best_trial is not None and plan.status.best_trial.name == "tune-t149"
    assert len(plan.status.model_dump_json()) < 8000


@pytest.mark.parametrize("pruner", [{"type": "median", "startupTrials": 1},
                                    {"type": "asha", "minResource": 10, "reductionFactor": 2}])
def test_the_pruner_stops_a_trial_that_lags_the_others(pruner: dict[str, Any]) -> None:
    s = SearchSpec.model_validate(search(pruner=pruner))
    good = trial(0, SUCCEEDED, 1.5, evals={10: 2.0, 20: 1.7, 40: 1.5})
    fine = trial(1, SUCCEEDED, 1.6, evals={10: 2.1, 20: 1.8, 40: 1.6})
    bad = trial(2, evals={10: 3.5, 20: 3.4})
    better = trial(3, evals={10: 1.9})
    assert [t.name for t in to_prune(s, [good, fine, bad, better])] == ["tune-t2"]
    plan = decide("tune", spec(search=s.wire()), TuningStatus(), [good, fine, bad, better], [],
                  BASE, NOW)
    assert plan.stop["tune-t2"][0] == "Pruned"
    assert "eval loss 3.4000 at step 20" in plan.stop["tune-t2"][1]


def test_a_pruned_trial_counts_and_keeps_its_gpu_hours() -> None:
    s = spec(search=search(maxTrials=2))
    trials = [trial(0, SUCCEEDED, 1.5, gpu_hours=1.0), trial(1, PRUNED, gpu_hours=0.25)]
    plan = decide("tune", s, TuningStatus(), trials, [], BASE, NOW)
    assert plan.status.trials.pruned == 1 and plan.status.gpu_hours == 1.25
    assert plan.status.reason == "SearchComplete"


@pytest.mark.parametrize(("search_spec", "expected"), [
    ({"parameters": [{"path": "optimization.learningRate", "min": 0.1, "max": 0.01}]},
     "spec.search.parameters[0].min: min must not be greater than max"),
    ({"maxTrials": 2, "parallelTrials": 3, "parameters": [LR]},
     "spec.search.parallelTrials: parallelTrials cannot exceed maxTrials"),
    ({"parameters": [{"path": "optimization.learningRate", "min": 0, "max": 1, "scale": "log"}]},
     "spec.search.parameters[0].min: a log scale needs a positive range"),
    ({"algorithm": "grid", "parameters": [LR]},
     "spec.search.parameters: a grid search needs values"),
    ({"parameters": [{"path": "model.size", "values": [1]}]}, "spec.search.parameters[0].path"),
    ({"parameters": [{"path": "method.lora.rank", "values": [4.5]}]},
     "spec.search.parameters[0].values: values of an integer field must be whole numbers"),
    # A range or value the target field cannot take: refused with the parameter and its bound.
    ({"parameters": [{"path": "optimization.learningRate", "min": -0.01, "max": 0.01}]},
     "spec.search.parameters[0]: optimization.learningRate takes values > 0 and <= 10"),
    ({"parameters": [LR, {"path": "optimization.steps", "values": [0, 10]}]},
     "spec.search.parameters[1]: optimization.steps takes values >= 1 and <= 100,000,000"),
    ({"parameters": [{"path": "method.lora.rank", "min": 0, "max": 8}]},
     "spec.search.parameters[0]: method.lora.rank takes values >= 1 and <= 1,024"),
    ({"parameters": [{"path": "method.lora.dropout", "values": [0.1, 1.0]}]},
     "spec.search.parameters[0]: method.lora.dropout takes values >= 0 and < 1"),
])
def test_mentor_run_refuses_impossible_searches_as_the_api_server_does(
        search_spec: dict[str, Any], expected: str) -> None:
    doc = {"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob",
           "metadata": {"name": "tune"}, "spec": {**spec().wire(), "search": search_spec}}
    with pytest.raises(InvalidJob) as refused:
        validate(doc)
    assert any(str(e).startswith(expected) for e in refused.value.errors), refused.value.errors


def test_a_trial_name_held_by_another_owner_is_never_counted_and_the_search_waits() -> None:
    s = spec(search=search(parallelTrials=2))
    plan = decide("tune", s, TuningStatus(), [], [], BASE, NOW, taken=("tune-t0",))
    assert plan.create == [] and plan.status.trials.created == 0
    assert plan.status.phase == "Pending" and plan.status.reason == "ChildNameTaken"
    assert "trainingjob/tune-t0 already exists" in plan.status.conditions[-1].message
    assert [e.type for e in plan.events] == ["Warning"]
    freed = decide("tune", s, plan.status, [], [], BASE, NOW)
    assert [t.name for t in freed.create] == ["tune-t0", "tune-t1"]
    assert freed.status.reason == "TrialsRunning"


def test_a_trials_objective_is_its_result_before_its_last_report() -> None:
    from mentor.decide.trialview import trial_of

    body = {"metadata": {"name": "tune-t0", "labels": {"mentor.dev/trial": "0"}},
            "spec": {}, "status": {"phase": "Succeeded",
                                   "progress": {"evalLoss": 2.5},  # a report of step 50
                                   "result": {"step": 100, "evalLoss": 1.75}}}
    assert trial_of(body).objective == 1.75
    del body["status"]["result"]
    assert trial_of(body).objective == 2.5, "a trainer that said nothing: its last report"


def grid_job(values: int, parameters: int) -> dict[str, Any]:
    numeric = [p for p in TUNABLE if p not in CHOICE][:parameters]
    return {"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob", "metadata": {"name": "g"},
            "spec": spec().wire() | {"search": {"algorithm": "grid", "maxTrials": 2, "parameters": [
                {"path": p, "values": search_values(p, values)} for p in numeric]}}}


def test_a_grid_beyond_the_limit_is_refused_naming_its_size() -> None:
    """`mentor run` gives the API server's verdict: the size in the message, whole, however
    large."""
    with pytest.raises(InvalidJob) as refused:
        validate(grid_job(64, 3))
    assert "spec.search.parameters: this grid has 262,144 points; a grid search may have at " \
           "most 100000 points" in str(refused.value)
    with pytest.raises(InvalidJob, match="this grid has 79,228,162,514,264,337,593,543,950,336 p"):
        validate(grid_job(64, 16))
    validate(grid_job(10, 5))  # 100,000 points: at the limit


CUSTOM = {"type": "custom", "command": ["circles.py"], "args": ["--steps", "40"],
          "env": [{"name": "SEED", "value": "1"}]}


def custom_spec(**search_changes: Any) -> TuningJobSpec:
    return TuningJobSpec.model_validate({
        "trainer": CUSTOM, "output": {"uri": "/models/tune"},
        "search": {"algorithm": "grid", "objective": {"metric": "accuracy",
                                                      "direction": "maximize"},
                   "parameters": [{"name": "lr", "arg": "--lr", "values": [0.1, 1e-4]},
                                  {"name": "width", "env": "WIDTH", "values": [32, 64]}],
                   **search_changes}})


def test_a_custom_trainers_trials_get_the_parameters_as_arguments_and_variables() -> None:
    plan = decide("tune", custom_spec(), TuningStatus(), [], [], resolve_base(custom_spec(),
                  None), NOW)
    trainer = plan.create[0].spec["trainer"]
    assert plan.create[0].params == {"lr": 0.1, "width": 32}
    assert trainer["args"] == ["--steps", "40", "--lr", "0.1"]
    assert trainer["env"] == [{"name": "SEED", "value": "1"}, {"name": "WIDTH", "value": "32"},
                              {"name": "MENTOR_OBJECTIVE", "value": "accuracy"}]
    assert "model" not in plan.create[0].spec, "no base model: the script knows what it trains"


def test_a_custom_trials_objective_and_pruning_follow_its_metric() -> None:
    from mentor.builders.names import JobRef
    from mentor.builders.trials import trial_job
    from mentor.decide.trialview import trial_of

    owner = JobRef(kind="TuningJob", name="tune", namespace="ns", uid="u")
    body = trial_job(owner, 0, {"trainer": CUSTOM}, {"lr": 0.1})
    body["status"] = {"phase": "Succeeded", "progress": {
        "evalLoss": 0.3, "evals": [{"step": 40, "loss": 0.3}], "objective": 0.93,
        "objectives": [{"step": 10, "loss": 0.6}, {"step": 40, "loss": 0.93}]}}
    seen = trial_of(body)
    assert seen.objective == 0.93 and seen.evals == {10: 0.6, 40: 0.93}


@pytest.mark.parametrize(("spec_changes", "expected"), [
    ({"trainer": CUSTOM, "search": {"parameters": [LR]}},
     "a custom trainer's by arg or env"),
    ({"search": {"parameters": [{"name": "lr", "arg": "--lr", "min": 0.1, "max": 1}]}},
     "the built-in trainer's trials are searched by path"),
    ({"search": {"objective": {"metric": "accuracy"}, "parameters": [LR]}},
     "the built-in trainer's trials are ranked by eval_loss"),
    ({"trainer": CUSTOM, "search": {"parameters": [{"arg": "--lr", "min": 0.1, "max": 1}]}},
     "a custom trainer's parameter needs a name"),
    # Preference accuracy ranks DPO's trials only, and higher is better.
    ({"search": {"objective": {"metric": "preference_accuracy", "direction": "maximize"},
                 "parameters": [LR]}},
     "the built-in trainer's trials are ranked by eval_loss (or, with dpo, by "
     "preference_accuracy)"),
    ({"method": {"type": "dpo"}, "data": {"source": "/p.jsonl", "format": "preference"},
      "search": {"objective": {"metric": "preference_accuracy"}, "parameters": [LR]}},
     "set search.objective.direction: maximize"),
    ({"method": {"type": "dpo"}}, "dpo learns from preference pairs: set data.format"),
    ({"data": {"source": "/p.jsonl", "format": "preference"}},
     "preference data is for preference tuning: set method.type: dpo"),
])
def test_searches_that_mix_the_trainers_up_are_refused(spec_changes: dict[str, Any],
                                                      expected: str) -> None:
    doc = {"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob",
           "metadata": {"name": "tune"}, "spec": {**spec().wire(), **spec_changes}}
    with pytest.raises(InvalidJob) as refused:
        validate(doc)
    assert any(expected in str(e) for e in refused.value.errors), refused.value.errors



def test_dpo_trials_search_beta_and_report_preference_accuracy_as_their_objective() -> None:
    dpo = spec(method={"type": "dpo", "dpo": {"loss": "ipo"}},
               data={"source": "/data/pairs.jsonl", "format": "preference"},
               search={"algorithm": "grid", "parameters": [
                   {"path": "method.dpo.beta", "values": [0.1, 0.5]}],
                   "objective": {"metric": "preference_accuracy", "direction": "maximize"}})
    validate({"apiVersion": "mentor.dev/v1alpha1", "kind": "TuningJob",
              "metadata": {"name": "tune"}, "spec": dpo.wire()})
    plan = decide("tune", dpo, TuningStatus(), [], [], BASE, NOW)
    trial = plan.create[0].spec
    assert trial["adaptation"]["dpo"] == {"beta": 0.1, "loss": "ipo", "targetMargin": 0.5,
                                          "weights": "lora"}
    assert {"name": "MENTOR_OBJECTIVE", "value": "preference_accuracy"} in \
        trial["template"]["env"], "the trainer reports the metric its search ranks by"
