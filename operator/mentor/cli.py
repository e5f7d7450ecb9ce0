"""The `mentor` command line."""
from __future__ import annotations

import argparse
import logging
import sys

from mentor import __version__


def run_operator(liveness: str, standalone: bool) -> int:
    """Run Kopf with mentor.main's handlers, watching MENTOR_NAMESPACES or the whole cluster."""
    import asyncio

    import kopf

    import mentor.main  # registers the handlers

    kopf.configure(log_format=kopf.LogFormat.FULL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    namespaces = list(mentor.main.SETTINGS.namespaces)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness,
        standalone=standalone,
    ))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mentor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    op = sub.add_parser("operator", help="run the operator (kopf) against the current cluster")
    op.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                    help="where Kopf serves its liveness probe")
    op.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    run = sub.add_parser("run", help="run a job on this machine, with no cluster")
    run.add_argument("file", nargs="?", help="the job's YAML (default: the embedded example)")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
    elif args.command == "operator":
        return run_operator(args.liveness, args.standalone)
    elif args.command == "run":
        print("mentor run: the local runner is not written yet (see the README's feature table).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
