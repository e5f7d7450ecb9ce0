"""Building blocks shared by every API model: wire names, CEL rules and embedded Kubernetes types.

The pydantic models are the one schema source. The CRDs are generated from them
(mentor.api.crd), and the local runner validates with them, CEL rules included, so a spec gets
the same verdict with or without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A CEL rule for `x-kubernetes-validations`, checked by the API server and by `mentor run`.

    `field_path` points the error at a field (as the API server reports it); `reason` is one of the
    API server's (FieldValueInvalid, FieldValueForbidden, FieldValueRequired, FieldValueDuplicate).
    A rule that uses `oldSelf` is a transition rule: only the API server can check it.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    message_expression: str | None = None  # a message computed from the object (CEL string)

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _add_rules(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: list[Rule] = list(getattr(cls, "cel_rules", ()))
    if rules:
        schema["x-kubernetes-validations"] = [r.to_schema() for r in rules]


class ApiModel(BaseModel):
    """Base of all spec and status models: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_rules,
    )
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, without unset defaults' noise."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# A Kubernetes object embedded as is (affinity, a volume, resource requirements): the API server
# keeps it whole and validates it when the pod is created. The CRD marks it explicitly instead of
# pretending to know its schema.
KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

# A DNS-1123 subdomain-ish name of another object (a PVC, a Secret, a PriorityClass).
ObjectName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]

# A URI to data, a model or a checkpoint: hf://, s3://, pvc://<claim>/<path>, or a plain path.
# No `..` segment: a URI never climbs out of the claim or bucket it names.
NO_PARENT_SEGMENTS = {"rule": "!self.matches('(^|/)[.][.](/|$)')",
                      "message": "may not contain '..' segments", "reason": "FieldValueInvalid"}
Uri = Annotated[str, Field(min_length=1, max_length=2048,
                           json_schema_extra={"x-kubernetes-validations": [NO_PARENT_SEGMENTS]})]
