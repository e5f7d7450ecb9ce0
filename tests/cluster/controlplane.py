"""A real, local Kubernetes control plane for the test suite, built from Go modules.

It starts etcd, kube-apiserver (RBAC, default admission plugins with PodSecurity),
kube-controller-manager, kube-scheduler and kwok on loopback, with a self-signed PKI, and waits on
their health endpoints, never on sleeps. It stops exactly the processes it started, by PID, and
keeps all its state in one directory.

By hand:

    python tests/cluster/controlplane.py up        # prints KUBECONFIG=..., Ctrl-C stops it

The pytest fixture `control_plane` (tests/conftest.py) uses the same class.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def build_binaries() -> Path:
    """Build (or find in the cache) the pinned binaries; returns their directory."""
    out = subprocess.run(
        ["bash", str(HERE / "tools" / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- PKI


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass
class PKI:
    """A CA, a serving certificate, an admin client certificate and a service-account key pair."""

    dir: Path

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=2))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("mentor-test-ca"))
            .issuer_name(_name("mentor-test-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _write_key(self.dir / "ca.key", ca_key)

        def issue(name: str, subject: x509.Name, server: bool) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(valid[0])
                .not_valid_after(valid[1])
            )
            usage = x509.oid.ExtendedKeyUsageOID
            if server:
                service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
                sans: list[x509.GeneralName] = [
                    x509.DNSName(n)
                    for n in ("localhost", "kubernetes", "kubernetes.default",
                              "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
                ]
                loopback = ipaddress.ip_address("127.0.0.1")
                sans += [x509.IPAddress(loopback), x509.IPAddress(service_ip)]
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                builder = builder.add_extension(
                    x509.ExtendedKeyUsage([usage.SERVER_AUTH]), critical=False
                )
            else:
                builder = builder.add_extension(
                    x509.ExtendedKeyUsage([usage.CLIENT_AUTH]), critical=False
                )
            cert = builder.sign(ca_key, hashes.SHA256())
            (self.dir / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_key(self.dir / f"{name}.key", key)

        issue("apiserver", _name("kube-apiserver"), server=True)
        issue("admin", _name("mentor-admin", "system:masters"), server=False)

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(self.dir / "sa.key", sa_key)
        (self.dir / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


# ----------------------------------------------------------------------------- processes


@dataclass
class ControlPlane:
    """Starts and stops the local control plane. Use as a context manager."""

    bin_dir: Path
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mentor-k8s-")))
    gpu_nodes: int = 4
    gpus_per_node: int = 8
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pki = PKI(self.work_dir / "pki")
        self.api_port = free_port()
        self.kubeconfig = self.work_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """The environment for a child process that talks to this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> str:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args], env=self.env(), input=input,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait(self, condition: str, *targets: str, timeout: float = 60.0,
             namespace: str | None = None) -> None:
        """``kubectl wait --for=<condition>`` on targets, until the deadline.

        kubectl fails at once, rather than waiting, when it reads an object whose status has a
        null ``conditions`` (``.status.conditions accessor error``), as a CRD's has right after an
        apply; so this retries until the deadline.
        """
        deadline = time.monotonic() + timeout
        scope = ["-n", namespace] if namespace else []
        while True:
            left = max(1, int(deadline - time.monotonic()))
            result = subprocess.run(
                [str(self.bin_dir / "kubectl"), *scope, "wait", f"--for={condition}",
                 f"--timeout={left}s", *targets],
                env=self.env(), capture_output=True, text=True, timeout=left + 30, check=False,
            )
            if result.returncode == 0:
                return
            if time.monotonic() >= deadline or "accessor error" not in result.stderr:
                raise RuntimeError(f"kubectl wait --for={condition} {' '.join(targets)} failed: "
                                   f"{result.stderr.strip()}")
            time.sleep(0.5)

    def wait_established(self, *crds: str) -> None:
        self.wait("condition=Established", *[f"crd/{name}" for name in crds])

    # -- lifecycle

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.pki.create()
        self._write_kubeconfig()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        self._start_scheduler()
        self._start_kwok()
        self.add_gpu_nodes(self.gpu_nodes, self.gpus_per_node)

    def stop(self) -> None:
        """Stop, in reverse order, exactly the processes this instance started."""
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:  # a test's control plane has nothing to drain: a short grace, then kill
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
            del self.procs[name]

    def restart_apiserver(self) -> None:
        """Kill kube-apiserver and start it again on its port: every client's connection and
        watch breaks at once, as when its node fails (a graceful stop drains watches for a
        minute first). kube-scheduler is restarted with it, as on a control-plane node: left
        running through a kill -9 of its API server, v1.36's logs "Scheduler cache is
        corrupted" and binds nothing more until its five-minute requeue."""
        for name in ("kube-scheduler", "kube-apiserver"):
            proc = self.procs.pop(name)
            proc.kill()
            proc.wait(timeout=30)
        self._start_apiserver()
        self._start_scheduler()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.work_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            [str(self.bin_dir / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.work_dir,
        )

    def _wait_healthy(self, name: str, url: str, timeout: float = 120.0, tls: bool = True) -> None:
        """Poll a health endpoint until it answers 200 ok, failing fast if the process died."""
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.pki.ca_crt))
            context.load_cert_chain(*map(str, self.pki.pair("admin")))
            if not url.startswith(self.server):  # components serve with self-signed certs
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)  # poll interval, not a wait for readiness
        raise TimeoutError(f"{name} not healthy at {url} after {timeout}s ({last}): "
                           f"{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.work_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write_kubeconfig(self) -> None:
        crt, key = self.pki.pair("admin")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mentor-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki.ca_crt)}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "mentor-test", "context": {
                "cluster": "mentor-test", "user": "admin"}}],
            "current-context": "mentor-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "etcd", "--name=default", f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait_healthy("etcd", f"{self.etcd_url}/health", tls=False)

    def _start_apiserver(self) -> None:
        crt, key = self.pki.pair("apiserver")
        self._spawn("kube-apiserver", [
            "kube-apiserver",
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
            f"--client-ca-file={self.pki.ca_crt}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-key-file={self.pki.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki.dir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=false",
            "--profiling=false", "-v=1",
        ])
        self._wait_healthy("kube-apiserver", f"{self.server}/readyz", timeout=180)

    def _start_controller_manager(self) -> None:
        port = free_port()
        self._spawn("kube-controller-manager", [
            "kube-controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--leader-elect=false",
            f"--service-account-private-key-file={self.pki.dir / 'sa.key'}",
            f"--root-ca-file={self.pki.ca_crt}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-node-ipam-controller,-cloud-node-lifecycle-controller",
            "--concurrent-gc-syncs=5", "-v=1",
        ])
        self._wait_healthy("kube-controller-manager", f"https://127.0.0.1:{port}/healthz")

    def _start_scheduler(self) -> None:
        port = free_port()
        self._spawn("kube-scheduler", [
            "kube-scheduler",
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--leader-elect=false", "-v=1",
        ])
        self._wait_healthy("kube-scheduler", f"https://127.0.0.1:{port}/healthz")

    def _start_kwok(self) -> None:
        port = free_port()
        self._spawn("kwok", [
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={HERE / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{port}",
            "--cidr=10.244.0.1/16", "--node-ip=10.240.0.1",
        ])
        self._wait_healthy("kwok", f"http://127.0.0.1:{port}/healthz", tls=False)

    # -- fake GPU nodes

    def add_gpu_nodes(self, count: int, gpus: int, prefix: str = "gpu-node") -> list[str]:
        """Register kwok nodes with `nvidia.com/gpu` capacity, and wait until they are Ready."""
        names = [f"{prefix}-{i}" for i in range(count)]
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/gpu.product": GPU_PRODUCT,
                        "nvidia.com/gpu.count": str(gpus),
                        "nvidia.com/gpu.memory": "81559",
                    },
                },
                "spec": {},
                "status": {"capacity": resources, "allocatable": resources},
            }
            for name in names
        ]
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                            "items": nodes}))
        # kubectl waits on the nodes one after another: hundreds take longer than a minute
        self.wait("condition=Ready", *[f"node/{n}" for n in names], timeout=60 + len(names) / 4)
        return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up"])
    parser.add_argument("--dir", type=Path, help="state directory (default: a new temp dir)")
    parser.add_argument("--nodes", type=int, default=4, help="fake GPU nodes")
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    args = parser.parse_args(argv)
    bin_dir = build_binaries()
    if args.command == "build":
        print(bin_dir)
        return 0
    kwargs = {"work_dir": args.dir} if args.dir else {}
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ControlPlane(bin_dir, gpu_nodes=args.nodes, gpus_per_node=args.gpus, **kwargs) as cp:
        print(f"control plane ready in {time.monotonic() - started:.1f}s", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"export PATH={cp.bin_dir}:$PATH", flush=True)
        print("Ctrl-C to stop.", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
