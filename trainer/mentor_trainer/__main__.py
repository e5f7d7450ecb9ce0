"""`torchrun ... -m mentor_trainer --config FILE`: parse the config, build, train.

Every failure ends in a documented exit code (mentor_trainer.errors) and one line that says why:
on stderr, and in torchelastic's error file, from which mentor-torchrun takes the root cause's
reason into the pod's termination message (and the operator into the job's condition).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError

from mentor.api import exitcodes
from mentor.api.results import format_result
from mentor.api.training import TrainerConfig
from mentor_trainer import dist
from mentor_trainer.errors import (
    BadConfig,
    TrainerError,
    out_of_memory,
)
from mentor_trainer.launch import report


def load_config(path: str) -> TrainerConfig:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BadConfig(f"cannot read config {path}: {e.strerror}") from e
    try:
        return TrainerConfig.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise BadConfig(f"config {path} is not JSON: {e}") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadConfig(f"config {path}: {where}: {first['msg']}") from e


def _record(error: BaseException) -> None:
    """Leave the reason in torchelastic's error file (TORCHELASTIC_ERROR_FILE, set per worker by
    torchrun), so the launcher can name the root cause; a no-op outside torchrun."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    with contextlib.suppress(OSError):
        ErrorHandler().record_exception(error)


def _outcome(config: TrainerConfig | None, rank: int, outcome: str, **fields: object) -> None:
    """Rank 0 ends the metrics log with how the run ended, so `mentor report` can say it
    wherever the job ran (the log lives beside the model)."""
    if config is None or rank != 0 or "://" in config.output.uri:
        return
    output = Path(config.output.uri)
    with contextlib.suppress(OSError):
        output.mkdir(parents=True, exist_ok=True)
        with (output / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"time": time.time(), "outcome": outcome, **fields}) + "\n")


def _ended(error: BaseException, code: int, line: str, config: TrainerConfig | None,
           rank: int, outcome: str) -> int:
    print(f"mentor_trainer: {line}", file=sys.stderr)
    _record(error)
    _outcome(config, rank, outcome, exit_code=code, reason=line)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mentor_trainer", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("MENTOR_CONFIG"),
                        help="the trainer config (JSON), as the operator mounts it")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    # Every rank says what it is and what it resumed from; only rank 0 logs the steps.
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(message)s",
                        stream=sys.stderr)
    from mentor_trainer.trainer import Stopped, Trainer, check_world

    config: TrainerConfig | None = None
    try:
        if not args.config:
            raise BadConfig("no config: pass --config FILE or set MENTOR_CONFIG")
        config = load_config(args.config)
        world = dist.init()
        logging.getLogger("mentor_trainer").info(
            "rank %d of %d on %s (node %s, local rank %d)", world.rank, world.size,
            world.device, os.environ.get("GROUP_RANK", "0"), world.local_rank)
        check_world(config, world)
        result = Trainer(config, world).train()
        if world.is_main:
            logging.getLogger("mentor_trainer").info("done: %s", json.dumps(result))
            # The operator takes the final eval loss from here, durable where a report is not.
            report(format_result(result["step"], result["eval_loss"]), quiet=True)
        _outcome(config, rank, "succeeded", exit_code=exitcodes.OK)
        return exitcodes.OK
    except Stopped as e:
        return _ended(e, exitcodes.SIGTERM, str(e), config, rank, "stopped")
    except TrainerError as e:
        return _ended(e, e.exit_code, f"{type(e).__name__}: {e}", config, rank, "failed")
    except torch.OutOfMemoryError as e:
        oom = out_of_memory(e, config.optimization.micro_batch_size if config else None)
        return _ended(oom, oom.exit_code, f"OutOfMemory: {oom}", config, rank, "failed")
    except Exception as e:  # a crash: retriable, with the traceback for the logs
        logging.getLogger("mentor_trainer").exception("crashed")
        line = f"crashed: {type(e).__name__}: {e}".splitlines()[0]
        return _ended(e, exitcodes.CRASH, line, config, rank, "failed")
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
