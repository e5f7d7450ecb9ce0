"""`mentor run job.yaml`: the same job on this machine, with no cluster.

It validates the YAML as the API server would (mentor.api.validation), builds the job's TorchX
AppDef exactly as the operator does for its pods (mentor.builders.launch), and hands it to
TorchX's local scheduler: one machine stands in for every node. `pvc://<claim>/<path>` becomes a
directory under MENTOR_PVC_ROOT. A progress bar follows the trainer's metrics log; Ctrl-C asks
for a checkpoint, and running the command again resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchx.schedulers.local_scheduler import (
    COMBINED_LOG,
    CWDImageProvider,
    LocalScheduler,
    Opts,
)
from torchx.specs import AppDef

from mentor.api import exitcodes
from mentor.api.kinds import TrainingJob, TuningJob
from mentor.api.tracking import LOCAL_ENV, resolved
from mentor.api.training import CODE_DIR_ENV, TrainerSpec, TrainingSections
from mentor.api.validation import load_document, validate
from mentor.builders.launch import ROLE, code_dir, program, trainer_app, user_env
from mentor.builders.storage import map_claims, resolve_pvc
from mentor.local import reruns

QUICKSTART = Path(__file__).parent.parent / "quickstart.yaml"


def pvc_root() -> Path:
    return Path(os.environ.get("MENTOR_PVC_ROOT", Path.home() / ".cache" / "mentor" / "pvc"))


def claim_dir(claim: str) -> str:
    """Where a claim lives on this machine: $MENTOR_PVC_ROOT/<claim>."""
    return str(pvc_root() / claim)


def local_path(uri: str | None) -> str | None:
    """pvc://claim/path -> $MENTOR_PVC_ROOT/claim/path; anything else is left as it is."""
    return resolve_pvc(uri, claim_dir)


def load(path: Path | None) -> TrainingJob | TuningJob:
    """Read and validate a job; mentor.api.validation's InvalidJob names each bad field, and
    UnreadableDocument the file that cannot be read."""
    return validate(load_document(path or QUICKSTART))


def local_config(job: TrainingJob) -> TrainingSections:
    """The trainer's config on this machine: claims as directories, and tracking with the
    defaults a platform would set (MENTOR_TRACKING_URI, MENTOR_TRACKING_EXPERIMENT)."""
    config = map_claims(job.spec.trainer_config(), claim_dir)
    return config.model_copy(update={"tracking": resolved(
        job.spec.tracking, os.environ.get("MENTOR_TRACKING_URI", ""),
        os.environ.get("MENTOR_TRACKING_EXPERIMENT", ""))})


@dataclass
class Outcome:
    exit_code: int
    wall_seconds: float
    last: dict[str, Any]
    eval_loss: float | None
    gpus: int
    log: Path
    evals: dict[int, float] = field(default_factory=dict)  # what a search judges, by step
    objective: float | None = None  # a search's objective: the last eval loss, or metric

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
    evals: dict[int, float] = field(default_factory=dict)
    objectives: dict[int, float] = field(default_factory=dict)  # a trial's objective metric

    @property
    def judged(self) -> dict[int, float]:
        """What a search judges a trial by: its objective metric's values, else eval losses."""
        return self.objectives or self.evals

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
                self.evals[int(record["step"])] = float(record["eval_loss"])
            if "objective" in record:
                self.objectives[int(record["step"])] = float(record["objective"])
            if "loss" in record:
                self.last = record
                steps.append(record)
        return steps


class _Scheduler(LocalScheduler):
    """TorchX's local scheduler, keeping the replica's process: Ctrl-C must give the trainer
    time to checkpoint (TorchX's own cancel kills after 10 s), and its exit code is the
    outcome."""

    def __init__(self) -> None:
        # The venv's bin first: `mentor-torchrun` is found even when the venv is not activated.
        super().__init__("mentor", CWDImageProvider, extra_paths=[str(Path(sys.executable).parent)])
        # TorchX turns SIGINT/SIGTERM into its own exception; Ctrl-C here means "checkpoint".
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.processes: list[subprocess.Popen[bytes]] = []

    def run_local_job(self, args: list[str], env: dict[str, str], stdout: Any, stderr: Any,
                      cwd: str | None = None) -> subprocess.Popen[bytes]:
        proc = super().run_local_job(args, env, stdout, stderr, cwd)
        self.processes.append(proc)
        return proc


