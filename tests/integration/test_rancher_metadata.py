"""supervisor.adapters.rancher_metadata against lab.rancher_metadata (a local fake of Rancher 1.x's metadata
service on 127.0.0.1): the first view, changes seen through the long-poll, the service going away and coming back.

Nothing here needs root, Docker or Rancher; every wait is bounded and fails naming what it waited for.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lab.engine import wait_until
from lab.rancher_metadata import V2, V3, FakeRancherMetadata
from supervisor.adapters.rancher_metadata import MetadataUnavailable, RancherMetadata, _Client, fetch_view
from supervisor.core.rancher import RancherView, discovered_external_ids, peer_addresses

pytestmark = pytest.mark.integration

OWN_ID = "5e0f6bd05a4c2f1f3d7c1c1c5b1f3a0e3d2b1a09f8e7d6c5b4a3928170605040"
LB_ID = "92e14804f0d79607e948d521c47086b782149aed3579ed077519b1f83f68a4fe"
WAIT = 15.0  # bound of every wait for an outcome (never a speed assertion)
MAX_WAIT = 60  # the long-poll's maxWait: far longer than WAIT, so a change seen in time came through a long-poll


class Views:
    """Collects the views handed to on_change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.views: list[RancherView] = []

    def __call__(self, view: RancherView) -> None:
        with self._lock:
            self.views.append(view)

    def __len__(self) -> int:
        with self._lock:
            return len(self.views)

    @property
    def last(self) -> RancherView:
        with self._lock:
            return self.views[-1]


@pytest.fixture
def fake() -> Iterator[FakeRancherMetadata]:
    server = FakeRancherMetadata()
    node1 = server.add_host("node1", "192.0.2.11", uuid="host-1")
    server.add_container(
        "keepalived-keepalived-1", node1, stack_name="keepalived", service_name="keepalived", external_id=OWN_ID
    )
    server.add_container(
        "lb-haproxy-1", node1, stack_name="lb", service_name="haproxy", ports=["80:80/tcp"], external_id=LB_ID
    )
    server.set_self(node1)  # host network: self/host only, no self/container nor self/service
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def views() -> Views:
    return Views()


@pytest.fixture
def follower(fake: FakeRancherMetadata, views: Views) -> Iterator[RancherMetadata]:
    adapter = RancherMetadata(
        fake.url(V2),
        views,
        own_container_id=OWN_ID,
        max_wait=MAX_WAIT,
        retry_initial=0.05,
        retry_max=0.5,
        unavailable_after=0.0,
    )
    adapter.start()
    try:
        yield adapter
    finally:
        adapter.stop(0.1)
        fake.stop()  # drops the long-poll in flight, so the thread can end
        assert adapter.stop(5.0), "the adapter thread did not end"


def peers_of(view: RancherView) -> tuple[str | None, list[str]]:
    return peer_addresses(view)


def test_first_view(follower: RancherMetadata, views: Views) -> None:
    wait_until(lambda: len(views) == 1, WAIT, "the first view")
    view = views.last
    assert follower.available and follower.problem() is None
    assert follower.view == view
    assert view.self_host is not None and view.self_host.uuid == "host-1"
    assert view.self_source == "container id" and view.self_service == ("keepalived", "keepalived")
    assert peers_of(view) == ("192.0.2.11", [])
    assert discovered_external_ids(view, 80) == {LB_ID}
    assert view.problems == ()


