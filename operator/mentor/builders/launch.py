"""What a trainer runs, described once, as a TorchX `AppDef`.

The operator turns this AppDef into pods (mentor.builders.pods, through TorchX's `role_to_pod`)
and `mentor run` hands the very same AppDef to TorchX's local scheduler (mentor.local.training).
So the command, its arguments and the torchrun environment are written here and nowhere else.

It starts from TorchX's `dist.torchrun` component: one role, one replica per node, a GPU
resource and the c10d port. Three things of that component do not fit Mentor, and are replaced:

- Its command is `bash -c "torchrun ..."`. torchrun exits 1 whenever a worker fails, which erases
  the difference between a bad config (2, permanent) and a killed worker (137, retriable). The
  entrypoint is `mentor-torchrun` instead: torchrun itself, exiting with the failed worker's code.
- Its rendezvous flags read the host of rank 0 from a scheduler-specific variable. Mentor passes
  the rendezvous as the `PET_*` variables Kubeflow uses, so existing trainer scripts work and a
  pod's environment says everything torchrun needs.
- Its CPU and memory defaults (2 CPUs, 1 GiB) would become pod limits; requests come from the
  job's `template.resources` instead.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable

from torchx import specs
from torchx.components import dist

from mentor.api.training import PIP_ENV, TrainerSpec, TrainingJobSpec
from mentor.builders.storage import resolve_pvc

LAUNCHER = "mentor-torchrun"  # the trainer image's entrypoint: torchrun that keeps exit codes
TRAINER_MODULE = "mentor_trainer"
ROLE = "trainer"
TRAINER_METRICS_PORT = 9090  # rank 0's own /metrics, for a PodMonitor
# Where the launcher writes the root cause of a failure; the kubelet reads it into the pod's
# `state.terminated.message`, and the operator into the job's condition.
TERMINATION_LOG = "/dev/termination-log"
CODE_MOUNT = "/mentor/code"  # a custom trainer's code from a ConfigMap


def torchrun_env(nnodes: int, nproc: int, node_rank: str, master_addr: str,
                 master_port: int) -> dict[str, str]:
    """The PET_* variables, named as Kubeflow names them, so existing trainer scripts work."""
    return {
        "PET_NNODES": str(nnodes),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NODE_RANK": node_rank,
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
    }


def trainer_app(name: str, *, image: str, config_path: str, nnodes: int, nproc: int,
                gpus: int, master_addr: str, master_port: int,
                env: dict[str, str], program: list[str] | None = None) -> specs.AppDef:
    """One role of `nnodes` replicas, each `mentor-torchrun -m mentor_trainer --config FILE`,
    or `mentor-torchrun <program>` for a custom trainer (its script or -m module, and args).

    A replica's node rank is TorchX's `${replica_id}` macro: `replica(app, rank)` fills it in.
    """
    role_env = {
        **torchrun_env(nnodes, nproc, specs.macros.replica_id, master_addr, master_port),
        "MENTOR_CONFIG": config_path,
        "MENTOR_TERMINATION_LOG": TERMINATION_LOG,
        "LOGLEVEL": "WARNING",  # torchrun's own logging; fixed here so the build stays pure
        **env,
    }
    app = dist.torchrun(m=TRAINER_MODULE, image=image, name=name, j=f"{nnodes}x{nproc}",
                        gpu=gpus, env=role_env, rdzv_port=master_port, max_retries=0)
    role = app.roles[0]
    role.name = ROLE
    role.entrypoint = LAUNCHER
    role.args = program or ["-m", TRAINER_MODULE, "--config", config_path]
    role.resource = specs.Resource(cpu=0, gpu=gpus, memMB=0)
    role.port_map["metrics"] = TRAINER_METRICS_PORT
    return app


def _macros(app: specs.AppDef, node_rank: int) -> specs.macros.Values:
    return specs.macros.Values(img_root="", app_id=app.name, replica_id=str(node_rank),
                               rank0_env="PET_MASTER_ADDR")


def replica(app: specs.AppDef, node_rank: int) -> specs.Role:
    """The role of one node, with TorchX's macros substituted as a scheduler would."""
    return _macros(app, node_rank).apply(app.roles[0])


def replica_command_and_env(app: specs.AppDef,
                            node_rank: int) -> tuple[list[str], dict[str, str]]:
    """What the macros make of one node's command and environment, the only parts of a role
    they change that a pod carries: `replica` without its deep copy of the whole role, and
    with the macros' values taken once rather than once a string."""
    role, values = app.roles[0], _macros(app, node_rank).to_dict()
    args = [string.Template(arg).safe_substitute(values) for arg in role.args]
    env = {key: string.Template(value).safe_substitute(values)
           for key, value in role.env.items()}
    return [role.entrypoint, *args], env


def command(role: specs.Role) -> list[str]:
    """The process a replica runs: what a pod's `command` is, and what `mentor run` starts."""
    return [role.entrypoint, *role.args]


def user_env(spec: TrainingJobSpec) -> dict[str, str]:
    """The variables the job's author set with values (template's, then the trainer's), and
    the requirements the launcher installs for a custom trainer."""
    env = {e.name: e.value for e in [*spec.template.env, *(spec.trainer.env or [])]
           if e.value is not None}
    if spec.trainer.pip:
        env[PIP_ENV] = json.dumps(spec.trainer.pip)
    return env


def program(spec: TrainingJobSpec) -> list[str] | None:
    """What torchrun runs for a custom trainer (None: Mentor's own)."""
    trainer = spec.trainer
    return [*(trainer.command or []), *(trainer.args or [])] if trainer.custom else None


def code_dir(trainer: TrainerSpec, root_of: Callable[[str], str]) -> str | None:
    """The directory a custom trainer's command runs in: its ConfigMap's mount, or its path
    (a pvc:// path through root_of)."""
    code = trainer.code
    if code is None:
        return None
    if code.config_map is not None:
        return CODE_MOUNT
    return resolve_pvc(code.path, root_of)

