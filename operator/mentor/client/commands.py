"""The `mentor` commands for jobs on a cluster, built on the SDK (mentor.client.sdk).

Each prints what a person needs, or with `--output json|yaml` what a script needs, and ends with
the next useful commands. Errors are raised as mentor.client.sdk's one-line MentorErrors.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mentor.api.kinds import TRAINING_JOB, TUNING_JOB
from mentor.api.validation import load_document
from mentor.client.sdk import Client, Job, JobFailed, MentorError, parse_ref
from mentor.decide.times import parse_time

COLUMNS = ("NAME", "PHASE", "REASON", "NODES", "PROGRESS", "LOSS", "RESTARTS", "GPU-HOURS",
           "AGE")
TUNING_COLUMNS = ("NAME", "PHASE", "REASON", "TRIALS", "BEST", "OBJECTIVE", "GPU-HOURS", "AGE")
TRIAL_COLUMNS = ("TRIAL", "STATE", "OBJECTIVE", "STEP", "GPU-HOURS", "PARAMETERS")


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
    started = parse_time(timestamp)
    assert started is not None
    seconds = int((dt.datetime.now(dt.UTC) - started).total_seconds())
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


def tuning_row(job: Job) -> tuple[str, ...]:
    status = job.status
    best = status.get("bestTrial") or {}
    reason = status.get("reason") or "-"
    objective = best.get("objective")
    return (job.name, job.phase or "-", reason, (status.get("shown") or {}).get("trials", "-"),
            best.get("name", "-"), f"{objective:.4f}" if objective is not None else "-",
            f"{status.get('gpuHours', 0):.2f}", age(job.raw["metadata"].get("creationTimestamp")))


def trial_row(trial: Job, best: str | None) -> tuple[str, ...]:
    status, progress = trial.status, trial.progress
    state = status.get("phase") or "Pending"
    stopped = next((c for c in status.get("conditions", []) if c["type"] == "Stopped"
                    and c.get("status") == "True"), None)
    if stopped and stopped.get("reason") == "Pruned":
        state = "Pruned"
    objective = progress.get("evalLoss") if state == "Succeeded" else None
    params = json.loads((trial.raw["metadata"].get("annotations") or {}).get(
        "mentor.dev/trial-parameters", "{}"))
    shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else
                      f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())
    mark = " *" if trial.name == best else ""
    return (trial.name + mark, state, f"{objective:.4f}" if objective is not None else "-",
            str(progress.get("step", "-")), f"{status.get('gpuHours', 0):.4f}", shown or "-")


def table(rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [columns, *rows])


def submit(client: Client, file: Path, wait: bool, output: str | None) -> int:
    try:
        document = load_document(file)
    except ValueError as e:
        raise MentorError(str(e)) from None
    job = client.submit(document)
    if emit(job.raw, output):
        return 0
    print(f"{job.kind.kind.lower()} {job.name} submitted to namespace {job.namespace}")
    shown = job.name if job.kind is TRAINING_JOB else job.ref
    if not wait:
        hint(f"mentor logs {shown} -f", f"mentor get {shown}", f"mentor describe {shown}")
        return 0
    return watch(client, job.ref)


def watch(client: Client, ref: str) -> int:
    """A live bar (step, loss, ETA, GPU-hours) until the job ends; non-zero if it fails. A
    TuningJob's bar counts its finished trials."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)

    kind, name = parse_ref(ref)
    shown = name if kind is TRAINING_JOB else ref

    def show(job: Job) -> None:
        if job.kind is TUNING_JOB:
            done, _, total = (job.status.get("shown") or {}).get("trials", "0/0").partition("/")
            bar.unit, bar.total, bar.n = "trial", int(total or 0) or None, int(done or 0)
            best = job.status.get("bestTrial") or {}
            bar.set_postfix_str(f"{job.phase or 'Pending'} best {best.get('name', '-')} "
                                f"{best.get('objective') or float('nan'):.4f} GPU-h "
                                f"{job.status.get('gpuHours', 0):.3f}")
            bar.refresh()
            return
        p = job.progress
        if p.get("totalSteps"):
            bar.total = p["totalSteps"]
        bar.n = p.get("step", 0)
        bar.set_postfix_str(
            f"{job.phase or 'Pending'} loss {p.get('loss', float('nan')):.3f} "
            f"ETA {p.get('etaSeconds', '?')}s GPU-h {job.status.get('gpuHours', 0):.3f}")

    try:
        job = client.wait(ref, progress=show)
    except JobFailed as e:
        bar.close()
        print(f"{kind.kind.lower()} {name} failed: {e.reason}: {e.message}")
        hint(f"mentor describe {shown}", f"mentor logs {shown} --attempt "
             f"{e.job.status.get('attempts', 1)}" if kind is TRAINING_JOB else
             f"mentor logs {shown}")
        return 1
    bar.close()
    if kind is TUNING_JOB:
        best = job.status.get("bestTrial") or {}
        print(f"tuningjob {name} succeeded: best trial {best.get('name')}, objective "
              f"{best.get('objective')}, {job.status.get('gpuHours', 0):.4f} GPU-hours")
    else:
        print(f"trainingjob {name} succeeded: step {job.progress.get('step')}, loss "
              f"{job.progress.get('loss')}, eval loss {job.progress.get('evalLoss')}, "
              f"{job.status.get('gpuHours', 0):.4f} GPU-hours")
    hint(f"mentor describe {shown}", f"mentor report {shown}")
    return 0


