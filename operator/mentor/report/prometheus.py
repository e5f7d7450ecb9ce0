"""`mentor report <job>` for a job on a cluster: its history from Prometheus, its outcome from
its status, drawn as the same picture as a local run's.

A cluster keeps a job's curve in two places: the trainer's metrics.jsonl on the output volume
(out of a laptop's reach without a pod to read it) and the operator's per-job series in the
Prometheus that scrapes it. The second is read here, over the job's lifetime; with no Prometheus
the report is the status alone.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import urllib.request
from typing import Any

from mentor.client.sdk import Job, MentorError
from mentor.decide.times import parse_time
from mentor.report.history import History

SERIES = ("mentor_job_step", "mentor_job_loss", "mentor_job_eval_loss",
          "mentor_job_tokens_per_second", "mentor_job_gpu_seconds")
POINTS = 1000  # at most, per series: Prometheus' resolution is picked to fit the job's life


def _time(value: str | None) -> float | None:
    parsed = parse_time(value)
    return parsed.timestamp() if parsed else None


def query_range(url: str, promql: str, start: float, end: float,
                step: float) -> dict[float, float]:
    """One series' samples by time (the first series the query returns)."""
    query = urllib.parse.urlencode({"query": promql, "start": start, "end": end, "step": step})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{query}",
                                    timeout=30) as response:
            body = json.loads(response.read())
    except OSError as e:
        raise MentorError(f"cannot read Prometheus at {url}: {getattr(e, 'reason', e)}") from None
    result = body.get("data", {}).get("result", [])
    return {float(t): float(v) for t, v in result[0]["values"]} if result else {}


def history(url: str, job: Job) -> History:
    """The job's curve, as the operator exported it while the job ran."""
    start = _time(job.raw["metadata"].get("creationTimestamp")) or 0.0
    end = _time(job.status.get("completionTime")) or dt.datetime.now(dt.UTC).timestamp()
    step = max(1.0, (end - start) / POINTS)
    selector = f'{{namespace="{job.namespace}",job_name="{job.name}"}}'
    series = {name: query_range(url, name + selector, start, end + step, step)
              for name in SERIES}
    h = History(outcome=outcome(job))
    by_step: dict[int, float] = {}
    evals: dict[int, float] = {}
    for t, value in sorted(series["mentor_job_step"].items()):
        s = int(value)
        if s < 1 or t not in series["mentor_job_loss"]:
            continue
        if s not in by_step:
            h.steps.append(s)
            h.losses.append(series["mentor_job_loss"][t])
            h.hours.append((t - start) / 3600)
            h.gpu_hours.append(series["mentor_job_gpu_seconds"].get(t, 0.0) / 3600)
            h.tokens_per_second.append(series["mentor_job_tokens_per_second"].get(t, 0.0))
        by_step[s] = t
        if t in series["mentor_job_eval_loss"]:
            evals[s] = series["mentor_job_eval_loss"][t]
    h.eval_steps = sorted(s for s in evals if evals[s] != evals.get(s - 1))
    h.eval_losses = [evals[s] for s in h.eval_steps]
    h.total_steps = job.progress.get("totalSteps")
    return h


def outcome(job: Job) -> dict[str, Any] | None:
    """The job's end in the trainer's terms (mentor.report.history's outcome record), from its
    status."""
    if job.phase == "Succeeded":
        return {"outcome": "succeeded"}
    if job.phase == "Failed":
        failed = job.condition("Failed")
        return {"outcome": "failed", "exit_code": None,
                "reason": f"{failed.get('reason')}: {failed.get('message', '')}"}
    return None
