"""Honest reruns: what an output directory already holds, and whether running into it is right.

`mentor run` writes the trainer config it ran with into `<output>/.mentor/config.json`, and the
trainer ends its metrics log with the run's outcome. Before a run starts, the two are compared
with the new job: the same finished spec is "already finished", an unfinished one resumes, and a
different spec is refused with what differs, since resuming or overwriting it would mix two runs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentor.report.history import History, read_history

STATE = ".mentor"  # Mentor's own files in an output directory; their presence marks it as ours


class Refused(Exception):
    """A run that would mix with another run's output; the message says what differs."""


@dataclass(frozen=True)
class Previous:
    changes: list[str]  # "spec.optimization.learningRate: 0.003 -> 0.001", ...
    history: History | None

    @property
    def finished(self) -> bool:
        return bool(self.history and self.history.outcome
                    and self.history.outcome.get("outcome") == "succeeded")


def differences(old: Any, new: Any, path: str = "spec") -> list[str]:
    """Every leaf that differs between two configs, by its field path."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(old.keys() | new.keys())
                for change in differences(old.get(key), new.get(key), f"{path}.{key}")]
    if old == new:
        return []
    return [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def previous(output: Path, config: dict[str, Any]) -> Previous | None:
    """What `output` holds from an earlier run of `config`'s job, or None if nothing."""
    saved = output / STATE / "config.json"
    if not saved.exists():
        return None
    log = output / "metrics.jsonl"
    history = read_history(log) if log.exists() else None
    # Where the run is recorded is not what it trains: a rerun may record elsewhere.
    old, new = ({k: v for k, v in c.items() if k != "tracking"}
                for c in (json.loads(saved.read_text()), config))
    return Previous(differences(old, new), history)


def check(output: Path, config: dict[str, Any]) -> Previous | None:
    """Refuse a run whose output holds another spec's run; else say what is there."""
    prior = previous(output, config)
    if prior is None or not prior.changes:
        return prior
    state = "a finished" if prior.finished else "an unfinished"
    shown = "; ".join(prior.changes[:5]) + (" ..." if len(prior.changes) > 5 else "")
    raise Refused(f"{output} holds {state} run of a different spec ({shown}); run with --fresh "
                  "to discard it and start over, or set spec.output.uri to a new place")


def discard(output: Path) -> None:
    """Delete an earlier run's output (--fresh); only a directory Mentor wrote is deleted."""
    if not output.exists():
        return
    if not (output / STATE).is_dir():
        raise Refused(f"{output} was not written by mentor run (no {STATE}/ in it); "
                      "delete it yourself if it should go")
    shutil.rmtree(output)
