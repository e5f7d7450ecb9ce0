"""The `mentor` command line. Errors are one line each, never a traceback.

Jobs on this machine: run, generate, report, data (mentor.local.commands). Jobs on a cluster,
TrainingJobs and TuningJobs alike (`NAME`, or `tuningjob/NAME`, `tj/NAME` as kubectl takes
them): submit, ls, get, describe, logs, suspend, resume, delete, report (mentor.client.commands).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from mentor import __version__
from mentor.local.commands import SAMPLE_TOKENS, CommandFailed


def run_operator(args: argparse.Namespace) -> int:
    """Run Kopf with mentor.controller.main's handlers, watching MENTOR_NAMESPACES or the whole
    cluster."""
    import asyncio
    import faulthandler
    import signal

    import kopf

    import mentor.controller.main  # noqa: F401  (registers the handlers)
    from mentor.controller.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()  # a bad MENTOR_* is one line, before anything starts
    except SettingsError as e:
        raise CommandFailed(str(e)) from None
    # `kill -USR1` prints every thread's stack to the log: what a stuck operator is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    kopf.configure(log_format=kopf.LogFormat.FULL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    namespaces = list(settings.namespaces)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=args.liveness,
        standalone=args.standalone,
    ))
    return 0


# -- on this machine


def _version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _run(args: argparse.Namespace) -> int:
    from mentor.local.commands import run_locally

    return run_locally(args.file, not args.no_progress, args.fresh, args.cpu)


def _generate(args: argparse.Namespace) -> int:
    from mentor.local.commands import generate

    print(generate(args.target, args.prompt, args.tokens, args.temperature, args.seed))
    return 0


def _data(args: argparse.Namespace) -> int:
    from mentor.local.commands import fetch_data, prepare_data

    if args.dataset == "prepare":
        prepare_data(args.job)
    else:
        fetch_data(args.dataset, args.to)
    return 0


def _report(args: argparse.Namespace) -> int:
    """A local output (a directory or a job's YAML), or a job on the cluster by name."""
    if is_job_ref(str(args.target)):
        return _on_cluster(args)
    from mentor.local.commands import report_job

    return report_job(args.target, args.png)


def _sync(args: argparse.Namespace) -> int:
    """Send the tracking records an ended run left behind (its server was down as it ended)."""
    from mentor.local.commands import output_of
    from mentor_trainer import tracking
    from mentor_trainer.mlflow_rest import Refused, Unreachable

    output, _ = output_of(args.target)
    if not (output / tracking.STATE_DIR / "sender.json").exists():
        raise CommandFailed(f"{output} holds no MLflow run (spec.tracking.mlflow) to send")
    try:
        sent = tracking.sync(output, args.wait)
    except (Unreachable, Refused) as e:
        raise CommandFailed(f"the records stay in {output / tracking.STATE_DIR}: {e}") from None
    print(f"{output}: {sent} record(s) sent; nothing waits" if sent else
          f"{output}: nothing waits to be sent")
    return 0


def is_job_ref(target: str) -> bool:
    """A name (or KIND/NAME) a job on the cluster could have, and no file or directory here."""
    return bool(re.fullmatch(r"([a-z.]+/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?", target)) and \
        not Path(target).exists()


# -- on a cluster


def _on_cluster(args: argparse.Namespace) -> int:
    """The commands for jobs on a cluster (mentor.client.commands), with one-line errors."""
    from mentor.client import commands
    from mentor.client.sdk import Client, MentorError

    try:
        client = Client(namespace=args.namespace, kubeconfig=args.kubeconfig,
                        context=args.context)
        return int(args.cluster(commands, client, args))
    except MentorError as e:
        raise CommandFailed(str(e)) from None


CLUSTER: dict[str, Any] = {
    "submit": lambda c, client, a: c.submit(client, a.file, a.wait, a.output),
    "get": lambda c, client, a: c.get(client, a.names, a.selector, a.all_namespaces, a.output),
    "ls": lambda c, client, a: c.get(client, [], a.selector, a.all_namespaces, a.output),
    "describe": lambda c, client, a: c.describe(client, a.name, a.output),
    "logs": lambda c, client, a: c.logs(client, a.name, a.follow, a.rank, a.attempt),
    "report": lambda c, client, a: c.report(client, str(a.target), a.prometheus, a.png),
    "suspend": lambda c, client, a: c.suspend(client, a.name),
    "resume": lambda c, client, a: c.resume(client, a.name),
    "delete": lambda c, client, a: c.delete(client, a.name),
}
JOB_REF = "a TrainingJob's name, or KIND/NAME (tuningjob/NAME, tj/NAME, trainingjob/NAME)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mentor", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"mentor {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version").set_defaults(func=_version)
    op = sub.add_parser("operator", help="run the operator (kopf) against the current cluster")
    op.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                    help="where Kopf serves its liveness probe")
    op.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    op.set_defaults(func=run_operator)
    _local_commands(sub)
    _cluster_commands(sub)
    return top


