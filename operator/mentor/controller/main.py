"""The operator's entry point: `mentor operator`, or `kopf run -m mentor.controller.main`.

It only wires Kopf to the one `Operator` (mentor.controller.operator), made at start-up from
settings checked then. Kopf watches the TrainingJobs and TuningJobs and hands every event to it,
which records the job in memory and queues it. No handler writes annotations or finalizers on a
job: the status (with observedGeneration) is Mentor's whole record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any, cast

import kopf

from mentor.api.kinds import GROUP, TRAINING_JOB, TUNING_JOB, VERSION
from mentor.controller import kube
from mentor.controller.operator import Operator
from mentor.controller.settings import Settings
from mentor.controller.tokens import stored_key

MEMO_KEY = "operator"


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: Mentor registers only on.event handlers, which get every event as it is.
    Kopf's default builds one for each event all the same (a deep copy of the whole body, kept
    for on.create/on.update handlers to compare against), which was a tenth of the operator's
    CPU in a burst of jobs, for nothing ever read."""

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def operator_of(memo: kopf.Memo) -> Operator:
    found = memo[MEMO_KEY]
    assert isinstance(found, Operator)
    return found


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.persistence.diffbase_storage = NoDiffBase()
    # "Handler 'on_job' succeeded." for every event of every job: a line of log per event.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube.api_client()  # fail fast on a bad configuration
    config = Settings.from_env()
    if config.report_key_secret and not os.environ.get("MENTOR_REPORT_KEY"):
        key = await asyncio.get_running_loop().run_in_executor(
            None, stored_key, config.lease_namespace, config.report_key_secret)
        config = config.model_copy(update={"report_key": key})
    operator = Operator(config)
    memo[MEMO_KEY] = operator
    operator.start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await operator_of(memo).stop()


# Coroutines: each only records the job and queues it (never blocking), so it runs on Kopf's
# loop; a plain function would go through Kopf's thread pool, a hand-off per event.
@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
async def on_job(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator_of(memo).on_training_job(type, dict(event["object"]))


@kopf.on.event(GROUP, VERSION, TUNING_JOB.plural)
async def on_tuning_job(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator_of(memo).on_tuning_job(type, dict(event["object"]))
