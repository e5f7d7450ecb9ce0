"""The `mentor` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

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
    run.add_argument("file", nargs="?", type=Path,
                     help="the job's YAML (default: the embedded quickstart)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    report = sub.add_parser("report", help="summarise a job and plot its loss and GPU-hours")
    report.add_argument("target", type=Path,
                        help="the job's output directory (with metrics.jsonl) or its YAML")
    report.add_argument("--png", type=Path, help="where to write the picture "
                        "(default: <output>/report.png)")
    data = sub.add_parser("data", help="fetch public sample data")
    data.add_argument("dataset", choices=["shakespeare"])
    data.add_argument("--to", type=Path, help="target directory (default: the local "
                      "pvc://datasets/shakespeare of mentor run)")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
    elif args.command == "operator":
        return run_operator(args.liveness, args.standalone)
    elif args.command == "run":
        return run_locally(args.file, not args.no_progress)
    elif args.command == "report":
        return report_job(args.target, args.png)
    elif args.command == "data":
        from mentor.local import local_path
        from mentor.sample_data import fetch_shakespeare

        target = args.to or Path(local_path("pvc://datasets/shakespeare") or ".")
        files = fetch_shakespeare(target)
        size = sum(f.stat().st_size for f in files)
        print(f"{len(files)} plays ({size / 1e6:.1f} MB) in {target}")
    return 0


def report_job(target: Path, png: Path | None) -> int:
    from mentor import local, report

    output, name = target, target.name
    if target.is_file():
        job = local.load(target)
        output, name = Path(local.local_path(job.spec.output.uri) or "."), job.metadata.name
    log = output / "metrics.jsonl"
    if not log.exists():
        print(f"no metrics log at {log}", file=sys.stderr)
        return 1
    history = report.read_history(log)
    print(report.summary(name, history))
    if history.steps:
        print(f"  picture       {report.plot(name, history, png or output / 'report.png')}")
    return 0


def run_locally(file: Path | None, progress: bool) -> int:
    from mentor import local
    from mentor.validation import InvalidJob

    try:
        job = local.load(file)
    except InvalidJob as e:
        print(f"{file or 'the quickstart'} is invalid:", file=sys.stderr)
        for error in e.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as e:
        print(f"cannot read {file}: {e}", file=sys.stderr)
        return 2
    outcome = local.run(job, progress=progress)
    print(local.summary(job, outcome))
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
