"""`mentor-torchrun`: torchrun, with the failed worker's exit code and reason kept.

torchrun itself exits 1 whenever a worker fails, which would erase the difference between a bad
config (permanent) and a killed process (retriable). This launcher runs torchrun in-process and
exits with the root cause's own code: the worker that failed first (a signal N becomes 128 + N).
That worker's one-line reason (which mentor_trainer records in torchelastic's error file) goes to
stderr and to the pod's termination message, where the operator reads it. Arguments are
torchrun's, and PET_* variables configure it as they configure torchrun.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mentor.api import exitcodes
from mentor.api.tracking import LOCAL_ENV
from mentor.api.training import CODE_DIR_ENV, PIP_ENV

# Where the kubelet collects a container's termination message (the pod sets the same path).
TERMINATION_LOG_ENV = "MENTOR_TERMINATION_LOG"


def exit_code(code: int) -> int:
    """A worker's status as a shell reports it: a signal N is 128 + N, and never 0 on failure."""
    return 128 - code if code < 0 else code or exitcodes.CRASH


TRACEBACK_LINES = 12  # of a crashed worker's traceback, kept in the termination message


NO_ERROR_FILE = "To enable traceback see"  # torchelastic's words when a worker left no reason


def reason(message: object) -> str:
    """A worker's reason as torchelastic read it from the worker's error file: the structured
    form (written by mentor_trainer) holds the one line under "message". A script that left
    none (a custom trainer's uncaught exception) is pointed to its log."""
    if isinstance(message, dict):
        return str(message.get("message", message))
    if NO_ERROR_FILE in str(message):
        return ("the process exited without a reason (an uncaught exception prints its "
                "traceback to the log; mentor_trainer.fail() gives a reason)")
    return str(message)


def traceback_tail(message: object) -> str:
    """The last lines of a crashed worker's traceback, from the same error file."""
    if not isinstance(message, dict):
        return ""
    stack = str((message.get("extraInfo") or {}).get("py_callstack") or "")
    return "\n".join(stack.rstrip().splitlines()[-TRACEBACK_LINES:])


# What a worker says when it failed because a peer died first: a consequence, not a cause.
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "remote process exited",
             "Broken pipe", "communicator was aborted")


def root_cause(failures: dict[int, Any]) -> tuple[int, Any]:
    """The failure that started it. Two kinds of failure are consequences, never the cause while
    another failure exists: the workers torchrun stopped with SIGTERM after the first failure
    (exit 143 after a checkpoint, or -15), and those whose collective broke because a peer had
    died (a killed worker writes no error file, so its own time is only when torchrun noticed).
    Then the earliest (torchelastic's timestamps have whole seconds; a tie goes to the lowest
    rank)."""
    def order(item: tuple[int, Any]) -> tuple[bool, int, int]:
        rank, failure = item
        consequence = failure.exitcode in (exitcodes.SIGTERM, -signal.SIGTERM) or any(
            words in reason(failure.message) for words in PEER_GONE)
        return consequence, failure.timestamp, rank

    return min(failures.items(), key=order)


def report(line: str, quiet: bool = False) -> None:
    """Say why on stderr (unless `quiet`), and in the termination message if the container has
    one (the kubelet creates the file; on a plain machine there is none, and nothing is
    written)."""
    if not quiet:
        print(f"mentor-torchrun: {line}", file=sys.stderr, flush=True)
    path = os.environ.get(TERMINATION_LOG_ENV)
    if path and Path(path).is_file():
        with contextlib.suppress(OSError):
            Path(path).write_text(line[:4000] + "\n")


