"""The operator's HTTP endpoint: progress reports from the trainers, and /metrics.

Reports are accepted at once and folded into memory; a flusher writes each job's progress to its
status at most once per MENTOR_PROGRESS_INTERVAL, and all jobs' together within the status-write
budget (mentor.controller.budget), so a chatty trainer costs the API server one patch per
interval, not one per step, and many trainers no more than the budget. The reconciler never
writes progress or checkpoint: the two writers own disjoint parts of the status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes.client.exceptions import ApiException

from mentor.api.kinds import TRAINING_JOB
from mentor.api.status import CheckpointStatus, JobStatus, Progress
from mentor.controller import kube
from mentor.controller.budget import WriteBudget
from mentor.controller.cache import Jobs
from mentor.controller.metrics import Metrics
from mentor.controller.settings import Settings
from mentor.controller.tokens import authorized
from mentor.decide import ledger
from mentor.decide.podview import PodView
from mentor.decide.progress import Report, apply_report, parse_report

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


@dataclass
class JobProgress:
    uid: str
    progress: Progress | None = None
    checkpoint: CheckpointStatus | None = None
    dirty: bool = False
    # When it became dirty (monotonic): the longest-waiting job is written first.
    waiting_since: float = 0.0

    def touch(self) -> None:
        if not self.dirty:
            self.dirty, self.waiting_since = True, time.monotonic()


@dataclass
class ProgressBook:
    """The latest progress of every reporting job, waiting to be written."""

    jobs: dict[tuple[str, str], JobProgress] = field(default_factory=dict)


def answer(job: dict[str, Any], report: Report, pods: list[dict[str, Any]],
           settings: Settings) -> dict[str, Any]:
    """What a report is told back: why the job is being stopped (a pruned trial's tracker says
    so), and, when it asks, the ledger's GPU-hours until now: what its tracker logs is the
    ledger's figure, not one of its own."""
    said: dict[str, Any] = {"ok": True}
    stop = ((job.get("spec") or {}).get("runPolicy") or {}).get("stop")
    if stop:
        said["stop"] = stop.get("reason", "StopRequested")
    if report.ledger:
        status = JobStatus.model_validate(job.get("status") or {})
        views = [PodView.from_pod(p, settings.gpu_resources) for p in pods]
        said["gpuHours"] = round(ledger.gpu_hours(status, views, dt.datetime.now(dt.UTC)), 6)
    return said


def build_app(settings: Settings, book: ProgressBook, metrics: Metrics,
              jobs: Jobs, leading: threading.Event,
              ready: Callable[[], bool] = lambda: True,
              pods_of: Callable[[tuple[str, str]], list[dict[str, Any]]] = lambda _: []
              ) -> web.Application:
    key = settings.report_key

    async def report(request: web.Request) -> web.Response:
        if not leading.is_set():  # the Service routes to the leader; a stray report retries
            return web.json_response({"error": "not the leader"}, status=503)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        job = jobs.get((namespace, name))  # from memory: a report costs no API call
        # A job that does not exist and a token that is wrong get the same answer: the
        # endpoint tells no pod which jobs exist in other namespaces.
        uid = job["metadata"]["uid"] if job else None
        if uid is None or not authorized(key, namespace, request.headers.get("Authorization")):
            return web.json_response({"error": "no such job, or not its token"}, status=403)
        entry = book.jobs.get((namespace, name))
        if entry is None or entry.uid != uid:  # a new job of an old name
            entry = JobProgress(uid=uid)
        if request.content_length and request.content_length > MAX_BODY:
            return web.json_response({"error": "too large"}, status=413)
        try:
            report = parse_report(await request.json())
        except ValueError as e:  # not JSON, or not a report: never near the status
            return web.json_response({"error": f"bad report: {e}"[:1000]}, status=400)
        if report.uid is not None and report.uid != uid:
            return web.json_response({"error": "a report of an earlier job of this name"},
                                     status=409)
        entry.progress, entry.checkpoint = apply_report(
            report, entry.progress, entry.checkpoint, dt.datetime.now(dt.UTC))
        entry.touch()
        book.jobs[(namespace, name)] = entry
        metrics.observe_report(namespace, TRAINING_JOB.kind, name, report)
        assert job is not None
        return web.json_response(answer(job, report, pods_of((namespace, name)), settings),
                                 status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(text="labelled the leader but not leading", status=503)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/v1/progress/{namespace}/{name}", report)
    if not settings.metrics_port:
        app.router.add_get("/metrics", _metrics_page(metrics))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_metrics_app(metrics: Metrics) -> web.Application:
    """/metrics on a port of its own (MENTOR_METRICS_PORT)."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics_page(metrics))
    return app


def _metrics_page(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def page(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    return page


FLUSH_THREADS = 8  # progress patches in flight at once


def flush(book: ProgressBook, budget: int) -> None:
    """Write the progress of at most `budget` jobs that reported since they were last written,
    the longest-waiting first, several at once. The others stay dirty: their next reports
    merge into what waits, and their turn comes at the next flush."""
    dirty = sorted(((key, entry) for key, entry in list(book.jobs.items()) if entry.dirty),
                   key=lambda item: item[1].waiting_since)[:budget]
    if dirty:
        with ThreadPoolExecutor(max_workers=min(FLUSH_THREADS, len(dirty))) as pool:
            list(pool.map(lambda item: _write(book, *item), dirty))


def _write(book: ProgressBook, key: tuple[str, str], entry: JobProgress) -> None:
    namespace, name = key
    entry.dirty = False
    status: dict[str, Any] = {}
    if entry.progress:
        status["progress"] = entry.progress.wire()
    if entry.checkpoint:
        status["checkpoint"] = entry.checkpoint.wire()
    try:
        kube.request("PATCH", kube.status_path(TRAINING_JOB.plural, namespace, name),
                     {"status": status}, "application/merge-patch+json")
    except ApiException as e:
        if e.status == 404:
            book.jobs.pop(key, None)
        else:
            entry.touch()
            log.warning("progress of %s/%s not written: %s", namespace, name, e.reason)


async def serve(settings: Settings, book: ProgressBook, metrics: Metrics, jobs: Jobs,
                leading: threading.Event, ready: Callable[[], bool],
                pods_of: Callable[[tuple[str, str]], list[dict[str, Any]]],
                writes: WriteBudget) -> None:
    """Run the endpoint and the flusher until cancelled: both idle unless `leading`. The
    flusher spends `writes`, which it shares with the GPU-hours refreshes."""
    runners = [web.AppRunner(build_app(settings, book, metrics, jobs, leading, ready, pods_of),
                             access_log=None)]
    if settings.metrics_port:
        runners.append(web.AppRunner(build_metrics_app(metrics), access_log=None))
    for runner, port in zip(runners, (settings.http_port, settings.metrics_port), strict=False):
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, port).start()
    loop = asyncio.get_running_loop()
    interval = max(settings.progress_interval, 0.1)
    try:
        while True:
            await asyncio.sleep(interval)
            if not leading.is_set():
                continue
            waiting = sum(1 for entry in book.jobs.values() if entry.dirty)
            budget = writes.take(waiting) if waiting else 0
            if not budget:
                continue
            try:
                await loop.run_in_executor(None, flush, book, budget)
            except Exception:
                log.exception("progress flush failed; retrying")
    finally:
        for runner in runners:
            await runner.cleanup()
