"""Generates the CustomResourceDefinitions from the pydantic models in mentor.api.

`python -m mentor.api.crd [REPO]` writes one YAML per kind into crds/, and the same CRDs as Helm
templates into charts/mentor/templates/crds/. The conversion is strict: anything that a
structural CRD schema cannot express raises, instead of silently producing a weaker schema.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from mentor.api.kinds import GROUP, KINDS, NAME_PATTERN, VERSION, Kind
from mentor.api.tuning import MAX_GRID_POINTS

# Keys copied as they are; the values were already checked by pydantic's schema generation.
_PLAIN = {
    "type", "description", "enum", "default", "format", "pattern", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "uniqueItems", "nullable",
    "x-kubernetes-int-or-string",
}
_DROPPED = {"title", "additionalProperties", "$defs"}  # handled below, or meaningless in a CRD


class UnsupportedSchema(ValueError):
    """A pydantic construct that a structural CRD schema cannot express."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (possibly wrapped in a one-element allOf), keeping sibling keys."""
    node = dict(node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise UnsupportedSchema(f"allOf with {len(parts)} parts")
        node = {**parts[0], **node}
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description wins over the class docstring
    return node


def _optional(node: dict[str, Any]) -> dict[str, Any]:
    """`X | None` becomes X: an absent field is how a CRD says None."""
    if "anyOf" not in node:
        return node
    options = [o for o in node["anyOf"] if o != {"type": "null"}]
    if len(options) != 1:
        raise UnsupportedSchema(f"union of {len(options)} types: {node['anyOf']}")
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]
    return {**options[0], **rest}


def convert(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into an OpenAPI v3.0 structural schema node."""
    node = _optional(_resolve(node, defs))
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PLAIN:
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out["properties"] = {
                name: convert(sub, defs, f"{path}.{name}") for name, sub in value.items()
            }
        elif key == "required":
            out["required"] = list(value)
        elif key == "items":
            out["items"] = convert(value, defs, f"{path}[]")
        elif key in _DROPPED:
            continue
        else:
            raise UnsupportedSchema(f"{path or '<root>'}: {key!r} has no CRD equivalent")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):  # a map: dict[str, X]
        out["additionalProperties"] = convert(extra, defs, f"{path}{{}}")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out and not (out.get("x-kubernetes-preserve-unknown-fields")
                                  or out.get("x-kubernetes-int-or-string")):
        raise UnsupportedSchema(f"{path or '<root>'}: no type")
    if out.get("type") == "number" and isinstance(out.get("default"), int):
        out["default"] = float(out["default"])
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return convert(raw, raw.get("$defs", {}))


def crd(kind: Kind) -> dict[str, Any]:
    spec = model_schema(kind.spec)
    status = model_schema(kind.status)
    status.pop("required", None)
    root: dict[str, Any] = {
        "type": "object",
        "description": f"{kind.kind} is a Mentor job. {kind.spec.__doc__ or ''}".strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "apiVersion is mentor.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"kind is {kind.kind}."},
            # The API server allows a CRD to constrain only metadata.name (and generateName).
            "metadata": {"type": "object", "properties": {"name": {
                "type": "string", "maxLength": kind.max_name_length, "pattern": NAME_PATTERN}}},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [r.to_schema() for r in kind.rules],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "mentor"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["mentor"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": list(kind.columns),
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated by `python -m mentor.api.crd` from mentor.api. Do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


# Limits that are the cluster's to set: in the chart's CRDs each is its value's template.
CHART_LIMITS = {str(MAX_GRID_POINTS): "{{ int .Values.tuning.maxGridPoints }}"}


def _with_markers(node: Any) -> Any:
    """The CRD with each chart limit in its CEL rules and messages as a one-word marker (YAML
    folds long strings at spaces, never inside a word)."""
    if isinstance(node, dict):
        return {k: (_mark(v) if isinstance(v, str) and k in ("rule", "message",
                                                              "messageExpression")
                    else _with_markers(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_markers(v) for v in node]
    return node


def _mark(text: str) -> str:
    for number in CHART_LIMITS:
        text = re.sub(rf"\b{number}\b", f"MENTORCHARTLIMIT{number}", text)
    return text


def render_chart_template(kind: Kind) -> str:
    """The same CRD as a Helm template: gated by crds.enabled, kept on uninstall by crds.keep,
    with the cluster's limits (values.yaml) in its rules."""
    body = yaml.safe_dump(_with_markers(crd(kind)), sort_keys=False, width=100)
    for number, template in CHART_LIMITS.items():
        body = body.replace(f"MENTORCHARTLIMIT{number}", template)
    keep = ("  annotations:\n"
            "    {{- if .Values.crds.keep }}\n"
            "    helm.sh/resource-policy: keep\n"
            "    {{- end }}\n")
    body = body.replace("metadata:\n", "metadata:\n" + keep, 1)
    return ("{{- if .Values.crds.enabled }}\n"
            "# Generated by `python -m mentor.api.crd` from mentor.api. Do not edit.\n"
            + body + "{{- end }}\n")


CHART_CRDS = Path("charts/mentor/templates/crds")


def write(root: Path) -> list[Path]:
    """Write crds/ and the chart's CRD templates under the repository root `root`."""
    written = []
    for directory, render_one in ((root / "crds", render), (root / CHART_CRDS,
                                                              render_chart_template)):
        directory.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            path = directory / f"{kind.crd_name}.yaml"
            path.write_text(render_one(kind))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(p)