def _local_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run a job on this machine, with no cluster")
    run.add_argument("file", nargs="?", type=Path,
                     help="the job's YAML (default: the embedded quickstart)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar: a plain line every tenth of the run instead")
    run.add_argument("--fresh", action="store_true",
                     help="discard what an earlier run left in the output and start over")
    run.add_argument("--cpu", action="store_true",
                     help="run a GPU job on this machine's CPU: a process for each GPU it asks "
                          "for, no GPU-hours charged")
    run.set_defaults(func=_run)
    gen = sub.add_parser("generate", help="sample text from a trained model")
    gen.add_argument("target", type=Path, help="the job's YAML or its output directory")
    gen.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    gen.add_argument("--tokens", type=int, default=SAMPLE_TOKENS, help="how many to sample")
    gen.add_argument("--temperature", type=float, default=0.8,
                     help="0 is greedy; higher is more adventurous")
    gen.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    gen.set_defaults(func=_generate)
    data = sub.add_parser("data", help="fetch public sample data")
    data.add_argument("dataset", choices=["shakespeare", "python", "preferences", "prepare"],
                      help="shakespeare: the plays (the quickstart's); python: this Python's "
                           "own standard library source (the tuning example's); preferences: "
                           "pairs cut from the plays (the DPO example's); prepare: tokenize a "
                           "job's data into its cached token shard")
    data.add_argument("job", nargs="?", type=Path,
                      help="for prepare: the job's YAML (default: the quickstart)")
    data.add_argument("--to", type=Path, help="target directory (default: the local "
                      "pvc://datasets/<dataset> of mentor run)")
    data.set_defaults(func=_data)
    sync = sub.add_parser("sync", help="send the MLflow records a run kept while its server "
                                       "was down (from where its output is mounted)")
    sync.add_argument("target", type=Path, help="the job's output directory, or its YAML")
    sync.add_argument("--wait", type=float, default=0.0,
                      help="seconds to keep trying while the server does not answer")
    sync.set_defaults(func=_sync)


def _cluster_commands(sub: Any) -> None:
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    cluster.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    cluster.add_argument("--context", help="default: the current context")
    cluster.add_argument("-o", "--output", choices=["json", "yaml"], help="for scripts")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parsed: argparse.ArgumentParser = sub.add_parser(name, parents=[cluster], help=text)
        parsed.set_defaults(func=_on_cluster, cluster=CLUSTER[name])
        return parsed

    submit = command("submit", "submit a TrainingJob or a TuningJob to the cluster")
    submit.add_argument("file", type=Path, help="the job's YAML")
    submit.add_argument("--wait", action="store_true",
                        help="watch it with a progress bar until it ends; fail if it fails")
    get = command("get", "jobs on the cluster, as tables (TrainingJobs, then TuningJobs)")
    get.add_argument("names", nargs="*", help=f"default: every job in the namespace; {JOB_REF}")
    for listing in (get, command("ls", "list the TrainingJobs and TuningJobs on the cluster")):
        listing.add_argument("-l", "--selector", help="label selector, as kubectl's")
        listing.add_argument("-A", "--all-namespaces", action="store_true")
    command("describe", "a job's spec, conditions, failures (or trials) and events") \
        .add_argument("name", help=JOB_REF)
    logs = command("logs", "a job's trainer output, by rank (a TuningJob's: by trial)")
    logs.add_argument("name", help=JOB_REF)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--rank", type=int, help="one node rank (default: all, interleaved)")
    logs.add_argument("--attempt", type=int,
                      help="an earlier attempt: what its failure left, once its pods are gone")
    report = command("report", "summarise a job and plot its loss and GPU-hours")
    report.set_defaults(func=_report)
    report.add_argument("target", type=Path, help="the job's output directory (with "
                        f"metrics.jsonl), its YAML, or a job on the cluster: {JOB_REF}")
    report.add_argument("--png", type=Path, help="where to write the picture "
                        "(default: <output>/report.png, or <name>-report.png for a cluster job)")
    report.add_argument("--prometheus", default=os.environ.get("MENTOR_PROMETHEUS_URL"),
                        help="for a cluster job: the Prometheus that scrapes the operator, "
                             "which keeps its curve (default: $MENTOR_PROMETHEUS_URL)")
    for verb, text in (("suspend", "delete a TrainingJob's pods, keeping its checkpoints"),
                       ("resume", "restart a suspended TrainingJob from its checkpoint"),
                       ("delete", "delete a job and its pods (or trials)")):
        command(verb, text).add_argument("name", help=JOB_REF)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandFailed as e:
        print(f"mentor {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mentor report ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except OSError as e:  # what a command did not foresee (a full disk): still one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"mentor {args.command}: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
