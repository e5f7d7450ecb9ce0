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
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mentor.api import exitcodes

# Where the kubelet collects a container's termination message (the pod sets the same path).
TERMINATION_LOG_ENV = "MENTOR_TERMINATION_LOG"


def exit_code(code: int) -> int:
    """A worker's status as a shell reports it: a signal N is 128 + N, and never 0 on failure."""
    return 128 - code if code < 0 else code or exitcodes.CRASH


TRACEBACK_LINES = 12  # of a crashed worker's traceback, kept in the termination message


def reason(message: object) -> str:
    """A worker's reason as torchelastic read it from the worker's error file: the structured
    form (written by mentor_trainer) holds the one line under "message"."""
    if isinstance(message, dict):
        return str(message.get("message", message))
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


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

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
