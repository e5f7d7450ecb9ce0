"""Fuzzing: 1,000 specs generated from the pydantic models, and hand-written nasty ones.

Each spec goes to the real API server. A refused one must name the field at fault; an accepted
one is created for real and the operator must give it a status. `mentor run`'s validator sees
every spec too and must answer (accept, or refuse with field paths), never crash. At the end the
operator has logged no traceback (the session's `operator` fixture asserts it).
"""

from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fuzz_specs import GENERATED, drawn_specs
from harness import CHART_MEMORY_LIMIT_MIB, training_job
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mentor.api.validation import InvalidJob, validate

GROUP, VERSION, PLURAL = "mentor.dev", "v1alpha1", "trainingjobs"
pytestmark = pytest.mark.cluster


def hand_written() -> list[dict[str, Any]]:
    base = training_job("x")["spec"]
    nasty: list[dict[str, Any]] = [
        {"template": {"env": [{"name": name, "value": "1"}]}}
        for name in ("PET_NNODES", "MASTER_ADDR", "RANK", "TORCHELASTIC_RUN_ID",
                     "MENTOR_REPORT_TOKEN")
    ]
    nasty += [
        {"template": {"env": [{"name": f"V{i}", "value": "x"} for i in range(10_000)]}},
        {"output": {"uri": "/models/" + "é" * 5000}},
        {"data": {"source": "pvc://ünïcødé/数据/📚.txt"}},
        {"model": {"size": "tiny\u0000"}},
        {"optimization": {"steps": "100"}},
        {"optimization": {"learningRate": "1e-3"}},
        {"parallelism": {"nodes": 1.5}},
        {"parallelism": {"nodes": -1}},
        {"runPolicy": {"backoffLimit": 2**63}},
        {"template": {"resources": {"limits": {"cpu": "-1"}}}},
        {"template": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}},
        {"template": {"volumes": [{"emptyDir": {}}]}},  # no name: the client refuses it
        {"scheduling": {"nodeSelector": {"a" * 300: "b"}}},
        {"unknownField": True},
    ]
    return [{**copy.deepcopy(base), **n} for n in nasty]


def field_named(body: dict[str, Any]) -> bool:
    """The API server's refusal names a field of the spec (or the object's schema)."""
    causes = (body.get("details") or {}).get("causes") or []
    fields = [c.get("field", "") for c in causes]
    return any(f.startswith("spec") for f in fields) or "spec." in body.get("message", "")


@pytest.fixture(scope="module")
def specs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The generated specs (drawn in a child process since the session began, or here when it
    was not started) and the hand-written ones."""
    return drawn_specs(request.config) + hand_written()


def test_every_spec_is_refused_with_its_field_or_accepted_and_handled(
        specs: list[dict[str, Any]], control_plane: Any, operator: Any, namespace: str) -> None:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    custom = client.CustomObjectsApi(api)

    def body(i: int, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
                "metadata": {"name": f"fuzz-{i}"}, "spec": spec}

    def admit(item: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
        """The API server's verdict, as a server-side dry run: None if accepted."""
        i, spec = item
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                   body(i, spec), dry_run="All")
            return i, None
        except ApiException as e:
            refusal = json.loads(e.body)
            refusal["code"] = e.status
            return i, refusal

    with ThreadPoolExecutor(8) as pool:
        verdicts = dict(pool.map(admit, enumerate(specs)))
    refused = {i: b for i, b in verdicts.items() if b is not None}
    odd = {i: (b["code"], b.get("message", "")[:200]) for i, b in refused.items()
           if b["code"] not in (400, 413, 422)}
    assert not odd, f"refused with an unexpected status: {list(odd.items())[:5]}"
    accepted = [i for i, b in verdicts.items() if b is None]
    unnamed = {i: b.get("message", "")[:200] for i, b in refused.items() if not field_named(b)}
    assert not unnamed, f"refused without naming the field: {list(unnamed.items())[:5]}"

    agree = 0
    for i, spec in enumerate(specs):  # mentor run answers every one of them, never crashes
        errors: list[Any] = []
        try:
            validate(body(i, spec))
        except InvalidJob as e:
            errors = e.errors or [None]
        assert all(err and err.path for err in errors), (i, errors)
        agree += bool(errors) == (i in refused)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(i, specs[i])), accepted))
    deadline = time.monotonic() + 180
    while True:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        without = [j["metadata"]["name"] for j in items
                   if not (j.get("status") or {}).get("phase")]
        if not without or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not without, f"jobs left without a status: {without[:10]}"
    for j in items:  # a job that failed says why
        if j["status"]["phase"] == "Failed":
            failed = next(c for c in j["status"]["conditions"] if c["type"] == "Failed")
            assert failed["reason"] and failed["message"], j["status"]
    assert operator.proc.poll() is None, "the operator crashed"
    phases: dict[str, int] = {}
    for j in items:
        phase = j["status"]["phase"]
        phases[phase] = phases.get(phase, 0) + 1
    print(f"\nfuzzed {len(specs)} specs ({GENERATED} generated, {len(specs) - GENERATED} "
          f"hand-written): {len(refused)} refused with a field path, {len(accepted)} accepted "
          f"and handled ({phases}); mentor run agreed with the API server on {agree}")
    assert accepted and refused, "the generator covers both sides"
    rss = operator.rss_mib()
    print(f"operator RSS after the fuzz set: {rss:.0f} MiB")
    assert rss < CHART_MEMORY_LIMIT_MIB, "the chart's limit would OOM-kill it"
