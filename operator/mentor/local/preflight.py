"""What `mentor run` checks before it starts torchrun: what would otherwise fail seconds later,
buried under torch's own warnings.

A missing data directory or starting model is one line with the command that fetches it. A job
that asks for GPUs this machine lacks is refused, or run with `--cpu`: as many CPU processes as
it asks GPUs (the same world size, so the same data order and losses), charged no GPU-hours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from mentor.api.kinds import TrainingJob, TuningJob
from mentor.api.training import TrainerSpec
from mentor.local.training import local_code_dir, local_path

Job = TypeVar("Job", TrainingJob, TuningJob)
SAMPLES = ("shakespeare", "python", "preferences")  # what `mentor data <name>` fetches
MAX_PROCESSES = 256  # parallelism.procsPerNode's own limit


class NotRunnable(Exception):
    """The job cannot run on this machine as it is; the message says why and what to do."""


def _missing(field: str, uri: str | None) -> str | None:
    path = local_path(uri)
    if not path or "://" in path or Path(path).is_file() or \
            (Path(path).is_dir() and any(Path(path).iterdir())):
        return None
    fetch = next((f"; `mentor data {name}` puts it there" for name in SAMPLES
                  if uri == f"pvc://datasets/{name}"), "")
    return f"{field} {uri}: nothing at {path}{fetch}"


def check_inputs(job: TrainingJob | TuningJob, here: Path | None = None) -> None:
    """The data, a starting model given as a path, and a custom trainer's code exist here."""
    spec = job.spec
    problems = [_missing("spec.data.source", spec.data.source if spec.data else None)]
    problems.append(_missing_code(job.spec.trainer, here))
    if isinstance(job, TrainingJob):
        problems.append(_missing("spec.model.from",
                                 job.spec.model.from_ if job.spec.model else None))
    else:
        from mentor.local.tuning import TuningFailed, base_uri

        try:
            problems.append(_missing("the base model", base_uri(job)))
        except TuningFailed as e:
            problems.append(str(e))
    found = [p for p in problems if p]
    if found:
        raise NotRunnable("; ".join(found))


def _missing_code(trainer: TrainerSpec, here: Path | None) -> str | None:
    if not trainer.custom:
        return None
    code = local_code_dir(trainer, here)
    if code is not None and not code.is_dir():
        return f"spec.trainer.code: no directory {code}"
    script, where = (trainer.command or [""])[0], code or Path.cwd()
    if script.endswith(".py") and not (where / script).is_file():
        said = (f" (on this machine the ConfigMap's {trainer.code.config_map.key} is the file "
                f"of that name beside the job's YAML)" if trainer.code and
                trainer.code.config_map else "")
        return f"spec.trainer.command: no script {script} in {where}{said}"
    return None


def gpus_here() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def on_this_machine(job: Job, cpu: bool) -> tuple[Job, str | None]:
    """The job as this machine runs it, and what was changed, said aloud (or None)."""
    parallelism = job.spec.parallelism
    if not parallelism.gpus_per_node:
        return job, None
    wanted = parallelism.nodes * parallelism.gpus_per_node
    if not cpu:
        have = gpus_here()
        if have >= wanted:
            return job, None
        raise NotRunnable(
            f"{job.kind} {job.metadata.name} asks for {parallelism.nodes} node(s) x "
            f"{parallelism.gpus_per_node} GPU(s) and this machine has {have} GPU(s): run it on "
            f"a cluster, or here with --cpu as {wanted} CPU processes (slow; no GPU-hours)")
    if wanted > MAX_PROCESSES:
        raise NotRunnable(f"{job.kind} {job.metadata.name} asks for {wanted} GPUs: too many to "
                          f"stand in for with CPU processes (at most {MAX_PROCESSES})")
    on_cpu = parallelism.model_copy(update={"gpus_per_node": None, "nodes": 1,
                                            "procs_per_node": wanted})
    changed = job.model_copy(update={"spec": job.spec.model_copy(
        update={"parallelism": on_cpu})})
    return changed, (f"--cpu: {wanted} CPU processes stand in for {parallelism.nodes} node(s) x "
                     f"{parallelism.gpus_per_node} GPU(s); no GPU-hours are charged")
