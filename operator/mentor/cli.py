"""The `mentor` command line. Errors are one line each, never a traceback."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from mentor import __version__

SAMPLE_TOKENS = 200  # what the quickstart's summary lets the model say


class Failure(Exception):
    """A command that cannot go on; its message is the one line the user sees."""


def run_operator(liveness: str, standalone: bool) -> int:
    """Run Kopf with mentor.main's handlers, watching MENTOR_NAMESPACES or the whole cluster."""
    import asyncio
    import faulthandler
    import signal

    import kopf

    import mentor.main  # registers the handlers

    # `kill -USR1` prints every thread's stack to the log: what a stuck operator is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    kopf.configure(log_format=kopf.LogFormat.FULL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    namespaces = list(mentor.main.SETTINGS.namespaces)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness,
        standalone=standalone,
    ))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mentor", description=__doc__)
    top.add_argument("--version", action="version", version=f"mentor {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    op = sub.add_parser("operator", help="run the operator (kopf) against the current cluster")
    op.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                    help="where Kopf serves its liveness probe")
    op.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    run = sub.add_parser("run", help="run a job on this machine, with no cluster")
    run.add_argument("file", nargs="?", type=Path,
                     help="the job's YAML (default: the embedded quickstart)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar: a plain line every tenth of the run instead")
    run.add_argument("--fresh", action="store_true",
                     help="discard what an earlier run left in the output and start over")

    gen = sub.add_parser("generate", help="sample text from a trained model")
    gen.add_argument("target", type=Path, help="the job's YAML or its output directory")
    gen.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    gen.add_argument("--tokens", type=int, default=SAMPLE_TOKENS, help="how many to sample")
    gen.add_argument("--temperature", type=float, default=0.8,
                     help="0 is greedy; higher is more adventurous")
    gen.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    cluster.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    cluster.add_argument("--context", help="default: the current context")
    cluster.add_argument("-o", "--output", choices=["json", "yaml"], help="for scripts")
    submit = sub.add_parser("submit", parents=[cluster], help="submit a job to the cluster")
    submit.add_argument("file", type=Path, help="the job's YAML")
    submit.add_argument("--wait", action="store_true",
                        help="watch it with a progress bar until it ends; fail if it fails")
    get = sub.add_parser("get", parents=[cluster], help="jobs on the cluster, as a table")
    get.add_argument("names", nargs="*", help="default: every job in the namespace")
    get.add_argument("-l", "--selector", help="label selector, as kubectl's")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    ls = sub.add_parser("ls", parents=[cluster], help="list the jobs on the cluster")
    ls.add_argument("-l", "--selector", help="label selector, as kubectl's")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    describe = sub.add_parser("describe", parents=[cluster],
                              help="a job's spec, conditions, failures and events")
    describe.add_argument("name")
    logs = sub.add_parser("logs", parents=[cluster], help="a job's trainer output, by rank")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--rank", type=int, help="one node rank (default: all, interleaved)")
    logs.add_argument("--attempt", type=int,
                      help="an earlier attempt: what its failure left, once its pods are gone")
    report = sub.add_parser("report", parents=[cluster],
                            help="summarise a job and plot its loss and GPU-hours")
    report.add_argument("target", type=Path, help="the job's output directory (with "
                        "metrics.jsonl), its YAML, or the name of a job on the cluster")
    report.add_argument("--png", type=Path, help="where to write the picture "
                        "(default: <output>/report.png, or <name>-report.png for a cluster job)")
    report.add_argument("--prometheus", default=os.environ.get("MENTOR_PROMETHEUS_URL"),
                        help="for a cluster job: the Prometheus that scrapes the operator, "
                             "which keeps its curve (default: $MENTOR_PROMETHEUS_URL)")
    for verb, text in (("suspend", "delete a job's pods, keeping its checkpoints"),
                       ("resume", "restart a suspended job from its checkpoint"),
                       ("delete", "delete a job and its pods")):
        sub.add_parser(verb, parents=[cluster], help=text).add_argument("name")
    data = sub.add_parser("data", help="fetch public sample data")
    data.add_argument("dataset", choices=["shakespeare", "python", "prepare"],
                      help="shakespeare: the plays (the quickstart's); python: this Python's "
                           "own standard library source (the tuning example's); prepare: "
                           "tokenize a job's data into its cached token shard")
    data.add_argument("job", nargs="?", type=Path,
                      help="for prepare: the job's YAML (default: the quickstart)")
    data.add_argument("--to", type=Path, help="target directory (default: the local "
                      "pvc://datasets/<dataset> of mentor run)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "version":
            print(__version__)
        elif args.command == "operator":
            return run_operator(args.liveness, args.standalone)
        elif args.command == "run":
            return run_locally(args.file, not args.no_progress, args.fresh)
        elif args.command == "report" and not is_job_name(str(args.target)):
            return report_job(args.target, args.png)
        elif args.command == "generate":
            print(generate(args.target, args.prompt, args.tokens, args.temperature, args.seed))
        elif args.command == "data" and args.dataset == "prepare":
            prepare_data(args.job)
        elif args.command == "data":
            fetch_data(args.dataset, args.to)
        else:
            return on_cluster(args)
    except Failure as e:
        print(f"mentor {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def on_cluster(args: argparse.Namespace) -> int:
    """The commands for jobs on a cluster (mentor.cluster_cli), with one-line errors."""
    from mentor import cluster_cli as cc
    from mentor.sdk import Client, MentorError

    try:
        client = Client(namespace=args.namespace, kubeconfig=args.kubeconfig,
                        context=args.context)
        if args.command == "submit":
            return cc.submit(client, args.file, args.wait, args.output)
        if args.command in ("get", "ls"):
            return cc.get(client, getattr(args, "names", []), args.selector,
                          args.all_namespaces, args.output)
        if args.command == "report":
            return cc.report(client, str(args.target), args.prometheus, args.png)
        if args.command == "describe":
            return cc.describe(client, args.name, args.output)
        if args.command == "logs":
            return cc.logs(client, args.name, args.follow, args.rank, args.attempt)
        return cc.change(client, args.command, args.name)
    except MentorError as e:
        raise Failure(str(e)) from None


def is_job_name(target: str) -> bool:
    """A name a job on the cluster could have, and no file or directory here."""
    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", target)) and \
        not Path(target).exists()


def load_yaml(file: Path) -> Any:
    """A YAML document; errors name the file, on one line."""
    try:
        with file.open() as stream:
            return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise Failure(f"{file} is not valid YAML: " + " ".join(str(e).split())) from None
    except OSError as e:
        raise Failure(f"cannot read {file}: {e.strerror}") from None


def load_job(file: Path | None) -> Any:
    """A job from its YAML, validated as the API server would; every error is one Failure."""
    from mentor import local
    from mentor.validation import InvalidJob

    try:
        return local.load(file)
    except InvalidJob as e:
        raise Failure(f"{file or 'the quickstart'} is invalid:\n" +
                      "\n".join(f"  {error}" for error in e.errors)) from None
    except yaml.YAMLError as e:
        raise Failure(f"{file} is not valid YAML: " + " ".join(str(e).split())) from None
    except OSError as e:
        raise Failure(f"cannot read {file}: {e.strerror}") from None


def output_of(target: Path) -> tuple[Path, str]:
    """A job's output directory and name, from its YAML or from the directory itself."""
    from mentor import local

    if target.is_file():
        job = load_job(target)
        return Path(local.local_path(job.spec.output.uri) or "."), job.metadata.name
    if not target.is_dir():
        raise Failure(f"{target}: no such job file or output directory")
    return target, target.name


def report_job(target: Path, png: Path | None) -> int:
    from mentor import report

    output, name = output_of(target)
    if (output / "tuning.json").exists():
        from mentor.local_tuning import read_summary

        trials, winner = read_summary(output / "tuning.json")
        print(report.tuning_summary(name, trials, winner))
        print(f"  picture       "
              f"{report.plot_trials(name, trials, winner, png or output / 'report.png')}")
        return 0
    log = output / "metrics.jsonl"
    if not log.exists():
        raise Failure(f"no metrics log at {log}: has the job run?")
    history = report.read_history(log)
    print(report.summary(name, history))
    if history.steps:
        print(f"  picture       {report.plot(name, history, png or output / 'report.png')}")
    return 0


def generate(target: Path, prompt: str, tokens: int, temperature: float, seed: int) -> str:
    from mentor_trainer.errors import DataNotFound
    from mentor_trainer.generate import load, sample

    output, _ = output_of(target)
    try:
        model, tokenizer = load(output)
    except DataNotFound as e:
        raise Failure(str(e)) from None
    try:
        return prompt + sample(model, tokenizer, prompt, tokens, temperature, seed)
    except ValueError as e:
        raise Failure(str(e)) from None


def fetch_data(dataset: str, to: Path | None) -> None:
    from mentor.local import local_path
    from mentor.sample_data import fetch_shakespeare, python_source

    target = to or Path(local_path(f"pvc://datasets/{dataset}") or ".")
    files = fetch_shakespeare(target) if dataset == "shakespeare" else python_source(target)
    size = sum(f.stat().st_size for f in files)
    what = "plays" if dataset == "shakespeare" else "modules of Python's own source"
    print(f"{len(files)} {what} ({size / 1e6:.1f} MB) in {target}")


def prepare_data(file: Path | None) -> None:
    """Tokenize a job's data once into its token shard, as rank 0 of the job would."""
    import time

    from tqdm import tqdm

    from mentor import local
    from mentor.api.kinds import TrainingJob
    from mentor_trainer import shards
    from mentor_trainer.errors import TrainerError
    from mentor_trainer.tokenizer import known_tokenizer

    job = load_job(file)
    if not isinstance(job, TrainingJob):
        raise Failure("data prepare takes a TrainingJob")
    config = local.local_config(job)
    started = time.monotonic()
    try:
        with tqdm(unit="B", unit_scale=True, desc="tokenizing") as bar:
            path = shards.prepare(config.data, known_tokenizer(config),
                                  Path(config.output.uri) / ".mentor" / "tokens", bar.update)
    except TrainerError as e:
        raise Failure(str(e)) from None
    shard = shards.open_shard(path)
    print(f"{shard.meta['tokens']:,} tokens of {shard.meta['documents']:,} documents "
          f"({shard.tokens.dtype}) in {path} ({time.monotonic() - started:.1f} s; "
          "ready, or found ready)")


def run_locally(file: Path | None, progress: bool, fresh: bool) -> int:
    from mentor import local, report, reruns
    from mentor.api.kinds import TuningJob

    job = load_job(file)
    if isinstance(job, TuningJob):
        from mentor import local_tuning

        try:
            return local_tuning.run(job, progress=progress, fresh=fresh)
        except local_tuning.TuningFailed as e:
            raise Failure(str(e)) from None
    try:
        prior = local.prepare(job, fresh)
    except reruns.Refused as e:
        raise Failure(str(e)) from None
    if prior is not None and prior.finished and prior.history is not None:
        print(f"{job.kind} {job.metadata.name}: already finished, nothing to train "
              "(--fresh starts over). Its figures:")
        print("  " + report.summary(job.metadata.name, prior.history).replace("\n", "\n  "))
        return 0
    outcome = local.run(job, progress=progress)
    print(local.summary(job, outcome))
    if outcome.exit_code == 0:
        from mentor.local_tuning import record_run

        record_run(job)  # a TuningJob's trainingJobRef finds this model
        print(_sample_lines(file, Path(local.local_path(job.spec.output.uri) or ".")))
    return outcome.exit_code


def _sample_lines(file: Path | None, output: Path) -> str:
    """The end of a successful run's summary: a few lines the model wrote."""
    from mentor_trainer.generate import load, sample

    model, tokenizer = load(output)
    text = sample(model, tokenizer, "", SAMPLE_TOKENS)
    command = f"mentor generate {file or output}"
    lines = [ln for ln in text.strip("\n").splitlines() if ln.strip()][:8]
    return "\n".join([f"  sample        ({command} for more)", *(f"    | {ln}" for ln in lines)])


if __name__ == "__main__":
    sys.exit(main())