def get(client: Client, names: list[str], labels: str | None, all_namespaces: bool,
        output: str | None) -> int:
    jobs = [client.get(n) for n in names] if names else \
        client.list(labels, all_namespaces=all_namespaces)
    if emit([j.raw for j in jobs] if not names or len(names) > 1 else jobs[0].raw, output):
        return 0
    if not jobs:
        print(f"no trainingjobs or tuningjobs in namespace {client.namespace}")
        hint("mentor submit job.yaml --wait")
        return 0
    training = [row(j) for j in jobs if j.kind is TRAINING_JOB]
    tuning = [tuning_row(j) for j in jobs if j.kind is TUNING_JOB]
    # As kubectl shows several kinds: a table each, a blank line between.
    print("\n\n".join(t for t in (training and table(training),
                                  tuning and table(tuning, TUNING_COLUMNS)) if t))
    return 0


def describe(client: Client, ref: str, output: str | None) -> int:
    job = client.get(ref)
    events = client.events(ref)
    trials = client.trials(job.name) if job.kind is TUNING_JOB else []
    if emit({"job": job.raw, "events": events, **(
            {"trials": [t.raw for t in trials]} if job.kind is TUNING_JOB else {})}, output):
        return 0
    if job.kind is TUNING_JOB:
        return describe_tuning(job, trials, events)
    name = job.name
    spec = job.raw["spec"]
    model = spec.get("model", {})
    built = f"{model.get('architecture', 'gpt2')} {model.get('size', '')}".strip()
    parallelism = spec.get("parallelism", {})
    trainer = spec.get("trainer") or {}
    trained = [f"Trainer:     custom: {custom_command(spec)}"] \
        if trainer.get("type") == "custom" else [
        f"Model:       {model.get('from') or built}",
        f"Data:        {spec.get('data', {}).get('source')}",
        f"Steps:       {spec.get('optimization', {}).get('steps', '-')}"]
    lines = [f"Name:        {job.name}", f"Namespace:   {job.namespace}",
             f"Phase:       {job.phase or '-'}", *trained,
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
    print("\n".join(lines + event_lines(events)))
    hint(f"mentor logs {name}", f"kubectl get pods -l mentor.dev/job-name={name}")
    return 0


def custom_command(spec: dict[str, Any]) -> str:
    """What a custom trainer runs under torchrun, as one line."""
    trainer = spec.get("trainer") or {}
    return " ".join([*trainer.get("command", []), *trainer.get("args", [])])


def event_lines(events: list[dict[str, Any]]) -> list[str]:
    return ["Events:", *(f"  {e.get('type', ''):<8} {e.get('reason', ''):<18} "
                         f"{(e.get('message') or '').splitlines()[0]}" for e in events[-10:])]


def describe_tuning(job: Job, trials: list[Job], events: list[dict[str, Any]]) -> int:
    """A TuningJob: what it tunes and how, where it stands, and its trials as a table (the best
    marked *)."""
    spec, status = job.raw["spec"], job.status
    base = spec.get("baseModel", {})
    search = spec.get("search") or {}
    budget = spec.get("budget") or {}
    lineage = status.get("lineage") or {}
    best = (status.get("bestTrial") or {}).get("name")
    lines = [f"Name:        {job.name}", f"Namespace:   {job.namespace}",
             f"Phase:       {job.phase or '-'} ({status.get('reason') or '-'})",
             f"Base model:  {base.get('uri') or (base.get('trainingJobRef') or {}).get('name')}"
             + (f" (eval loss {lineage['evalLoss']:.4f})" if lineage.get("evalLoss") else "")
             if base else f"Trainer:     custom: {custom_command(spec)}",
             f"Method:      {(spec.get('method') or {}).get('type', '-')}",
             f"Search:      {search.get('algorithm', 'none')}, up to "
             f"{search.get('maxTrials', 1)} trial(s), {search.get('parallelTrials', 1)} at once",
             f"Trials:      {(status.get('shown') or {}).get('trials', '-')} finished",
             f"GPU-hours:   {status.get('gpuHours', 0)}"
             + (f" of {budget['maxGPUHours']}" if budget.get("maxGPUHours") else ""),
             "Conditions:"]
    for c in status.get("conditions", []):
        lines.append(f"  {c['type']:<11} {c['status']:<6} {c.get('reason', ''):<22} "
                     f"{c.get('message', '').splitlines()[0] if c.get('message') else ''}")
    lines.append("Trials:")
    if trials:
        lines += ["  " + line for line in table([trial_row(t, best) for t in trials],
                                               TRIAL_COLUMNS).splitlines()]
    else:
        lines.append("  (none yet)")
    print("\n".join(lines + event_lines(events)))
    hint(f"mentor logs tuningjob/{job.name}", f"mentor report tuningjob/{job.name}")
    return 0


def logs(client: Client, ref: str, follow: bool, rank: int | None,
         attempt: int | None) -> int:
    job = client.get(ref)
    current = job.status.get("attempts", 1)
    if attempt is not None and attempt != current:
        kept = [f for f in job.status.get("failures", []) if f["attempt"] == attempt]
        if not kept:
            raise MentorError(f"{job.title}: nothing is kept of attempt {attempt} "
                              f"(the current attempt is {current}; Mentor keeps the last "
                              "words of the last 5 failed attempts)")
        failure = kept[0]
        print(f"attempt {attempt} failed ({failure['reason']}, pod {failure['pod']}, exit code "
              f"{failure.get('exitCode')}); its pods are gone, this is what it left:")
        print(failure.get("message") or "(no message)")
        return 0
    for line in client.logs(ref, rank=rank, follow=follow):
        print(line, flush=True)
    return 0


def delete(client: Client, ref: str) -> int:
    kind, name = parse_ref(ref)
    client.delete(ref)
    children = "its pods" if kind is TRAINING_JOB else "its trials"
    print(f"{kind.kind.lower()} {name} deleted ({children} go with it)")
    hint("mentor ls")
    return 0


def suspend(client: Client, ref: str) -> int:
    job = client.suspend(ref)
    print(f"trainingjob {job.name} suspended: its pods are deleted, its checkpoints kept")
    hint(f"mentor resume {ref}", f"mentor get {ref}")
    return 0


def resume(client: Client, ref: str) -> int:
    job = client.resume(ref)
    print(f"trainingjob {job.name} resumed from its latest checkpoint")
    hint(f"mentor suspend {ref}", f"mentor get {ref}")
    return 0


def report(client: Client, ref: str, prometheus: str | None, png: Path | None) -> int:
    """A cluster job's outcome and, from Prometheus, its curve, drawn as `mentor report` draws a
    local run."""
    from mentor.report import history as local_report
    from mentor.report import plots
    from mentor.report import prometheus as cluster_report

    job = client.get(ref)
    name = job.name
    if job.kind is TUNING_JOB:
        return describe_tuning(job, client.trials(name), [])
    tracked = job.progress.get("tracking") or {}
    if tracked.get("url"):
        print(f"  mlflow        {tracked['url']}"
              + (" (unreachable: the records wait in the job's output)"
                 if tracked.get("state") == "Unavailable" else ""))
    output = ((job.raw.get("spec") or {}).get("output") or {}).get("uri")
    tracking = (job.raw.get("spec") or {}).get("tracking") or {}
    if output and tracking.get("enabled", True) and tracking.get("tensorboard", True):
        print(f"  tensorboard   {output.rstrip('/')}/tensorboard (tensorboard --logdir, "
              "where the output is mounted)")
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
        picture = plots.plot(name, history, png or Path(f"{name}-report.png"))
        print(f"  picture       {picture}")
    return 0
