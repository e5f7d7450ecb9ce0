"""Generates charts/mentor/README.md from the `# --` comments of values.yaml (as helm-docs
does): `python tests/chart/chart_readme.py > charts/mentor/README.md`. A test keeps it current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "mentor"

HEADER = """# The Mentor chart

Installs the Mentor operator: its CRDs, {replicas} replicas (one leads through a Lease), RBAC, a
Service for metrics and progress reports, and optionally Prometheus Operator monitors, alert
rules and a Grafana dashboard. The repository's README explains installing, upgrading and
troubleshooting; this page lists every value.

```bash
helm install mentor charts/mentor --namespace mentor-system --create-namespace \\
  --set watchNamespaces='{{team-a,team-b}}'     # or --set allNamespaces=true
```

Generated from `values.yaml` by `tests/chart/chart_readme.py`; edit the comments there.

| Key | Default | Description |
| --- | --- | --- |
"""


def _lookup(values: dict[str, Any], path: list[str]) -> Any:
    node: Any = values
    for key in path:
        node = node[key]
    return node


def rows() -> list[tuple[str, str, str]]:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    out, stack, comment = [], [], []  # stack: (indent, key)
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
        elif stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
        elif stripped and not stripped.startswith("-") and ":" in stripped:
            key = stripped.split(":", 1)[0].strip().strip('"')
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            if comment:
                path = [k for _, k in stack]
                default = json.dumps(_lookup(values, path), ensure_ascii=False)
                out.append((".".join(path), default, " ".join(comment)))
            comment = []
        elif not stripped.startswith("#"):
            comment = []
    return out


def render() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = [f"| `{key}` | `{default}` | {text.replace('|', '/')} |"
             for key, default, text in rows()]
    return HEADER.format(replicas=values["operator"]["replicas"]) + "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
