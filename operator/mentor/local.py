"""`mentor run job.yaml`: the same job on this machine, with no cluster.

It validates the YAML as the API server would (mentor.validation), then starts the trainer with
the command and PET_* environment from mentor.builders.pods, the same ones the operator gives a
pod. `pvc://<claim>/<path>` becomes a directory under MENTOR_PVC_ROOT. A progress bar follows the
trainer's metrics log; Ctrl-C asks for a checkpoint, and running the command again resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mentor.api.kinds import TrainingJob
from mentor.api.training import TrainerConfig
from mentor.builders.pods import torchrun_env, trainer_command
from mentor.builders.storage import map_claims, resolve_pvc
from mentor.validation import validate

QUICKSTART = Path(__file__).with_name("quickstart.yaml")
EXIT_SIGTERM = 143


def pvc_root() -> Path:
    return Path(os.environ.get("MENTOR_PVC_ROOT", Path.home() / ".cache" / "mentor" / "pvc"))


def claim_dir(claim: str) -> str:
    """Where a claim lives on this machine: $MENTOR_PVC_ROOT/<claim>."""
    return str(pvc_root() / claim)


def local_path(uri: str | None) -> str | None:
    """pvc://claim/path -> $MENTOR_PVC_ROOT/claim/path; anything else is left as it is."""
    return resolve_pvc(uri, claim_dir)


def load(path: Path | None) -> TrainingJob:
    """Read and validate a job; mentor.validation.InvalidJob names each bad field."""
    text = (path or QUICKSTART).read_text()
    return validate(yaml.safe_load(text))


def local_config(job: TrainingJob) -> TrainerConfig:
    return map_claims(job.spec.trainer_config(), claim_dir)


@dataclass
class Outcome:
    exit_code: int
    wall_seconds: float
    last: dict[str, Any]
    eval_loss: float | None
    gpus: int
    log: Path

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.wall_seconds / 3600


@dataclass
class Follower:
    """Reads the records the trainer appends to its metrics log, keeping the latest ones."""

    path: Path
    offset: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    eval_loss: float | None = None

    def poll(self) -> list[dict[str, Any]]:
        """The new training-step records (complete lines only) since the last poll."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            complete = [ln for ln in f.readlines() if ln.endswith("\n")]
        self.offset += sum(len(ln.encode()) for ln in complete)
        steps = []
        for record in map(json.loads, complete):
            if "eval_loss" in record:
                self.eval_loss = record["eval_loss"]
            if "loss" in record:
                self.last = record
                steps.append(record)
        return steps


def run(job: TrainingJob, progress: bool = True) -> Outcome:
    config = local_config(job)
    output = Path(config.output.uri)
    state = output / ".mentor"
    state.mkdir(parents=True, exist_ok=True)
    config_path = state / "config.json"
    config_path.write_text(json.dumps(config.wire(), indent=2))
    parallelism = job.spec.parallelism
    name = job.metadata.name

    env = {
        **os.environ,
        # One machine stands in for every node: all ranks run here, so the world size (and
        # hence the data order and the losses) is the one the cluster would have.
        **torchrun_env(1, parallelism.world_size, 0, "127.0.0.1", _free_port()),
        "MENTOR_CONFIG": str(config_path),
        "MENTOR_JOB_NAME": name, "MENTOR_JOB_NAMESPACE": "local", "MENTOR_JOB_KIND": job.kind,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    for var in job.spec.template.env:
        if var.value is not None:
            env[var.name] = var.value
    command = trainer_command(str(config_path))
    command[0] = str(Path(sys.executable).with_name("mentor-torchrun"))
    log_path = state / "trainer.log"
    metrics_path = output / "metrics.jsonl"
    follower = Follower(metrics_path, metrics_path.stat().st_size if metrics_path.exists() else 0)

    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        bar = _bar(progress)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                for record in follower.poll():
                    bar(record, follower.eval_loss)
        except KeyboardInterrupt:
            print("\nstopping: asking the trainer to checkpoint (Ctrl-C again to kill)...",
                  file=sys.stderr)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait()
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        follower.poll()
        bar(None, follower.eval_loss)
    if not follower.last:  # nothing new: it resumed at its last step; report the earlier run
        follower = Follower(metrics_path)
        follower.poll()
    gpus = (parallelism.gpus_per_node or 0) * parallelism.nodes
    return Outcome(proc.returncode, time.monotonic() - started, follower.last,
                   follower.eval_loss, gpus, log_path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bar(enabled: bool) -> Any:
    """A tqdm bar of steps, with the loss and ETA; a no-op when disabled."""
    if not enabled:
        return lambda record, eval_loss: None
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def update(record: dict[str, Any] | None, eval_loss: float | None) -> None:
        if record is None:
            if "bar" in state:
                state["bar"].close()
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=record["total_steps"], initial=record["step"] - 1,
                                unit="step", dynamic_ncols=True)
        bar = state["bar"]
        bar.update(record["step"] - bar.n)
        postfix = {"loss": f"{record['loss']:.3f}",
                   "tok/s": f"{record['tokens_per_second']:.0f}"}
        if eval_loss is not None:
            postfix["eval"] = f"{eval_loss:.3f}"
        bar.set_postfix(postfix, refresh=False)

    return update


def summary(job: TrainingJob, outcome: Outcome) -> str:
    last = outcome.last
    lines = [f"{job.kind} {job.metadata.name}: " + (
        "succeeded" if outcome.exit_code == 0 else
        "stopped with a checkpoint; run the same command again to resume"
        if outcome.exit_code == EXIT_SIGTERM else f"failed with exit code {outcome.exit_code}")]
    if last:
        lines.append(f"  step          {last['step']}/{last['total_steps']}")
        lines.append(f"  final loss    {last['loss']:.4f}")
    if outcome.eval_loss is not None:
        lines.append(f"  eval loss     {outcome.eval_loss:.4f}")
    if last:
        lines.append(f"  tokens/s      {last['tokens_per_second']:.0f}")
    lines.append(f"  wall time     {outcome.wall_seconds:.1f} s")
    if outcome.gpus:
        lines.append(f"  GPU-hours     {outcome.gpu_hours:.4f} ({outcome.gpus} GPUs)")
    lines.append(f"  output        {local_path(job.spec.output.uri)}")
    if outcome.exit_code not in (0, EXIT_SIGTERM):
        tail = outcome.log.read_text(errors="replace").splitlines()[-15:]
        lines += ["  trainer log (last lines):", *("    " + ln for ln in tail)]
    return "\n".join(lines)
