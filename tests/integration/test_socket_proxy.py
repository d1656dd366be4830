"""The supervisor needs only read-only GETs of the Docker API: it runs behind lab.socket_proxy, which forwards GET and
HEAD of /_ping, /version, /info, /events, /containers/json and /containers/<id>/json and refuses everything else.

The supervisor runs from this checkout in a network namespace of its own (a simulated host, lab.netns) with
DOCKER_HOST pointing at the proxy's socket; the test's own containers are created directly on the engine.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from lab.engine import IMAGE, TEST_LABEL
from lab.netns import Lab, Node
from lab.socket_proxy import Proxy, Request, is_allowed
from tests.integration.dockerlab import ContainerLab, require_engine, wait_until

pytestmark = pytest.mark.integration

ENV_VIP, OWN_VIP = "198.51.100.100", "198.51.100.120"
# Every request the supervisor may make, by endpoint (the API version prefix stripped).
SUPERVISOR_ENDPOINTS = re.compile(r"/(_ping|version|info|events|containers/json|containers/[0-9a-f]{64}/json)")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    require_engine()
    with Proxy(tmp_path / "docker.sock") as proxy:
        yield proxy


@pytest.fixture
def proxy_client(proxy: Proxy) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=proxy.url, timeout=15)
    try:
        yield client
    finally:
        client.close()


def instances(node: Node) -> set[int]:
    path = node.run_dir / "keepalived.conf"
    text = path.read_text() if path.exists() else ""
    return {int(vrid) for vrid in re.findall(r"virtual_router_id (\d+)", text)}


def test_the_supervisor_works_through_a_read_only_proxy(
    lab: Lab, docker_lab: ContainerLab, proxy: Proxy, proxy_client: docker.DockerClient
) -> None:
    node = lab.add_node("a", 11)
    node.start_supervisor(
        {
            "DOCKER_HOST": proxy.url,
            "LABEL_SELECTOR": f"{TEST_LABEL}={docker_lab.run_id}",
            "VIRTUAL_IP": ENV_VIP,
            "VRID": "65",
            "ADVERT_INT": "0.5",
        }
    )
    wait_until(lambda: node.has(ENV_VIP), 20, "the env instance's VIP")
    wait_until(lambda: "connected to docker engine" in node.log_text(), 20, "the supervisor connected via the proxy")

    labels = {"keepalived.vip": OWN_VIP, "keepalived.vrid": "90", "keepalived.check": "none"}
    container = docker_lab.create(labels)
    wait_until(lambda: instances(node) == {65, 90}, 20, "VI_90 in the installed config (virtual_router_id 90)")
    wait_until(lambda: node.has(OWN_VIP), 20, "the container's VIP on the node")

    container.kill()  # learnt only from the /events stream through the proxy
    wait_until(lambda: not node.has(OWN_VIP), 20, "the container's VIP released after the kill")
    assert node.has(ENV_VIP)

    allowed, refused = proxy.seen()
    assert refused == [], f"the supervisor attempted requests the proxy refused: {refused}"
    assert {r.method for r in allowed} <= {"GET", "HEAD"}
    endpoints = {r.endpoint for r in allowed}
    unexpected = {e for e in endpoints if not SUPERVISOR_ENDPOINTS.fullmatch(e)}
    assert not unexpected, f"endpoints outside the supervisor's known set: {unexpected}"
    for needed in ("/_ping", "/events", "/containers/json", f"/containers/{container.id}/json"):
        assert needed in endpoints, f"{needed} never went through the proxy (seen: {sorted(endpoints)})"

    # A write through the same proxy is refused and never reaches the engine.
    with pytest.raises(docker.errors.APIError) as refusal:
        proxy_client.containers.create(IMAGE, ["true"], labels={TEST_LABEL: docker_lab.run_id})
    assert refusal.value.status_code == 403
    _, refused = proxy.seen()
    assert [(r.method, r.endpoint) for r in refused] == [("POST", "/containers/create")]
    mine = docker_lab.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={docker_lab.run_id}"})
    assert [c.id for c in mine] == [container.id]


def test_reads_pass_and_writes_are_refused(
    docker_lab: ContainerLab, proxy: Proxy, proxy_client: docker.DockerClient
) -> None:
    container = docker_lab.create({"kat.proxy": "yes"}, command="sleep 3600")
    cid = container.id or ""
    assert proxy_client.ping()
    assert proxy_client.version()["ApiVersion"]
    assert proxy_client.info()["ID"]
    listed = proxy_client.api.containers(all=True, filters={"label": f"{TEST_LABEL}={docker_lab.run_id}"})
    assert [c["Id"] for c in listed] == [cid]
    assert proxy_client.api.inspect_container(cid)["State"]["Running"]

    writes: list[tuple[str, Callable[[], object]]] = [
        ("kill", lambda: proxy_client.api.kill(cid)),
        ("stop", lambda: proxy_client.api.stop(cid, timeout=0)),
        ("remove", lambda: proxy_client.api.remove_container(cid, force=True)),
        ("exec", lambda: proxy_client.api.exec_create(cid, ["true"])),
        ("logs", lambda: proxy_client.api.logs(cid)),  # a GET, but not one of the allowed endpoints
        ("images", lambda: proxy_client.api.images()),
    ]
    for what, call in writes:
        with pytest.raises(docker.errors.APIError) as refusal:
            call()
        assert refusal.value.status_code == 403, what
    container.reload()
    assert container.status == "running"
    _, refused = proxy.seen()
    assert len(refused) == len(writes)
    assert not any(is_allowed(r.method, r.path) for r in refused)


def test_events_stream_through_the_proxy(docker_lab: ContainerLab, proxy_client: docker.DockerClient) -> None:
    stream = proxy_client.events(
        decode=True, filters={"type": "container", "label": f"{TEST_LABEL}={docker_lab.run_id}"}
    )
    actions: list[str] = []

    def read() -> None:
        for event in stream:
            actions.append(str(event.get("Action")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        container = docker_lab.create(command="sleep 3600")
        wait_until(lambda: "start" in actions, 20, "the start event through the proxy")
        container.kill()
        wait_until(lambda: "die" in actions, 20, "the die event on the same long-lived stream")
    finally:
        stream.close()
    reader.join(10)
    assert not reader.is_alive()


def test_one_checked_request_per_connection(proxy: Proxy) -> None:
    """A second request pipelined behind an allowed one is dropped, not forwarded unchecked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(15)
        conn.connect(str(proxy.path))
        conn.sendall(
            b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: keep-alive\r\n\r\n"
            b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nOK")
    assert answer.count(b"HTTP/1.1 ") == 1
    allowed, refused = proxy.seen()
    assert allowed == [Request("GET", "/_ping")] and refused == []
