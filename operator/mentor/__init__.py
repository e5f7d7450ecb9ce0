"""Mentor: a Kubernetes operator that trains and tunes models with torchrun.

`from mentor import Client` is the Python SDK (mentor.client.sdk); it is imported on first use, so
`import mentor` stays light for the trainer and the CLI.
"""

from typing import Any

__version__ = "0.1.0"

_SDK = ("Client", "Job", "MentorError", "ClusterUnreachable", "JobNotFound", "SpecRefused",
        "Forbidden", "JobFailed")


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from mentor.client import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'mentor' has no attribute {name!r}")
