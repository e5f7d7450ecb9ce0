"""The CRDs are generated from mentor.api, faithfully, and the committed copies do not drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mentor.api.crd import (
    CHART_CRDS,
    UnsupportedSchema,
    crd,
    model_schema,
    render,
    render_chart_template,
)
from mentor.api.kinds import KINDS, TRAINING_JOB

REPO = Path(__file__).resolve().parents[2]


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += walk(sub, f"{path}.{name}")
    if "items" in node:
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def schema() -> dict[str, Any]:
    return crd(TRAINING_JOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_committed_crds_match_the_models(kind: Any) -> None:
    committed = REPO / "crds" / f"{kind.crd_name}.yaml"
    assert committed.read_text() == render(kind), "run `python -m mentor.api.crd`"
    chart = REPO / CHART_CRDS / f"{kind.crd_name}.yaml"
    assert chart.read_text() == render_chart_template(kind), "run `python -m mentor.api.crd`"


def test_every_field_is_described_and_no_ref_is_left() -> None:
    nodes = [(p, n) for p, n in walk(schema()) if not p.startswith(".metadata")]  # the API
    # server's own, which a CRD may constrain but not describe
    assert len(nodes) > 80
    for path, node in nodes:
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        if path.count(".") and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_wire_names_bounds_enums_and_rules() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    opt = spec["optimization"]["properties"]
    assert "globalBatchSize" in opt and "global_batch_size" not in opt
    assert opt["steps"]["minimum"] == 1
    assert opt["epochs"] == {**opt["epochs"], "minimum": 0, "exclusiveMinimum": True}
    assert spec["parallelism"]["properties"]["strategy"]["enum"] == ["ddp", "fsdp"]
    assert "from" in spec["model"]["properties"]
    assert "maxGPUHours" in spec["runPolicy"]["properties"]
    rules = [r["rule"] for r in spec["optimization"]["x-kubernetes-validations"]]
    assert "has(self.steps) != has(self.epochs)" in rules
    env_rule = spec["template"]["properties"]["env"]["x-kubernetes-validations"][0]["rule"]
    assert "PET_" in env_rule and "MASTER_ADDR" in env_rule


def test_status_is_a_strict_subresource_with_a_condition_map() -> None:
    version = crd(TRAINING_JOB)["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    types = conditions["items"]["properties"]["type"]["enum"]
    assert types == ["Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended",
                     "Stopped", "Tracking"]


def test_printer_columns_short_names_and_category() -> None:
    spec = crd(TRAINING_JOB)["spec"]
    names = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert names == ["Phase", "Nodes", "Reason", "Restarts", "Progress", "Loss", "GPU-Hours",
                     "Age", "ETA"]
    columns = {c["name"]: c for c in spec["versions"][0]["additionalPrinterColumns"]}
    assert all(c["description"] for c in columns.values())
    assert columns["ETA"]["priority"] == 1, "wide only"
    assert columns["Progress"]["jsonPath"] == ".status.progress.shown"
    status = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["completionTime"]["format"] == "date-time"
    assert spec["names"]["categories"] == ["mentor"]
    core_short_names = {"po", "svc", "cm", "ns", "no", "pv", "pvc", "sa", "ds", "rs", "deploy",
                        "job", "cj", "ing", "ep", "ev", "hpa", "pdb", "sts", "crd"}
    assert not set(spec["names"]["shortNames"]) & core_short_names


def test_an_unsupported_type_is_an_error_not_a_weaker_schema() -> None:
    class Ambiguous(BaseModel):
        value: int | str

    with pytest.raises(UnsupportedSchema, match="union"):
        model_schema(Ambiguous)


def test_every_cel_rule_names_a_reason_the_api_server_accepts() -> None:
    import yaml

    supported = {"FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid",
                 "FieldValueRequired"}

    def rules(node: object) -> list[dict[str, str]]:
        if isinstance(node, dict):
            found = list(node.get("x-kubernetes-validations", []))
            return found + [r for value in node.values() for r in rules(value)]
        if isinstance(node, list):
            return [r for item in node for r in rules(item)]
        return []

    crd_file = Path(__file__).resolve().parents[2] / "crds" / "trainingjobs.mentor.dev.yaml"
    found = rules(yaml.safe_load(crd_file.read_text()))
    assert found
    assert {r["reason"] for r in found if "reason" in r} <= supported

