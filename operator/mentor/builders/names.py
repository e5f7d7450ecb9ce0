"""Names and labels of a job's children: deterministic, so an operator restart finds them again."""

from __future__ import annotations

from dataclasses import dataclass

from mentor.api.kinds import API_VERSION
from mentor.api.labels import JOB_KIND, JOB_NAME

CONFIG_MOUNT = "/etc/mentor"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class JobRef:
    """Who owns the children: enough to label them and set their ownerReference."""

    kind: str
    name: str
    namespace: str
    uid: str

    @property
    def service(self) -> str:
        return self.name

    def pod_group(self, attempt: int) -> str:
        """Kueue's group of one attempt: a gang restart is a new workload, admitted whole again;
        the UID keeps a job created again under its name apart from the old one's groups."""
        suffix = f"-{self.uid[:5]}-{attempt}"
        return self.name[:63 - len(suffix)] + suffix

    def pod(self, rank: int) -> str:
        return f"{self.name}-{rank}"

    def labels(self) -> dict[str, str]:
        return {JOB_NAME: self.name, JOB_KIND: self.kind}

    def selector(self) -> str:
        return f"{JOB_NAME}={self.name},{JOB_KIND}={self.kind}"

    def owner_reference(self) -> dict[str, object]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, **labels: str) -> dict[str, object]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**self.labels(), **labels},
            "ownerReferences": [self.owner_reference()],
        }

    def owns(self, obj_metadata: dict[str, object]) -> bool:
        """True only if this job (this UID) controls the object: never adopt another's child."""
        refs = obj_metadata.get("ownerReferences") or []
        assert isinstance(refs, list)
        return any(r.get("controller") and r.get("uid") == self.uid for r in refs)

    def predecessor_owns(self, obj_metadata: dict[str, object]) -> bool:
        """True if an earlier job of this kind and name (another UID) controls the object: the
        garbage collector will take it. A pod with no owner, or another owner, it never will."""
        refs = obj_metadata.get("ownerReferences") or []
        assert isinstance(refs, list)
        return any(r.get("controller") and r.get("kind") == self.kind
                   and r.get("name") == self.name and r.get("uid") != self.uid for r in refs)