def test_a_peer_joins_and_leaves_through_the_long_poll(
    fake: FakeRancherMetadata, follower: RancherMetadata, views: Views
) -> None:
    wait_until(lambda: len(views) == 1, WAIT, "the first view")
    node2 = fake.add_host("node2", "192.0.2.12", uuid="host-2")
    peer = fake.add_container("keepalived-keepalived-2", node2, stack_name="keepalived", service_name="keepalived")
    wait_until(lambda: peers_of(views.last) == ("192.0.2.11", ["192.0.2.12"]), WAIT, "node2 as a peer")

    fake.remove_container(peer)
    fake.remove_host(node2)
    wait_until(lambda: peers_of(views.last) == ("192.0.2.11", []), WAIT, "node2 no longer a peer")

    # Every request to /version after the first was a long-poll on the version the adapter had.
    version_requests = fake.requests(f"/{V2}/version")
    polls = [r for r in version_requests if r.query.get("wait") == "true"]
    assert polls, "no long-poll"
    assert all(r.query.get("maxWait") == str(MAX_WAIT) and r.query.get("value") for r in polls)
    assert all(r.accept == "application/json" for r in fake.requests())
    # No poll loop: with maxWait=60 each change costs one long-poll answer and one re-read; /containers was read
    # once at start and at most once per version change (4 changes: add host, add container, remove both).
    assert 1 < len(fake.requests(f"/{V2}/containers")) <= 1 + 4


def test_a_new_version_with_nothing_new_calls_nobody(
    fake: FakeRancherMetadata, follower: RancherMetadata, views: Views
) -> None:
    wait_until(lambda: len(views) == 1, WAIT, "the first view")
    reads = len(fake.requests(f"/{V2}/containers"))
    fake.bump()
    wait_until(lambda: len(fake.requests(f"/{V2}/containers")) > reads, WAIT, "a re-read after the bump")
    node2 = fake.add_host("node2", "192.0.2.12")
    fake.add_container("keepalived-keepalived-2", node2, stack_name="keepalived", service_name="keepalived")
    wait_until(lambda: peers_of(views.last)[1] == ["192.0.2.12"], WAIT, "node2 as a peer")
    # The bump alone delivered nothing: the views delivered are the first, then those with node2 (the host alone
    # changes the view too), each different from the one before.
    assert all(a != b for a, b in zip(views.views, views.views[1:], strict=False))
    assert views.views[0].hosts != views.views[1].hosts


def test_the_service_goes_away_and_comes_back(
    fake: FakeRancherMetadata, follower: RancherMetadata, views: Views
) -> None:
    wait_until(lambda: len(views) == 1, WAIT, "the first view")
    first = views.last
    fake.stop()
    wait_until(lambda: not follower.available, WAIT, "the adapter to notice the service is gone")
    problem = follower.problem()
    assert problem is not None and "unreachable" in problem and fake.base_url in problem
    assert follower.view == first  # the last view is kept
    count = len(views)

    # While it is away the environment changes: the front end goes, a peer comes.
    fake.remove_container(next(c.uuid for c in first.containers if c.external_id == LB_ID))
    node2 = fake.add_host("node2", "192.0.2.12")
    fake.add_container("keepalived-keepalived-2", node2, stack_name="keepalived", service_name="keepalived")
    assert len(views) == count

    fake.start()  # the same port
    wait_until(lambda: follower.available, WAIT, "the adapter to recover")
    wait_until(lambda: peers_of(views.last) == ("192.0.2.11", ["192.0.2.12"]), WAIT, "the view after the outage")
    assert discovered_external_ids(views.last, 80) == set()
    assert follower.problem() is None


def test_a_broken_service_is_unavailable_until_it_answers_again(
    fake: FakeRancherMetadata, follower: RancherMetadata, views: Views
) -> None:
    wait_until(lambda: len(views) == 1, WAIT, "the first view")
    fake.set_failing(500)
    fake.bump()  # the long-poll answers, the re-read fails
    wait_until(lambda: not follower.available, WAIT, "the adapter to notice HTTP 500")
    problem = follower.problem()
    assert problem is not None and "HTTP 500" in problem
    fake.set_failing(None)
    wait_until(lambda: follower.available, WAIT, "the adapter to recover")
    assert len(views) == 1  # nothing changed in the view


