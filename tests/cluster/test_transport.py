"""The operator's requests and watches on its own HTTP/1.1 connections (mentor.controller.
transport), against the real API server: kept alive and shared, replaced unseen when the server
has closed them, every refusal the client's own ApiException, and the generated client's
urllib3 path kept behind a proxy.

Between the operator and the API server stands a TCP relay of the test's (TLS passes through it
untouched): it counts the connections opened, and cuts them all at will, as a server does with
its idle connections.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from controlplane import PKI, ControlPlane, free_port
from kubernetes.client.exceptions import ApiException

from mentor.controller import kube

pytestmark = pytest.mark.cluster


class Relay:
    """A TCP relay to one address. With `proxy`, an HTTP CONNECT proxy instead: each tunnel's
    request line is kept in `tunnels`."""

    def __init__(self, target: tuple[str, int], proxy: bool = False) -> None:
        self.target, self.proxy = target, proxy
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.tunnels: list[str] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Close every connection at both ends."""
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.proxy:
            request = b""
            while b"\r\n\r\n" not in request:
                request += client.recv(4096)
            self.tunnels.append(request.split(b"\r\n")[0].decode())
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        upstream = socket.create_connection(self.target)
        with self._lock:
            self._open += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextmanager
def client_of(control_plane: ControlPlane, tmp_path: Path, **cluster: str) -> Iterator[None]:
    """The operator's one API client made from the control plane's kubeconfig with these
    cluster fields changed (server, certificate-authority, proxy-url), for the block."""
    config = json.loads(control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"].update(cluster)
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    before = os.environ["KUBECONFIG"]
    os.environ["KUBECONFIG"] = str(path)
    kube.api_client.cache_clear()
    try:
        yield
    finally:
        os.environ["KUBECONFIG"] = before
        kube.api_client.cache_clear()


@pytest.fixture
def relay(control_plane: ControlPlane) -> Iterator[Relay]:
    server = urlsplit(control_plane.server)
    r = Relay((server.hostname or "127.0.0.1", server.port or 443))
    yield r
    r.close()


def secret(name: str, size: int = 0) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"blob": "x" * size}}


def test_requests_share_one_kept_alive_connection_and_read_long_answers_whole(
        control_plane: ControlPlane, namespace: str, relay: Relay, tmp_path: Path) -> None:
    with client_of(control_plane, tmp_path, server=f"https://127.0.0.1:{relay.port}"):
        for i in range(20):
            created = kube.create(namespace, secret(f"s{i}", 8192))
            assert created["metadata"]["name"] == f"s{i}"
        listed = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets")
    assert relay.accepted == 1  # twenty-one requests, one connection
    # 160 KiB: the API server sends it in chunks, read to the last
    assert len(orjson.dumps(listed)) > 160_000
    names = {s["metadata"]["name"] for s in listed["items"]} & {f"s{i}" for i in range(20)}
    assert len(names) == 20
    by_kubectl = json.loads(control_plane.kubectl("get", "secret", "s7", "-n", namespace,
                                                  "-o", "json"))
    item = next(s for s in listed["items"] if s["metadata"]["name"] == "s7")
    assert (item["data"], item["metadata"]["uid"]) == (by_kubectl["data"],
                                                        by_kubectl["metadata"]["uid"])


def test_a_connection_the_server_closed_is_replaced_without_an_error(
        control_plane: ControlPlane, namespace: str, relay: Relay, tmp_path: Path) -> None:
    with client_of(control_plane, tmp_path, server=f"https://127.0.0.1:{relay.port}"):
        kube.create(namespace, secret("before"))
        relay.cut()  # the kept-alive connection is closed while idle
        after = kube.create(namespace, secret("after"))
        assert after["metadata"]["name"] == "after"
        relay.cut()
        lines = kube.stream(f"/api/v1/namespaces/{namespace}/secrets?watch=true&"
                            "timeoutSeconds=1", timeout=10)
        seen = {orjson.loads(line)["object"]["metadata"]["name"] for line in lines}
    assert relay.accepted == 3
    assert {"before", "after"} <= seen


def test_refusals_are_the_client_s_exceptions_with_the_server_s_message(
        control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    with pytest.raises(ApiException) as missing:
        kube.request("GET", f"{path}/nothing")
    assert missing.value.status == 404
    assert 'secrets "nothing" not found' in kube.error_body(missing.value)["message"]
    kube.create(namespace, secret("twice"))
    with pytest.raises(ApiException) as again:
        kube.create(namespace, secret("twice"))
    assert again.value.status == 409
    with pytest.raises(ApiException) as invalid:
        kube.create(namespace, secret("Not_A_Name"))
    assert invalid.value.status == 422
    assert "metadata.name" in kube.error_body(invalid.value)["message"]
    with pytest.raises(ApiException) as no_kind:
        list(kube.stream(f"/apis/mentor.dev/v9/namespaces/{namespace}/nothings?watch=true",
                         timeout=10))
    assert no_kind.value.status == 404


def test_an_unreachable_or_untrusted_server_is_status_0_naming_the_cause(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    with client_of(control_plane, tmp_path, server=f"https://127.0.0.1:{free_port()}"), \
            pytest.raises(ApiException) as refused:
        kube.request("GET", "/api/v1/namespaces")
    assert refused.value.status == 0
    assert "Connection refused" in str(refused.value.reason)
    other = PKI(tmp_path / "other-ca")
    other.create()
    with client_of(control_plane, tmp_path, **{"certificate-authority": str(other.ca_crt)}), \
            pytest.raises(ApiException) as untrusted:
        kube.request("GET", "/api/v1/namespaces")
    assert untrusted.value.status == 0
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value.reason)


def test_behind_a_proxy_requests_and_watches_go_through_its_tunnel(
        control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    server = urlsplit(control_plane.server)
    proxy = Relay((server.hostname or "127.0.0.1", server.port or 443), proxy=True)
    try:
        with client_of(control_plane, tmp_path, **{"proxy-url": f"http://127.0.0.1:{proxy.port}"}):
            kube.create(namespace, secret("proxied"))
            got = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets/proxied")
            lines = kube.stream(f"/api/v1/namespaces/{namespace}/secrets?watch=true&"
                                "timeoutSeconds=1", timeout=10)
            seen = [orjson.loads(line)["object"]["metadata"]["name"] for line in lines]
            with pytest.raises(ApiException) as missing:
                kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets/nothing")
    finally:
        proxy.close()
    assert got["metadata"]["name"] == "proxied"
    assert "proxied" in seen
    assert missing.value.status == 404
    assert proxy.tunnels and all(t.startswith(f"CONNECT 127.0.0.1:{server.port} ")
                                 for t in proxy.tunnels)
