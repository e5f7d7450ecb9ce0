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


def preference_pairs(count: int, prompt_chars: int = 16, response_chars: int = 44,
                     seed: int = 0) -> list[dict[str, str]]:
    """`count` preference records cut from Shakespeare at word boundaries: a passage's start as
    the prompt, its true continuation chosen, and rejected the same continuation misspelt (the
    letters of each word of four or more shuffled), as a weak model writes. (At the start of
    tuning the model and its reference are one, so the rewards rank no pair: the base model's
    preference accuracy is 50 %.)"""
    import random
    import re

    rng = random.Random(seed)
    text = SHAKESPEARE.read_text()

    def misspelt(word: str) -> str:
        letters = list(word)
        while len(set(word)) > 1 and "".join(letters) == word:
            rng.shuffle(letters)
        return "".join(letters)

    pairs: list[dict[str, str]] = []
    while len(pairs) < count:
        start = text.find(" ", rng.randrange(len(text) - 4 * (prompt_chars + response_chars)))
        cut = text.find(" ", start + prompt_chars)
        end = text.rfind(" ", cut + 1, cut + response_chars)
        prompt, chosen = text[start + 1:cut + 1], text[cut + 1:end]
        rejected = re.sub(r"[A-Za-z]{4,}", lambda m: misspelt(m.group(0)), chosen)
        if rejected != chosen:
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs
