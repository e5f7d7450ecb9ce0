"""The text the tests train on ships with the project: Shakespeare (public domain), 1.1 MB."""

from pathlib import Path

SHAKESPEARE = Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt"


def search_values(path: str, count: int) -> list[float]:
    """`count` distinct values that the search parameter `path` may take (inside its field's
    bounds): the widest parameters that admission accepts."""
    from mentor.api.tuning import BOUNDS, INTEGER

    bounds = dict(BOUNDS[path])
    low = bounds.get(">=", bounds.get(">", 0.0))
    if path in INTEGER:
        return [low + v for v in range(count)]
    high = bounds.get("<=", bounds.get("<", low + 1.0))
    return [low + (high - low) * (v + 1) / (count + 1) for v in range(count)]
