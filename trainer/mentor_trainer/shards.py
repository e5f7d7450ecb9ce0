"""Token shards: the corpus tokenized once into a memory-mapped file, cached beside the data.

Each rank used to read and tokenize the whole corpus at every start, holding about 16 bytes of
host RAM per token. Now rank 0 tokenizes it once, document by document, into `tokens.bin`
(uint16, or uint32 for vocabularies over 65,536), under a file lock, while the other ranks wait
for it; every rank then maps the file, so its memory does not grow with the corpus, and a
restart finds the shard ready. The cache key is the source (its files' names, sizes and
modification times), the format and the tokenizer, so changed data or another tokenizer never
reads a stale shard. The token stream is the one `data.encode` makes in memory: the same
documents in the same order, with the same begin and end tokens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mentor.api.training import DataSpec
from mentor_trainer import data
from mentor_trainer.tokenizer import ByteTokenizer, CharTokenizer, HFTokenizer, Tokenizer

log = logging.getLogger(__name__)
VERSION = 1
DIRECTORY = ".mentor-tokens"
TOKENS, META = "tokens.bin", "meta.json"


@dataclass(frozen=True)
class Shard:
    path: Path
    tokens: np.ndarray[Any, Any]  # a read-only memory map
    meta: dict[str, Any]

    def tokenizer(self) -> CharTokenizer | None:
        """The char tokenizer fitted while tokenizing, if one was."""
        chars = self.meta.get("chars")
        return CharTokenizer(chars) if chars is not None else None


def fingerprint(tokenizer: Tokenizer | None) -> str:
    """What identifies a tokenizer's output (None: a char tokenizer fitted on this data)."""
    if tokenizer is None:
        return "char-fitted"
    if isinstance(tokenizer, ByteTokenizer):
        return "byte"
    if isinstance(tokenizer, CharTokenizer):
        return "char:" + hashlib.sha256("".join(tokenizer.chars).encode()).hexdigest()[:16]
    if isinstance(tokenizer, HFTokenizer):
        inner = tokenizer.inner
        return f"hf:{inner.name_or_path}:{len(inner)}:{tokenizer.bos_id}:{tokenizer.eos_id}"
    return type(tokenizer).__name__


def _source(spec: DataSpec) -> list[Any]:
    """The data's identity: its files with sizes and modification times (a URI for remote)."""
    path = Path(spec.source.removeprefix("hf://"))
    if "://" in spec.source and not spec.source.startswith("hf://"):
        return [spec.source]
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and DIRECTORY not in p.parts)
    return [[str(f.relative_to(path) if f != path else f.name), f.stat().st_size,
             f.stat().st_mtime_ns] for f in files]


def key(spec: DataSpec, tokenizer: Tokenizer | None) -> str:
    identity = {"version": VERSION, "source": spec.source, "files": _source(spec),
                "format": spec.format.value, "field": spec.field,
                "tokenizer": fingerprint(tokenizer)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def cache_root(spec: DataSpec, fallback: Path) -> Path:
    """Beside the data when it is a writable local path, else under the job's output."""
    source = Path(spec.source.removeprefix("hf://"))
    if "://" not in spec.source or spec.source.startswith("hf://"):
        beside = (source if source.is_dir() else source.parent) / DIRECTORY
        with contextlib.suppress(OSError):
            beside.mkdir(exist_ok=True)
            if os.access(beside, os.W_OK):
                return beside
    return fallback


def _encoder(tokenizer: Tokenizer) -> Callable[[str], np.ndarray[Any, Any]]:
    if isinstance(tokenizer, ByteTokenizer):  # the fast path: no Python list per byte
        return lambda text: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return lambda text: np.asarray(tokenizer.encode(text), dtype=np.int64)


def build(spec: DataSpec, tokenizer: Tokenizer | None, target: Path,
          progress: Callable[[int], None] | None = None) -> None:
    """Tokenize the corpus into `target` (written aside, then renamed: never half a shard)."""
    if tokenizer is None:  # a char tokenizer is fitted on the data: one pass to collect them
        chars: set[str] = set()
        for text in data.iter_texts(spec):
            chars.update(text)
        tokenizer = CharTokenizer(sorted(chars))
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    encode = _encoder(tokenizer)
    begin = np.asarray([tokenizer.bos_id] if tokenizer.bos_id is not None else [], dtype=dtype)
    end = np.asarray([tokenizer.eos_id] if tokenizer.eos_id is not None else [], dtype=dtype)
    count = documents = 0
    started = time.monotonic()
    with (partial / TOKENS).open("wb") as out:
        for text in data.iter_texts(spec):
            ids = encode(text).astype(dtype)
            for part in (begin, ids, end):
                out.write(part.tobytes())
            count += len(begin) + len(ids) + len(end)
            documents += 1
            if progress:
                progress(len(text))
    meta: dict[str, Any] = {"version": VERSION, "dtype": np.dtype(dtype).name, "tokens": count,
                            "documents": documents, "vocabSize": tokenizer.vocab_size,
                            "source": spec.source, "tokenizer": fingerprint(tokenizer),
                            "seconds": round(time.monotonic() - started, 3)}
    if isinstance(tokenizer, CharTokenizer):
        meta["chars"] = tokenizer.chars
    (partial / META).write_text(json.dumps(meta))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def open_shard(path: Path) -> Shard:
    meta = json.loads((path / META).read_text())
    tokens = np.memmap(path / TOKENS, dtype=meta["dtype"], mode="r", shape=(meta["tokens"],))
    raw = getattr(tokens, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        # Samples are read in a random order: reading ahead would only fill memory.
        raw.madvise(mmap.MADV_RANDOM)
    return Shard(path, tokens, meta)


def prepare(spec: DataSpec, tokenizer: Tokenizer | None, fallback: Path,
            progress: Callable[[int], None] | None = None) -> Path:
    """The shard's directory, tokenized now unless a ready one is cached; a file lock makes
    concurrent preparers (ranks, restarts, jobs sharing the data) tokenize it once."""
    root = cache_root(spec, fallback)
    root.mkdir(parents=True, exist_ok=True)
    target = root / key(spec, tokenizer)
    with (root / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / META).exists():
            log.info("tokenizing %s into %s", spec.source, target)
            build(spec, tokenizer, target, progress)
    return target


def wait_for(spec: DataSpec, tokenizer: Tokenizer | None, fallback: Path,
             poll: float = 0.5) -> Path:
    """Another rank prepares the shard: wait until it is complete (torchrun stops this rank
    if that one fails)."""
    target = cache_root(spec, fallback) / key(spec, tokenizer)
    said = False
    while not (target / META).exists():
        if not said:
            log.info("waiting for rank 0 to tokenize %s", spec.source)
            said = True
        time.sleep(poll)
    return target
