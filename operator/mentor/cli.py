"""The `mentor` command line."""
from __future__ import annotations

import argparse
import sys

from mentor import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mentor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    run = sub.add_parser("run", help="run a job on this machine, with no cluster")
    run.add_argument("file", nargs="?", help="the job's YAML (default: the embedded example)")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
    elif args.command == "run":
        print("mentor run: the local runner is not written yet (see the README's feature table).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
