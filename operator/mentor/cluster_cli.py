"""The `mentor` commands for jobs on a cluster, built on the SDK (mentor.sdk).

Each prints what a person needs, or with `--output json|yaml` what a script needs, and ends with
the next useful commands. Errors are raised as mentor.sdk's one-line MentorErrors.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mentor.sdk import Client, Job, JobFailed, MentorError

COLUMNS = ("NAME", "PHASE", "REASON", "NODES", "PROGRESS", "LOSS", "RESTARTS", "GPU-HOURS",
           "AGE")


def emit(data: Any, output: str | None) -> bool:
    """Print `data` for a script if asked to; say whether it was."""
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return output is not None


def hint(*commands: str) -> None:
    print("\nnext: " + "\n      ".join(commands))


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    seconds = int((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(
        timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def row(job: Job) -> tuple[str, ...]:
    status, progress = job.status, job.progress
    reason = next((c.get("reason", "") for c in reversed(status.get("conditions", []))
                   if c.get("status") == "True" and c["type"] in ("Failed", "Restarting")), "")
    percent = progress.get("percent")
    loss = progress.get("loss")
    return (job.name, job.phase or "-", reason or "-",
            str(job.raw["spec"].get("parallelism", {}).get("nodes", 1)),
            f"{percent:.0f}%" if percent is not None else "-",
            f"{loss:.4f}" if loss is not None else "-", str(status.get("restarts", 0)),
            f"{status.get('gpuHours', 0):.2f}", age(job.raw["metadata"].get("creationTimestamp")))


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [COLUMNS, *rows])


def submit(client: Client, file: Path, wait: bool, output: str | None) -> int:
    from mentor.cli import load_yaml

    job = client.submit(load_yaml(file))
    if emit(job.raw, output):
        return 0
    print(f"trainingjob {job.name} submitted to namespace {job.namespace}")
    if not wait:
        hint(f"mentor logs {job.name} -f", f"mentor get {job.name}",
             f"mentor describe {job.name}")
        return 0
    return watch(client, job.name)


def watch(client: Client, name: str) -> int:
    """A live bar (step, loss, ETA, GPU-hours) until the job ends; non-zero if it fails."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)

    def show(job: Job) -> None:
        p = job.progress
        if p.get("totalSteps"):
            bar.total = p["totalSteps"]
        bar.n = p.get("step", 0)
        bar.set_postfix_str(
            f"{job.phase or 'Pending'} loss {p.get('loss', float('nan')):.3f} "
            f"ETA {p.get('etaSeconds', '?')}s GPU-h {job.status.get('gpuHours', 0):.3f}")

    try:
        job = client.wait(name, progress=show)
    except JobFailed as e:
        bar.close()
        print(f"trainingjob {name} failed: {e.reason}: {e.message}")
        hint(f"mentor describe {name}", f"mentor logs {name} --attempt "
             f"{e.job.status.get('attempts', 1)}")
        return 1
    bar.close()
    print(f"trainingjob {name} succeeded: step {job.progress.get('step')}, loss "
          f"{job.progress.get('loss')}, eval loss {job.progress.get('evalLoss')}, "
          f"{job.status.get('gpuHours', 0):.4f} GPU-hours")
    hint(f"mentor describe {name}", f"mentor report {name}")
    return 0


def get(client: Client, names: list[str], labels: str | None, all_namespaces: bool,
        output: str | None) -> int:
    jobs = [client.get(n) for n in names] if names else \
        client.list(labels, all_namespaces=all_namespaces)
    if emit([j.raw for j in jobs] if not names or len(names) > 1 else jobs[0].raw, output):
        return 0
    if not jobs:
        print(f"no trainingjobs in namespace {client.namespace}")
        hint("mentor submit job.yaml --wait")
        return 0
    print(table([row(j) for j in jobs]))
    return 0