def test_an_unreachable_service_at_start_then_reachable(views: Views) -> None:
    fake = FakeRancherMetadata()
    node1 = fake.add_host("node1", "192.0.2.11")
    fake.add_container("keepalived-keepalived-1", node1, stack_name="keepalived", service_name="keepalived")
    fake.set_self(node1)
    fake.start()
    fake.stop()  # a port that was ours, now refusing connections
    adapter = RancherMetadata(
        fake.url(V2), views, max_wait=MAX_WAIT, retry_initial=0.05, retry_max=0.3, unavailable_after=0.0
    )
    adapter.start()
    try:
        wait_until(lambda: adapter.problem() is not None, WAIT, "a problem while unreachable")
        assert not adapter.available and adapter.view is None and len(views) == 0
        fake.start()
        wait_until(lambda: len(views) == 1, WAIT, "the first view once reachable")
        assert adapter.available
    finally:
        adapter.stop(0.1)
        fake.stop()
        assert adapter.stop(5.0)


def test_an_on_change_that_raises_does_not_stop_the_adapter(fake: FakeRancherMetadata) -> None:
    seen = Views()

    def flaky(view: RancherView) -> None:
        seen(view)
        if len(seen) == 1:
            raise RuntimeError("the caller's bug")

    adapter = RancherMetadata(fake.url(V2), flaky, own_container_id=OWN_ID, max_wait=MAX_WAIT, retry_initial=0.05)
    adapter.start()
    try:
        wait_until(lambda: len(seen) == 1, WAIT, "the first view")
        node2 = fake.add_host("node2", "192.0.2.12")
        fake.add_container("keepalived-keepalived-2", node2, stack_name="keepalived", service_name="keepalived")
        wait_until(lambda: peers_of(seen.last)[1] == ["192.0.2.12"], WAIT, "the next view")
        assert adapter.available and adapter.problem() is None
    finally:
        adapter.stop(0.1)
        fake.stop()
        assert adapter.stop(5.0)


def test_fetch_view_once(fake: FakeRancherMetadata, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the environment is never used: the metadata service is on the local network.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    for api in (V2, V3):
        view = fetch_view(fake.url(api), timeout=5.0, own_container_id=OWN_ID)
        assert view is not None, api
        assert view.self_service == ("keepalived", "keepalived")
        assert discovered_external_ids(view, 80) == {LB_ID}
    fake.stop()
    assert fetch_view(fake.url(V2), timeout=2.0) is None


def test_self_answers_for_a_container_on_the_managed_network(fake: FakeRancherMetadata) -> None:
    # Without the own id the adapter relies on /self/container, which the real service answers for containers on
    # its managed network.
    node1 = "host-1"
    me = fake.add_container("keepalived-keepalived-9", node1, stack_name="keepalived", service_name="keepalived")
    fake.set_self(node1, me)
    view = fetch_view(fake.url(V2))
    assert view is not None and view.self_source == "self/container"
    assert view.self_service == ("keepalived", "keepalived")


def one_answer(reply: bytes) -> tuple[str, threading.Thread]:
    """A server on 127.0.0.1 that answers one request with `reply` (raw bytes) and closes; its URL and thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)

    def run() -> None:
        with listener:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                return
            with connection:
                connection.settimeout(WAIT)
                connection.recv(65536)
                connection.sendall(reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/{V2}", thread


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b'HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n"1"', "IncompleteRead"),
        (b'HTTP/1.0 200 OK\r\nContent-Length: 99999999999\r\n\r\n"1"', "larger than"),
        (b"HTTP/1.0 200 OK\r\n\r\nnot json", "not JSON"),
        (b"HTTP/1.0 200 OK\r\n\r\n[1, 2]", "not a version"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "GET /version"),
        (b"HTTP/1.0 404 Not Found\r\n\r\n", "HTTP 404"),
    ],
)
def test_answers_that_are_not_the_service_are_refused(reply: bytes, reason: str) -> None:
    url, thread = one_answer(reply)
    with pytest.raises(MetadataUnavailable, match=reason):
        _Client(url, timeout=WAIT).version()
    thread.join(WAIT)
    assert not thread.is_alive()
