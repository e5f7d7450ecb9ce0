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


def preference_pairs(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` preference pairs cut from the plays as `mentor data preferences` cuts them: a
    true continuation chosen, the same misspelt rejected. (At the start of tuning the model
    and its reference are one, so the rewards rank no pair: the base's preference accuracy is
    50 %.)"""
    from mentor.local.sample_data import preference_pairs as cut

    return cut(SHAKESPEARE.read_text(), count, seed=seed)
