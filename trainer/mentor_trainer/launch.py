"""`mentor-torchrun`: torchrun, with the workers' exit codes kept.

torchrun itself exits 1 whenever a worker fails, which would erase the difference between a bad
config (permanent) and a killed process (retriable). This wrapper runs torchrun in-process and
exits with the first failed worker's own code (a signal N becomes 128 + N). Arguments are
torchrun's, and PET_* variables configure it as they configure torchrun.
"""

from __future__ import annotations

import sys

from mentor_trainer.errors import EXIT_CRASH


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv if argv is not None else sys.argv[1:])
    except SignalException as e:
        # torchrun was told to stop (SIGTERM on preemption): it passed the signal on to the
        # workers and gave them time to checkpoint. Report it as the signal it was.
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        if not e.failures:
            return EXIT_CRASH
        _, first = e.get_first_failure()  # the root cause; the others were stopped after it
        code = first.exitcode
        return 128 - code if code < 0 else code or EXIT_CRASH
    return 0


if __name__ == "__main__":
    sys.exit(main())
