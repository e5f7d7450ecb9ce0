"""Times as the API server writes them: RFC 3339 in UTC, to the second (`2026-12-05T00:29:31Z`).

Every status time Mentor writes and every one it reads goes through these two functions, so the
operator, the client and the reports agree on one format.
"""

from __future__ import annotations

import datetime as dt


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