def install(requirements: list[str]) -> Path:
    """A custom trainer's extra packages, installed once per job (the same list, the same
    directory) under its output, where every node and every attempt finds them. Made in a
    directory of its own, then renamed: two nodes installing at once both succeed."""
    import hashlib
    import shutil
    import subprocess

    config = json.loads(Path(os.environ.get("MENTOR_CONFIG", "")).read_text()) \
        if Path(os.environ.get("MENTOR_CONFIG", "")).is_file() else {}
    output = Path(config.get("output", {}).get("uri") or ".")
    digest = hashlib.sha256(json.dumps(requirements).encode()).hexdigest()[:16]
    target = output / ".mentor" / "pip" / digest
    if target.is_dir():
        return target
    partial = target.with_name(f"{digest}.{os.getpid()}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir",
         "--disable-pip-version-check", "--target", str(partial), *requirements],
        capture_output=True, text=True, check=False)
    if done.returncode:
        shutil.rmtree(partial, ignore_errors=True)
        said = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise InstallFailed(f"pip could not install {' '.join(requirements)} "
                            f"({said[-1].strip() if said else 'no reason given'}): build an "
                            "image FROM the trainer image with them, or let the pods reach a "
                            "package index")
    with contextlib.suppress(OSError):  # another node's rename came first: theirs is as good
        partial.rename(target)
    shutil.rmtree(partial, ignore_errors=True)
    return target


class InstallFailed(Exception):
    """trainer.pip could not be installed: the same spec would fail again (exit code 2)."""


OUTCOMES = {0: "succeeded", exitcodes.SIGTERM: "stopped"}


def end_tracking(code: int) -> None:
    """Node 0 ends the attempt's run in the tracker: its outcome, the ledger's GPU-hours as the
    operator counts them now, and whether the operator is pruning it. Best effort, bounded: a
    server that is down keeps the records in the outbox for the next attempt."""
    if os.environ.get("PET_NODE_RANK", "0") != "0" or os.environ.get(LOCAL_ENV):
        return
    path = Path(os.environ.get("MENTOR_CONFIG", ""))
    config = json.loads(path.read_text()) if path.is_file() else {}
    from mentor_trainer import tracking
    from mentor_trainer.reporting import operator_reporter

    if not tracking.settings(config):
        return
    output = Path((config.get("output") or {}).get("uri") or ".")
    step = max(tracking.Outbox(output).last_steps().values(), default=None)
    reporter = operator_reporter()
    if reporter is not None and step is not None:
        reporter.send({"step": step, "ledger": True})
        reporter.flush(5.0)
    with contextlib.suppress(Exception):  # tracking never changes how an attempt ends
        tracking.finish(output, config, OUTCOMES.get(code, "failed"),
                        reporter.gpu_hours if reporter else None, step,
                        pruned=bool(reporter and reporter.stop_reason == "Pruned"),
                        timeout=10.0)  # GPUs held idle cost more than a late record


def main(argv: list[str] | None = None) -> int:
    code = run(argv)
    end_tracking(code)
    return code


def run(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    where = os.environ.get(CODE_DIR_ENV)
    paths = [where] if where else []
    if os.environ.get(PIP_ENV):
        try:
            paths.append(str(install(json.loads(os.environ[PIP_ENV]))))
        except InstallFailed as e:
            report(f"exit code {exitcodes.BAD_CONFIG}: {e}")
            return exitcodes.BAD_CONFIG
    if where:  # a custom trainer's script and modules are found where its code is
        os.chdir(where)
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (*paths, os.environ.get("PYTHONPATH")) if p)
    try:
        torchrun(argv if argv is not None else sys.argv[1:])
    except SignalException as e:
        # torchrun was told to stop (SIGTERM on preemption or deletion): it passed the signal on
        # to the workers and gave them time to checkpoint. Report it as the signal it was.
        code = 128 + int(e.sigval)
        report(f"exit code {code}: stopped by signal {int(e.sigval)} ({e.sigval.name})")
        return code
    except ChildFailedError as e:
        rank, first = root_cause(e.failures)
        code = exit_code(first.exitcode)
        line = f"exit code {code} from rank {rank}: {reason(first.message)}"
        if code == exitcodes.CRASH:  # a crash is explained by where it happened
            line += "\n" + traceback_tail(first.message)
        report(line.rstrip())
        return code
    except Exception as e:  # torchrun itself failed (the rendezvous, most often): worth a retry
        first_line = f"{type(e).__name__}: {e}".splitlines()[0]
        report(f"exit code {exitcodes.CRASH}: torchrun failed: {first_line}")
        return exitcodes.CRASH
    return 0


if __name__ == "__main__":
    sys.exit(main())
