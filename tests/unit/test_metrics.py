"""The metrics adapter: exact series names and values in /metrics, /healthz, 404, and METRICS_ADDR parsing.

Servers bind loopback only (127.0.0.1 or ::1) on a kernel-chosen port.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from supervisor.adapters.metrics import DEFAULT_METRICS_PORT, Metrics, Server, parse_metrics_addr, vrrp_state_value


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name{labels}` in Prometheus text, or None when absent (label order is ignored)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = {}
        for part in label_text.rstrip("}").split('",') if label_text else []:
            key, _, raw = part.partition("=")
            found[key.strip(",")] = raw.strip('"')
        if found == labels:
            return float(value)
    return None


def get(server: Server, path: str, method: str = "GET", host: str = "127.0.0.1") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection(host, server.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health_state() -> dict[str, object]:
    return {"ok": True, "reason": ""}


@pytest.fixture
def server(metrics: Metrics, health_state: dict[str, object]) -> Iterator[Server]:
    def health() -> tuple[bool, str]:
        if health_state.get("raise"):
            raise RuntimeError("boom")
        return bool(health_state["ok"]), str(health_state["reason"])

    running = metrics.serve("127.0.0.1:0", health)
    try:
        yield running
    finally:
        running.close()


def test_every_series_appears_with_its_exact_name(metrics: Metrics, server: Server) -> None:
    metrics.set_up(True)
    metrics.set_vrrp_state("VI_51", "eth0", 51, ["10.0.0.208", "10.0.0.209"], "MASTER")
    metrics.transition("VI_51", "MASTER")
    metrics.transition("VI_51", "MASTER")
    metrics.reload("applied")
    metrics.reload("unchanged")
    metrics.reload("unchanged")
    metrics.config_test_failed()
    metrics.docker_event("die")
    metrics.watcher_reconnected()
    metrics.probe(True, 0.004)
    metrics.probe(False, 1.2)
    metrics.set_member_healthy("VI_51", "haproxy", False)
    metrics.keepalived_restarted()
    metrics.set_discovered_members({"labels": 2, "check_port": 1})
    metrics.set_split_brain("VI_51", True)

    status, content_type, text = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    assert sample(text, "keepalived_up") == 1
    for vip in ("10.0.0.208", "10.0.0.209"):
        assert sample(text, "keepalived_vrrp_state", iname="VI_51", intf="eth0", vrid="51", ip_address=vip) == 2
    p = "keepalived_supervisor_"
    assert sample(text, p + "transitions_total", iname="VI_51", state="MASTER") == 2
    assert sample(text, p + "reloads_total", result="applied") == 1
    assert sample(text, p + "reloads_total", result="unchanged") == 2
    assert sample(text, p + "reloads_total", result="rejected") == 0
    assert sample(text, p + "config_test_failures_total") == 1
    assert sample(text, p + "docker_events_total", action="die") == 1
    assert sample(text, p + "watcher_reconnects_total") == 1
    assert sample(text, p + "probe_results_total", result="ok") == 1
    assert sample(text, p + "probe_results_total", result="failed") == 1
    assert sample(text, p + "probe_seconds_count") == 2
    assert sample(text, p + "probe_seconds_bucket", le="0.005") == 1
    assert sample(text, p + "probe_seconds_bucket", le="+Inf") == 2
    assert sample(text, p + "member_healthy", iname="VI_51", member="haproxy") == 0
    assert sample(text, p + "keepalived_restarts_total") == 1
    assert sample(text, p + "discovered_members", how="labels") == 2
    assert sample(text, p + "discovered_members", how="check_port") == 1
    assert sample(text, p + "discovered_members", how="selector") == 0
    assert sample(text, p + "discovered_members", how="rancher") == 0
    assert sample(text, p + "split_brain", iname="VI_51") == 1
    assert "_created" not in text, "no _created noise in the exposition"
    assert "# TYPE keepalived_supervisor_probe_seconds histogram" in text


def test_known_series_start_at_zero(metrics: Metrics) -> None:
    text = metrics.render().decode()
    assert sample(text, "keepalived_up") == 0
    for result in ("applied", "rejected", "unchanged"):
        assert sample(text, "keepalived_supervisor_reloads_total", result=result) == 0
    for result in ("ok", "failed"):
        assert sample(text, "keepalived_supervisor_probe_results_total", result=result) == 0
    assert sample(text, "keepalived_supervisor_watcher_reconnects_total") == 0


@pytest.mark.parametrize(
    ("state", "value"),
    [("INIT", 0), ("BACKUP", 1), ("MASTER", 2), ("FAULT", 3), ("master", 2), ("STOP", -1), ("UNKNOWN", -1), ("", -1)],
)
def test_vrrp_state_numbering(state: str, value: int) -> None:
    assert vrrp_state_value(state) == value


def test_vrrp_state_replaces_stale_series_and_forget_instance_removes_all(metrics: Metrics) -> None:
    metrics.set_vrrp_state("VI_51", "eth0", 51, ["10.0.0.208", "10.0.0.209"], "BACKUP")
    metrics.set_vrrp_state("VI_52", "eth0", 52, ["10.0.0.210"], "MASTER")
    metrics.set_vrrp_state("VI_51", "eth1", 51, ["10.0.0.208"], "FAULT")
    metrics.transition("VI_51", "FAULT")
    metrics.set_member_healthy("VI_51", "web", True)
    metrics.set_split_brain("VI_51", False)
    text = metrics.render().decode()
    labels = {"iname": "VI_51", "vrid": "51", "ip_address": "10.0.0.208"}
    assert sample(text, "keepalived_vrrp_state", intf="eth1", **labels) == 3
    assert sample(text, "keepalived_vrrp_state", intf="eth0", **labels) is None, "the old interface's series"
    assert sample(text, "keepalived_vrrp_state", iname="VI_51", intf="eth0", vrid="51", ip_address="10.0.0.209") is None

    metrics.set_vrrp_state("VI_51", "eth1", 51, ["10.0.0.208"], "STOP")
    text = metrics.render().decode()
    assert sample(text, "keepalived_vrrp_state", intf="eth1", **labels) == -1, "unknown states stay visible as -1"

    metrics.forget_instance("VI_51")
    text = metrics.render().decode()
    assert 'iname="VI_51"' not in text
    assert sample(text, "keepalived_vrrp_state", iname="VI_52", intf="eth0", vrid="52", ip_address="10.0.0.210") == 2
    metrics.forget_instance("VI_51")  # twice: harmless
    metrics.forget_instance("never-seen")


def test_members_can_be_forgotten_one_by_one(metrics: Metrics) -> None:
    metrics.set_member_healthy("VI_51", "a", True)
    metrics.set_member_healthy("VI_51", "b", True)
    metrics.forget_member("VI_51", "a")
    metrics.forget_member("VI_51", "never-seen")
    text = metrics.render().decode()
    assert sample(text, "keepalived_supervisor_member_healthy", iname="VI_51", member="a") is None
    assert sample(text, "keepalived_supervisor_member_healthy", iname="VI_51", member="b") == 1


def test_outside_label_values_are_bounded(metrics: Metrics) -> None:
    for i in range(500):
        metrics.docker_event(f"exec_start: sh -c {i}")
    metrics.set_discovered_members({f"kind{i}": 1 for i in range(100)})
    text = metrics.render().decode()
    assert text.count("keepalived_supervisor_docker_events_total{") <= 65
    assert (sample(text, "keepalived_supervisor_docker_events_total", action="other") or 0) > 0
    assert text.count("keepalived_supervisor_discovered_members{") <= 65


def test_unknown_reload_result_is_a_programming_error(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="applied, rejected, unchanged"):
        metrics.reload("maybe")


def test_metrics_are_thread_safe(metrics: Metrics) -> None:
    def work(n: int) -> None:
        for i in range(300):
            metrics.set_vrrp_state(f"VI_{n}", "eth0", n, [f"10.0.{n}.{i % 3}"], "MASTER")
            metrics.transition(f"VI_{n}", "BACKUP")
            metrics.set_member_healthy(f"VI_{n}", "m", i % 2 == 0)
            metrics.probe(True, 0.001)
            if i % 50 == 0:
                metrics.forget_instance(f"VI_{n}")
                metrics.render()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    text = metrics.render().decode()
    assert sample(text, "keepalived_supervisor_probe_results_total", result="ok") == 8 * 300
    for n in range(8):
        # Exactly one series per instance: the last call's VIP.
        assert text.count(f'iname="VI_{n}",intf=') == 1


def test_healthz_ok_and_unhealthy_with_the_reason(server: Server, health_state: dict[str, object]) -> None:
    status, content_type, body = get(server, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert content_type.startswith("text/plain")

    health_state.update(ok=False, reason="keepalived is not running")
    status, content_type, body = get(server, "/healthz")
    assert (status, body) == (503, "keepalived is not running\n")
    assert content_type.startswith("text/plain")

    health_state.update(ok=False, reason="")
    assert get(server, "/healthz")[:1] == (503,)

    health_state["raise"] = True
    status, _, body = get(server, "/healthz")
    assert status == 503 and "RuntimeError" in body and "boom" in body


def test_other_paths_are_404_and_query_strings_are_ignored(server: Server) -> None:
    for path in ("/", "/metric", "/metrics/x", "/healthz/", "/../etc/passwd"):
        assert get(server, path)[0] == 404, path
    assert get(server, "/metrics?name[]=x")[0] == 200
    status, _, body = get(server, "/metrics", method="HEAD")
    assert status == 200 and body == ""
    assert get(server, "/metrics", method="POST")[0] == 501


def test_many_concurrent_scrapes(metrics: Metrics, server: Server) -> None:
    results: list[int] = []

    def scrape() -> None:
        for _ in range(10):
            results.append(get(server, "/metrics")[0])

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [200] * 80


def test_close_is_idempotent_and_frees_the_port(metrics: Metrics) -> None:
    running = metrics.serve("127.0.0.1:0", lambda: (True, ""))
    port = running.port
    running.close()
    running.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    again = metrics.serve(f"127.0.0.1:{port}", lambda: (True, ""))
    again.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_loopback(metrics: Metrics) -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    running = metrics.serve("[::1]:0", lambda: (True, ""))
    try:
        assert running.address[0] == "::1"
        assert get(running, "/healthz", host="::1")[0] == 200
    finally:
        running.close()


def test_address_in_use_names_metrics_addr(metrics: Metrics) -> None:
    running = metrics.serve("127.0.0.1:0", lambda: (True, ""))
    try:
        with pytest.raises(OSError, match="METRICS_ADDR"):
            metrics.serve(f"127.0.0.1:{running.port}", lambda: (True, ""))
    finally:
        running.close()


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:9655", ("127.0.0.1", 9655)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9655", ("::1", 9655)),
        ("[2001:db8::1]:1", ("2001:db8::1", 1)),
        (":9655", ("", 9655)),
        (" :0 ", ("", 0)),
    ],
)
def test_parse_metrics_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_addr(addr) == expected


@pytest.mark.parametrize(
    "addr",
    ["", "9655", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536", "127.0.0.1:-1", "localhost:9655",
     "::1:9655", "[::1]", "[::1]9655", "[nope]:9655", "[10.0.0.1]:9655", "1.2.3.4.5:80", ":٩٦٥٥", "a:b:c"],
)  # fmt: skip
def test_bad_addresses_name_metrics_addr(addr: str, metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="METRICS_ADDR"):
        parse_metrics_addr(addr)
    with pytest.raises(ValueError, match="METRICS_ADDR"):
        metrics.serve(addr, lambda: (True, ""))


def test_default_port_is_not_a_known_keepalived_exporter_port() -> None:
    assert DEFAULT_METRICS_PORT not in (9165, 9650)
    assert 9100 <= DEFAULT_METRICS_PORT <= 9999


def test_render_survives_being_called_from_many_threads_while_metrics_change(metrics: Metrics) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                while not stop.is_set():
                    target()
            except BaseException as error:
                errors.append(error)

        return run

    counter = iter(range(10**9))
    writers = [
        threading.Thread(target=guarded(lambda: metrics.set_vrrp_state("VI", "eth0", 1, [f"10.0.0.{next(counter) % 9}"], "MASTER"))),
        threading.Thread(target=guarded(lambda: metrics.forget_instance("VI"))),
        threading.Thread(target=guarded(metrics.render)),
    ]  # fmt: skip
    for thread in writers:
        thread.start()
    threading.Event().wait(1.0)
    stop.set()
    for thread in writers:
        thread.join(30)
    assert errors == []