def app_for(job: TrainingJob, config_path: Path, here: Path | None = None) -> AppDef:
    """The job's AppDef on this machine: one node running every rank, so the world size (and
    hence the data order and the losses) is the one the cluster would have. A custom trainer's
    code is found from `here` (the job file's directory): its ConfigMap's file is the file of
    that name there, and a relative code.path is relative to it."""
    parallelism = job.spec.parallelism
    # The machine's cores shared among the ranks (one process alone gets them all).
    threads = max(1, (os.cpu_count() or 1) // parallelism.world_size)
    env = {"MENTOR_JOB_NAME": job.metadata.name, "MENTOR_JOB_NAMESPACE": "local",
           "MENTOR_JOB_KIND": job.kind, LOCAL_ENV: "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    env.update(user_env(job.spec))
    code = local_code_dir(job.spec.trainer, here)
    if code:
        env[CODE_DIR_ENV] = str(code)
    return trainer_app(job.metadata.name, image=job.spec.template.image or "local",
                       config_path=str(config_path), nnodes=1, nproc=parallelism.world_size,
                       gpus=parallelism.gpus_per_node or 0, master_addr="127.0.0.1",
                       master_port=_free_port(), env=env, program=program(job.spec))


def local_code_dir(trainer: TrainerSpec, here: Path | None) -> Path | None:
    code = trainer.code
    if code is None:
        return None
    home = here or Path.cwd()
    if code.config_map is not None:
        return home.resolve()
    return (home / (code_dir(trainer, claim_dir) or ".")).resolve()


def prepare(job: TrainingJob, fresh: bool = False) -> reruns.Previous | None:
    """Before a run: --fresh discards the output, then what it holds is checked against the job
    (mentor.local.reruns); raises reruns.Refused when running into it would mix two runs."""
    config = local_config(job)
    output = Path(config.output.uri)
    if fresh:
        reruns.discard(output)
    return reruns.check(output, recorded(job, config))


def recorded(job: TrainingJob, config: TrainingSections) -> dict[str, Any]:
    """The config file a run writes, and a rerun compares: a custom trainer's command and
    args are part of what it ran."""
    wire = config.wire()
    return {**wire, "trainer": job.spec.trainer.wire()} if job.spec.trainer.custom else wire


def run(job: TrainingJob, progress: bool = True,
        stop_when: Callable[[dict[int, float]], bool] | None = None,
        here: Path | None = None) -> Outcome:
    """Run the job to its end. `stop_when` sees the eval losses so far, by step; when it says
    so, the trainer gets SIGTERM (it checkpoints and exits 143), as a pruned trial's pods do."""
    config = local_config(job)
    output = Path(config.output.uri)
    state = output / reruns.STATE
    state.mkdir(parents=True, exist_ok=True)
    config_path = state / "config.json"
    config_path.write_text(json.dumps(recorded(job, config), indent=2))
    metrics_path = output / "metrics.jsonl"
    follower = Follower(metrics_path, metrics_path.stat().st_size if metrics_path.exists() else 0)

    scheduler = _Scheduler()
    started = time.monotonic()
    app = app_for(job, config_path, here)
    dryrun = scheduler.submit_dryrun(app,
                                     cfg=Opts(log_dir=str(state / "logs")))
    app_id = scheduler.schedule(dryrun)
    proc = scheduler.processes[0]
    log_path = Path(dryrun.request.role_log_dirs[ROLE][0]) / COMBINED_LOG
    bar = _bar(progress)
    stopping = False
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            for record in follower.poll():
                bar(record, follower.eval_loss)
            if stop_when and not stopping and follower.judged and stop_when(follower.judged):
                os.killpg(proc.pid, signal.SIGTERM)
                stopping = True
    except KeyboardInterrupt:
        print("\nstopping: asking the trainer to checkpoint (Ctrl-C again to kill)...",
              file=sys.stderr)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    scheduler.describe(app_id)  # TorchX closes the app's logs once it has ended
    scheduler.close()
    follower.poll()
    bar(None, follower.eval_loss)
    if not follower.last:  # nothing new: it resumed at its last step; report the earlier run
        follower = Follower(metrics_path)
        follower.poll()
    gpus = (job.spec.parallelism.gpus_per_node or 0) * job.spec.parallelism.nodes
    code = 128 - proc.returncode if proc.returncode < 0 else proc.returncode
    if job.spec.trainer.custom:  # the built-in trainer ends its log with how it ended; for it
        with metrics_path.open("a") as f:
            f.write(json.dumps({"time": time.time(), "exit_code": code, "outcome": (
                "succeeded" if code == 0 else "stopped" if code == exitcodes.SIGTERM
                else "failed"), "reason": f"the script exited with code {code} (its log says "
                                          "why)"}) + "\n")
    judged = follower.judged
    outcome = Outcome(code, time.monotonic() - started, follower.last, follower.eval_loss, gpus,
                      log_path, dict(judged), judged[max(judged)] if judged else None)
    end_tracking(output, recorded(job, config), outcome, stopping, app.roles[0].env)
    return outcome


def end_tracking(output: Path, config: dict[str, Any], outcome: Outcome, pruned: bool,
                 env: dict[str, str]) -> None:
    """What the launcher does in a pod, with this run's own GPU-hours (GPUs × wall time)."""
    from mentor_trainer import tracking

    if not tracking.settings(config):
        return
    step = max(tracking.Outbox(output).last_steps().values(), default=None)
    ended = {0: "succeeded", exitcodes.SIGTERM: "stopped"}.get(outcome.exit_code, "failed")
    if not tracking.finish(output, config, ended, outcome.gpu_hours, step, pruned=pruned,
                           environ={**os.environ, **env}):
        print(f"tracking: the server did not answer; the records wait in {output}/"
              f"{tracking.STATE_DIR} and go with the next run of this job", file=sys.stderr)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bar(enabled: bool) -> Any:
    """A tqdm bar of steps, with the loss and ETA; without one, a plain line every tenth of
    the run (or 30 s), which a CI log can show."""
    if not enabled:
        return _lines()
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def update(record: dict[str, Any] | None, eval_loss: float | None) -> None:
        if record is None:
            if "bar" in state:
                state["bar"].close()
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=record.get("total_steps"), initial=record["step"] - 1,
                                unit="step", dynamic_ncols=True)
        bar = state["bar"]
        bar.update(record["step"] - bar.n)
        postfix = {"loss": f"{record['loss']:.3f}"}
        if record.get("tokens_per_second") is not None:
            postfix["tok/s"] = f"{record['tokens_per_second']:.0f}"
        if eval_loss is not None:
            postfix["eval"] = f"{eval_loss:.3f}"
        postfix.update({k: f"{v:.3g}" for k, v in record.get("metrics", {}).items()})
        bar.set_postfix(postfix, refresh=False)

    return update


def _lines(every_seconds: float = 30) -> Any:
    state = {"time": 0.0, "tenth": -1, "start": time.monotonic(), "first": 0}

    def update(record: dict[str, Any] | None, eval_loss: float | None) -> None:
        if record is None:
            return
        step, total = record["step"], record.get("total_steps") or record["step"]
        if state["tenth"] < 0:
            state["first"] = step - 1
        tenth = step * 10 // total
        now = time.monotonic()
        if tenth == state["tenth"] and now - state["time"] < every_seconds and step != total:
            return
        state["tenth"], state["time"] = tenth, now
        done = step - state["first"]
        eta = (now - state["start"]) / done * (total - step) if done else 0.0
        evaluated = f"  eval {eval_loss:.3f}" if eval_loss is not None else ""
        speed = f"  {record['tokens_per_second']:.0f} tok/s" \
            if record.get("tokens_per_second") is not None else ""
        named = "".join(f"  {k} {v:.4g}" for k, v in record.get("metrics", {}).items())
        print(f"step {step}/{total}  loss {record['loss']:.3f}{evaluated}{named}{speed}  "
              f"ETA {eta:.0f} s", flush=True)

    return update


def summary(job: TrainingJob, outcome: Outcome) -> str:
    last = outcome.last
    lines = [f"{job.kind} {job.metadata.name}: " + (
        "succeeded" if outcome.exit_code == 0 else
        "stopped with a checkpoint; run the same command again to resume"
        if outcome.exit_code == exitcodes.SIGTERM
        else f"failed with exit code {outcome.exit_code}")]
    if last:
        lines.append(f"  step          {last['step']}/{last.get('total_steps') or '?'}")
        lines.append(f"  final loss    {last['loss']:.4f}")
    if outcome.eval_loss is not None:
        lines.append(f"  eval loss     {outcome.eval_loss:.4f}")
    for name, value in last.get("metrics", {}).items():
        lines.append(f"  {name:<13} {value:.4f}")
    if last.get("tokens_per_second") is not None:
        lines.append(f"  tokens/s      {last['tokens_per_second']:.0f}")
    lines.append(f"  wall time     {outcome.wall_seconds:.1f} s")
    if outcome.gpus:
        lines.append(f"  GPU-hours     {outcome.gpu_hours:.4f} ({outcome.gpus} GPUs)")
    lines.append(f"  output        {local_path(job.spec.output.uri)}")
    lines.append(f"  trainer log   {outcome.log}")
    if outcome.exit_code not in (exitcodes.OK, exitcodes.SIGTERM):
        tail = outcome.log.read_text(errors="replace").splitlines()[-15:]
        lines += ["  trainer log (last lines):", *("    " + ln for ln in tail)]
    if outcome.exit_code == exitcodes.DATA_NOT_FOUND and not job.spec.trainer.custom:
        lines.append("  hint          the data (or the model to start from) is missing; "
                     "`mentor data shakespeare` puts the quickstart's plays in "
                     "pvc://datasets/shakespeare")
    return "\n".join(lines)
