"""mentor-torchrun names the failure that started it, not the workers torchrun stopped after."""

from __future__ import annotations

from types import SimpleNamespace

from mentor_trainer.launch import exit_code, root_cause


def failure(exitcode: int, timestamp: int) -> SimpleNamespace:
    return SimpleNamespace(exitcode=exitcode, timestamp=timestamp, message="")


def test_the_stopped_workers_are_never_the_root_cause() -> None:
    # Rank 1 was killed; torchrun then stopped rank 0, which checkpointed and wrote its error
    # file (exit 143) a second before torchrun noted the kill.
    rank, first = root_cause({0: failure(143, 100), 1: failure(-9, 101)})
    assert rank == 1 and exit_code(first.exitcode) == 137


def test_otherwise_the_earliest_failure_then_the_lowest_rank() -> None:
    assert root_cause({0: failure(3, 102), 1: failure(2, 101)})[0] == 1
    assert root_cause({0: failure(3, 101), 1: failure(2, 101)})[0] == 0
    assert root_cause({0: failure(-15, 100), 1: failure(143, 99)})[0] == 1, "all stopped"


def test_a_worker_whose_peer_died_is_not_the_root_cause() -> None:
    gloo = {"message": "RuntimeError: [pair.cc:545] Read error [127.0.0.1]:41661: Connection "
                       "reset by peer", "extraInfo": {"timestamp": "100"}}
    crashed = SimpleNamespace(exitcode=128, timestamp=100, message=gloo)
    killed = SimpleNamespace(exitcode=-9, timestamp=101,
                             message="Signal 9 (SIGKILL) received by PID 7")
    rank, first = root_cause({0: crashed, 1: killed})
    assert rank == 1 and exit_code(first.exitcode) == 137
