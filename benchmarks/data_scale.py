"""Start-up time and per-rank memory of the trainer's data on a large text corpus, before and
after token shards.

It writes a corpus of --gb gigabytes (Shakespeare repeated, in 64 MB files), then, each in a
fresh process so that peak RSS is that step's alone:
- before: every rank read and tokenized the whole corpus in memory (data.encode), as the
  trainer did until token shards; run under a memory limit (--limit-gb), since it needs about
  16 bytes per token;
- after, first start: rank 0 tokenizes into the shard (shards.prepare);
- after, every other start and every other rank: maps the shard and reads 100 random batches.

Each prints its wall time, the time until the data is ready, its peak RSS, and its RSS at the
end split into anonymous memory (the process's own) and file pages (the shard's page cache,
shared by every rank on the node and given back under pressure).

    .venv/bin/python benchmarks/data_scale.py [--gb 1.0] [--limit-gb 20] [--dir /tmp/corpus]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

TEXT = Path(__file__).resolve().parents[1] / "tests/data/tinyshakespeare.txt"

CHILD = r"""
import json, random, resource, sys, time
from pathlib import Path
from mentor.api.training import DataSpec
from mentor_trainer import data, shards
from mentor_trainer.tokenizer import ByteTokenizer
mode, corpus, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
spec = DataSpec(source=corpus, sequence_length=1024)
started = time.monotonic()
if mode == "before":
    tokens = data.encode(data.read_texts(spec), ByteTokenizer())
    train, _ = data.split(tokens, 0.01, 1024)
else:
    path = shards.prepare(spec, ByteTokenizer(), cache) if mode == "prepare" else \
        shards.wait_for(spec, ByteTokenizer(), cache)
    train, _ = data.split(shards.open_shard(path).tokens, 0.01, 1024)
ready = time.monotonic() - started
rng = random.Random(0)
for _ in range(100):
    train.batch([rng.randrange(len(train)) for _ in range(8)])
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
kib = lambda name: int(status[name].split()[0]) / 2**20
print(json.dumps({"ready_s": round(ready, 2), "samples": len(train),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                        / 2**20, 2),
                  "rss_anon_gib": round(kib("RssAnon"), 2),
                  "rss_file_gib": round(kib("RssFile"), 2)}))
"""


def write_corpus(directory: Path, gb: float) -> int:
    text = TEXT.read_text()
    directory.mkdir(parents=True, exist_ok=True)
    target, written, i = int(gb * 2**30), 0, 0
    chunk = text * (64 * 2**20 // len(text))
    while written < target:
        part = chunk[: target - written]
        (directory / f"part-{i:04d}.txt").write_text(part)
        written += len(part.encode())
        i += 1
    return written


def child(mode: str, corpus: Path, cache: Path, limit_gb: float | None) -> dict[str, object]:
    def limit() -> None:
        if limit_gb:
            size = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(corpus), str(cache)],
                          capture_output=True, text=True, preexec_fn=limit, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"exit {done.returncode}: {last[:120]}",
                "wall_s": round(time.monotonic() - started, 1)}
    return {**json.loads(done.stdout), "wall_s": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--limit-gb", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mentor-corpus"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    size = write_corpus(args.dir / "text", args.gb)
    print(f"corpus: {size / 2**30:.2f} GiB of text in {args.dir / 'text'}")
    cache = args.dir / "cache"
    for mode, label in (("before", "before (each rank tokenizes in memory)"),
                        ("prepare", "after, first start (rank 0 tokenizes into the shard)"),
                        ("map", "after, any other rank or restart (maps the shard)")):
        result = child(mode, args.dir / "text", cache,
                       args.limit_gb if mode == "before" else None)
        print(f"{label}: {json.dumps(result)}", flush=True)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
