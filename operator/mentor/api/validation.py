"""Validates a job the way the API server does, for `mentor run` where there is no API server.

Two layers, both from mentor.api: pydantic checks types and bounds (the CRD's OpenAPI schema), and
the CEL rules the CRD carries are evaluated with celpy. Errors name the field's path as the API
server would (`spec.optimization.steps: ...`), so a user sees the same message in both places.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from mentor.api.crd import crd
from mentor.api.kinds import KINDS, Kind, TrainingJob, TuningJob

# Identifiers that CEL reserves; the API server exposes such properties as __name__.
CEL_KEYWORDS = frozenset({
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
    "package", "namespace", "return", "var", "void", "while", "in", "true", "false", "null",
})


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidJob(ValueError):
    """A job spec that the API server would reject; `errors` name each field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def _escape(value: Any) -> Any:
    if isinstance(value, dict):
        return {(f"__{k}__" if k in CEL_KEYWORDS else k): _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _rules(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (dotted path with [*] for list items, rule) for every CEL rule in a CRD schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from _rules(schema["items"], f"{path}[*]")


def _values_at(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The values at a dotted path with [*] for list items, with their concrete paths."""
    if not path:
        yield "", obj
        return
    head, _, rest = path.partition(".")
    many = head.endswith("[*]")
    key = head.removesuffix("[*]")
    if not isinstance(obj, dict) or key not in obj:
        return
    value = obj[key]
    if many:
        for i, item in enumerate(value if isinstance(value, list) else []):
            for sub_path, sub in _values_at(item, rest):
                yield f"{key}[{i}]" + (f".{sub_path}" if sub_path else ""), sub
    else:
        for sub_path, sub in _values_at(value, rest):
            yield key + (f".{sub_path}" if sub_path else ""), sub


_env = celpy.Environment()
_programs: dict[str, celpy.Runner] = {}


def _format(template: Any, args: Any) -> celtypes.StringType:
    """Kubernetes' `"...".format([...])` (its strings library) for the verbs Mentor's messages
    use, as the API server writes them: %s, and %d and %.Nf with thousands separators."""
    values = iter(args)

    def verb(match: re.Match[str]) -> str:
        value = next(values)
        if match.group(2) == "s":
            return str(value)
        precision = match.group(1) or (".0" if match.group(2) == "d" else ".6")
        return format(float(value), f",{precision}f")

    return celtypes.StringType(re.sub(r"%(\.\d+)?([dfs])", verb, str(template)))


def _evaluate(expression: str, value: Any) -> Any:
    if expression not in _programs:
        _programs[expression] = _env.program(_env.compile(expression),
                                             functions={"format": _format})
    return _programs[expression].evaluate({"self": json_to_cel(_escape(value))})


def _message(rule: dict[str, Any], value: Any) -> str:
    """The rule's messageExpression where it has one, as the API server evaluates it; on an
    error, its message (as the API server falls back)."""
    if "messageExpression" in rule:
        try:
            return str(_evaluate(rule["messageExpression"], value))
        except (CELEvalError, ValueError, OverflowError):
            pass
    return str(rule["message"])


def cel_errors(kind: Kind, obj: dict[str, Any]) -> list[FieldError]:
    """Evaluate the CRD's CEL rules on an object (with defaults applied). Transition rules that
    need the old object are skipped: there is no old object outside a cluster."""
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = []
    for path, rule in _rules(schema, ""):
        if "oldSelf" in rule["rule"]:
            continue
        for concrete, value in _values_at(obj, path):
            if not bool(_evaluate(rule["rule"], value)):
                where = (concrete + rule.get("fieldPath", "")).lstrip(".")
                errors.append(FieldError(where or "<root>", _message(rule, value)))
    return errors


def _known_fields(kind: Kind, loc: tuple[Any, ...]) -> list[str]:
    """The field names the schema allows where `loc` (a pydantic error location) points."""
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in loc[:-1]:
        schema = schema.get("items", {}) if isinstance(part, int) else \
            schema.get("properties", {}).get(str(part), {})
    return list(schema.get("properties", {}))


def _pydantic_errors(kind: Kind, error: ValidationError) -> list[FieldError]:
    out = []
    for e in error.errors():
        parts: list[str] = []
        for p in e["loc"]:
            if isinstance(p, int):
                parts[-1] += f"[{p}]"
            else:
                parts.append(str(p))
        message = e["msg"]
        if e["type"] == "extra_forbidden":  # a misspelled key, most often
            close = difflib.get_close_matches(str(e["loc"][-1]), _known_fields(kind, e["loc"]),
                                              n=1, cutoff=0.6)
            message = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        out.append(FieldError(".".join(parts), message))
    return out


def _beyond_int64(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        yield path
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _beyond_int64(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _beyond_int64(sub, f"{path}[{i}]")


DOCUMENTS: dict[str, type[TrainingJob] | type[TuningJob]] = {
    "TrainingJob": TrainingJob, "TuningJob": TuningJob}


def validate(obj: dict[str, Any]) -> TrainingJob | TuningJob:
    """Validate a whole object (apiVersion, kind, metadata, spec) or raise InvalidJob."""
    if not isinstance(obj, dict):
        raise InvalidJob([FieldError("<root>", "a job is a YAML mapping of apiVersion, kind, "
                                               "metadata and spec")])
    kind = next((k for k in KINDS if k.kind == obj.get("kind")), None)
    if kind is None:
        known = ", ".join(k.kind for k in KINDS)
        raise InvalidJob([FieldError("kind", f"must be one of {known}, not {obj.get('kind')!r}")])
    too_big = list(_beyond_int64(obj.get("spec"), "spec"))
    if too_big:  # JSON allows them, the API server (and CEL) does not
        raise InvalidJob([FieldError(p, "must be of type integer (64-bit)") for p in too_big])
    try:
        job = DOCUMENTS[kind.kind].model_validate(obj)
    except ValidationError as e:
        raise InvalidJob(_pydantic_errors(kind, e)) from None
    errors = cel_errors(kind, {**obj, "spec": job.spec.wire()})
    if errors:
        raise InvalidJob(errors)
    return job


class UnreadableDocument(ValueError):
    """A job file that cannot be read or is not YAML; the message names the file, on one line."""


def load_document(file: Path) -> Any:
    """A YAML document from a file, as `kubectl apply -f` would read it."""
    try:
        with file.open() as stream:
            return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise UnreadableDocument(f"{file} is not valid YAML: " + " ".join(str(e).split())) \
            from None
    except OSError as e:
        raise UnreadableDocument(f"cannot read {file}: {e.strerror}") from None
