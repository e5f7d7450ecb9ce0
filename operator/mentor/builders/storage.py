"""Maps `pvc://<claim>/<path>` URIs in a trainer config to volumes mounted in the pods.

The trainer only ever sees local paths (or s3:// / hf:// URIs it reads itself); which claim is
mounted where is decided here, once, for the operator and the local runner alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mentor.api.training import TrainingSections

Config = TypeVar("Config", bound=TrainingSections)

PVC_ROOT = "/mnt/pvc"
PVC_SCHEME = "pvc://"


@dataclass
class Mounts:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)

    def add_claim(self, claim: str) -> str:
        name = f"pvc-{claim}"[:63].rstrip("-")
        path = f"{PVC_ROOT}/{claim}"
        if all(v["name"] != name for v in self.volumes):
            self.volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
            self.volume_mounts.append({"name": name, "mountPath": path})
        return path


def split_pvc(uri: str) -> tuple[str, str]:
    """`pvc://claim/a/b` -> ("claim", "a/b")."""
    claim, _, path = uri.removeprefix(PVC_SCHEME).partition("/")
    return claim, path


def resolve_pvc(uri: str | None, root_of: Callable[[str], str]) -> str | None:
    """pvc://<claim>/<path> -> <root_of(claim)>/<path>; any other URI is left as it is."""
    if uri is None or not uri.startswith(PVC_SCHEME):
        return uri
    claim, path = split_pvc(uri)
    return f"{root_of(claim)}/{path}".rstrip("/")


def map_claims(config: Config, root_of: Callable[[str], str]) -> Config:
    """The config with every pvc:// URI (model, tokenizer, data, checkpoints, output) resolved
    by root_of."""
    wire: dict[str, Any] = config.model_dump(by_alias=True, exclude_none=True)
    if "model" in wire:
        wire["model"]["from"] = resolve_pvc(wire["model"].get("from"), root_of)
        wire["model"]["tokenizerFrom"] = resolve_pvc(wire["model"].get("tokenizerFrom"),
                                                     root_of)
    if "data" in wire:
        wire["data"]["source"] = resolve_pvc(wire["data"]["source"], root_of)
    wire["output"]["uri"] = resolve_pvc(wire["output"]["uri"], root_of)
    wire["checkpointing"]["uri"] = resolve_pvc(wire["checkpointing"].get("uri"), root_of)
    return type(config).model_validate(wire)


def localize(config: Config) -> tuple[Config, Mounts]:
    """Rewrite every pvc:// URI to its mount path; return the config and the mounts it needs."""
    mounts = Mounts()
    return map_claims(config, mounts.add_claim), mounts