def describe(client: Client, name: str, output: str | None) -> int:
    job = client.get(name)
    events = client.events(name)
    if emit({"job": job.raw, "events": events}, output):
        return 0
    spec = job.raw["spec"]
    model = spec.get("model", {})
    built = f"{model.get('architecture', 'gpt2')} {model.get('size', '')}".strip()
    parallelism = spec.get("parallelism", {})
    lines = [f"Name:        {job.name}", f"Namespace:   {job.namespace}",
             f"Phase:       {job.phase or '-'}",
             f"Model:       {model.get('from') or built}",
             f"Data:        {spec.get('data', {}).get('source')}",
             f"Steps:       {spec.get('optimization', {}).get('steps', '-')}",
             f"Parallelism: {parallelism.get('nodes', 1)} node(s) × "
             f"{parallelism.get('gpusPerNode') or parallelism.get('procsPerNode', 1)} "
             f"{'GPU' if parallelism.get('gpusPerNode') else 'process'}(es), "
             f"{parallelism.get('strategy', 'ddp')}",
             f"Output:      {spec.get('output', {}).get('uri')}",
             f"Progress:    {job.progress or '-'}",
             f"Restarts:    {job.status.get('restarts', 0)} (attempts "
             f"{job.status.get('attempts', 0)})",
             f"GPU-hours:   {job.status.get('gpuHours', 0)}", "Conditions:"]
    for c in job.status.get("conditions", []):
        lines.append(f"  {c['type']:<11} {c['status']:<6} {c.get('reason', ''):<22} "
                     f"{c.get('message', '').splitlines()[0] if c.get('message') else ''}")
    if job.status.get("failures"):
        lines.append("Failed attempts:")
        for f in job.status["failures"]:
            lines.append(f"  {f['attempt']}: {f['pod']} exit {f.get('exitCode')} "
                         f"{f['reason']}")
    lines.append("Events:")
    for e in events[-10:]:
        lines.append(f"  {e.get('type', ''):<8} {e.get('reason', ''):<18} "
                     f"{(e.get('message') or '').splitlines()[0]}")
    print("\n".join(lines))
    hint(f"mentor logs {name}", f"kubectl get pods -l mentor.dev/job-name={name}")
    return 0


def logs(client: Client, name: str, follow: bool, rank: int | None,
         attempt: int | None) -> int:
    job = client.get(name)
    current = job.status.get("attempts", 1)
    if attempt is not None and attempt != current:
        kept = [f for f in job.status.get("failures", []) if f["attempt"] == attempt]
        if not kept:
            raise MentorError(f"trainingjob {name}: nothing is kept of attempt {attempt} "
                              f"(the current attempt is {current}; Mentor keeps the last "
                              "words of the last 5 failed attempts)")
        failure = kept[0]
        print(f"attempt {attempt} failed ({failure['reason']}, pod {failure['pod']}, exit code "
              f"{failure.get('exitCode')}); its pods are gone, this is what it left:")
        print(failure.get("message") or "(no message)")
        return 0
    for line in client.logs(name, rank=rank, follow=follow):
        print(line, flush=True)
    return 0


def change(client: Client, verb: str, name: str) -> int:
    if verb == "delete":
        client.delete(name)
        print(f"trainingjob {name} deleted (its pods go with it)")
        hint("mentor ls")
        return 0
    job = client.suspend(name) if verb == "suspend" else client.resume(name)
    done = "suspended: its pods are deleted, its checkpoints kept" if verb == "suspend" else \
        "resumed from its latest checkpoint"
    print(f"trainingjob {job.name} {done}")
    hint(f"mentor {'resume' if verb == 'suspend' else 'suspend'} {name}", f"mentor get {name}")
    return 0


def report(client: Client, name: str, prometheus: str | None, png: Path | None) -> int:
    """A cluster job's outcome and, from Prometheus, its curve, drawn as `mentor report` draws a
    local run."""
    from mentor import cluster_report
    from mentor import report as local_report

    job = client.get(name)
    if not prometheus:
        p = job.progress
        print(f"{name}: {job.phase or 'Pending'} at step {p.get('step', 0)}/"
              f"{p.get('totalSteps', '?')}, loss {p.get('loss')}, eval loss "
              f"{p.get('evalLoss')}, {job.status.get('gpuHours', 0):.4f} GPU-hours")
        print("  no curve: give --prometheus URL (the Prometheus that scrapes the operator), "
              "or copy the output's metrics.jsonl (examples/cluster/models-browser.yaml) and "
              "run mentor report on it")
        return 0
    history = cluster_report.history(prometheus, job)
    print(local_report.summary(name, history))
    if history.steps:
        picture = local_report.plot(name, history, png or Path(f"{name}-report.png"))
        print(f"  picture       {picture}")
    return 0
