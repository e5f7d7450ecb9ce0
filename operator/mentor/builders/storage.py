"""Maps `pvc://<claim>/<path>` URIs in a trainer config to volumes mounted in the pods.

The trainer only ever sees local paths (or s3:// / hf:// URIs it reads itself); which claim is
mounted where is decided here, once, for the operator and the local runner alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mentor.api.training import TrainerConfig

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


def localize(config: TrainerConfig) -> tuple[TrainerConfig, Mounts]:
    """Rewrite every pvc:// URI to its mount path; return the config and the mounts it needs."""
    mounts = Mounts()

    def local(uri: str | None) -> str | None:
        if uri is None or not uri.startswith(PVC_SCHEME):
            return uri
        claim, path = split_pvc(uri)
        root = mounts.add_claim(claim)
        return f"{root}/{path}".rstrip("/")

    wire: dict[str, Any] = config.model_dump(by_alias=True, exclude_none=True)
    wire["model"]["from"] = local(wire["model"].get("from"))
    wire["data"]["source"] = local(wire["data"]["source"])
    wire["output"]["uri"] = local(wire["output"]["uri"])
    wire["checkpointing"]["uri"] = local(wire["checkpointing"].get("uri"))
    return TrainerConfig.model_validate(wire), mounts
