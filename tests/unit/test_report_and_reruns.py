"""`mentor report` states the outcome from the trainer's log; reruns are checked against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mentor.local import reruns
from mentor.report.history import outcome_line, read_history, summary


def write_log(output: Path, records: list[dict[str, Any]]) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    log = output / "metrics.jsonl"
    log.write_text("".join(json.dumps({"time": 1.0, **r}) + "\n" for r in records))
    return log


def steps(n: int, gpus: int = 0) -> list[dict[str, Any]]:
    return [{"step": s, "total_steps": 10, "loss": 4.0 - s / 10, "tokens_per_second": 100.0,
             "seconds_per_step": 1.0, "gpus": gpus} for s in range(1, n + 1)]


def test_a_failed_run_is_called_failed_with_the_trainers_reason(tmp_path: Path) -> None:
    log = write_log(tmp_path, [*steps(6), {"outcome": "failed", "exit_code": 4,
                                          "reason": "NonFiniteLoss: loss is nan at step 6"}])
    line = outcome_line("nan", read_history(log))
    assert line == "nan: failed at step 6/10 (exit code 4): NonFiniteLoss: loss is nan at step 6"


def test_stopped_succeeded_and_unknown_outcomes(tmp_path: Path) -> None:
    stopped = read_history(write_log(tmp_path / "a", [*steps(4), {"outcome": "stopped"}]))
    assert "stopped at step 4/10 with a checkpoint" in outcome_line("a", stopped)
    done = read_history(write_log(tmp_path / "b", [*steps(10), {"outcome": "succeeded"}]))
    assert outcome_line("b", done) == "b: succeeded at step 10/10"
    running = read_history(write_log(tmp_path / "c", steps(3)))
    assert "no outcome yet" in outcome_line("c", running)


def test_only_checkpoints_still_on_disk_are_counted(tmp_path: Path) -> None:
    kept = tmp_path / "checkpoints"
    for step in (8, 10):
        (kept / f"step-{step:08d}").mkdir(parents=True)
    pruned = [{"step": s, "checkpoint": f"/mnt/pvc/models/x/checkpoints/step-{s:08d}"}
              for s in (2, 4, 6, 8, 10)]
    history = read_history(write_log(tmp_path, [*steps(10), *pruned]))
    assert history.checkpoints == [8, 10]
    assert "checkpoints   2 kept (last at step 10)" in summary("x", history)


def test_gpu_hours_are_shown_only_when_the_run_held_gpus(tmp_path: Path) -> None:
    cpu = read_history(write_log(tmp_path / "cpu", steps(3)))
    assert "GPU-hours" not in summary("cpu", cpu)
    gpu = read_history(write_log(tmp_path / "gpu", steps(3, gpus=8)))
    assert "GPU-hours     0.0067" in summary("gpu", gpu)  # 8 GPUs × 3 s


def test_differences_name_each_changed_field() -> None:
    old = {"optimization": {"learningRate": 0.003, "steps": 400}, "model": {"size": "tiny"}}
    new = {"optimization": {"learningRate": 0.001, "steps": 400}, "model": {"size": "small"}}
    assert reruns.differences(old, new) == ['spec.model.size: "tiny" -> "small"',
                                            "spec.optimization.learningRate: 0.003 -> 0.001"]


def test_a_changed_spec_is_refused_and_only_mentors_output_is_discarded(tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / ".mentor").mkdir(parents=True)
    (output / ".mentor" / "config.json").write_text(json.dumps({"optimization": {"seed": 1}}))
    write_log(output, [*steps(10), {"outcome": "succeeded"}])
    with pytest.raises(reruns.Refused, match=r"holds a finished run of a different spec "
                                             r"\(spec.optimization.seed: 1 -> 2\); run with "
                                             r"--fresh"):
        reruns.check(output, {"optimization": {"seed": 2}})
    same = reruns.check(output, {"optimization": {"seed": 1}})
    assert same is not None and same.finished and not same.changes
    reruns.discard(output)
    assert not output.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    with pytest.raises(reruns.Refused, match="not written by mentor run"):
        reruns.discard(foreign)
    assert foreign.exists()


def test_the_readme_memory_table_is_the_functions() -> None:
    from mentor.report.memory import table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "\n".join(table()) in readme, "regenerate it with mentor.report.memory.table()"
