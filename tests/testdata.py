"""The text the tests train on ships with the project: Shakespeare (public domain), 1.1 MB."""

from pathlib import Path

SHAKESPEARE = Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt"
