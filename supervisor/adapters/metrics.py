"""Prometheus metrics and a small HTTP endpoint (``/metrics``, ``/healthz``) for the supervisor.

``Metrics`` owns its own ``CollectorRegistry`` (never the process-global one), so two supervisors in one process
(tests) or a library that registers into the global registry cannot collide with it. Every method is cheap and
thread-safe: prometheus-client values are lock-protected, and the bookkeeping of which labelled series exist (to
remove stale ones) sits under one lock of ours. No method raises on odd input from the run loop; an argument that
would break the exposition (an unknown reload result) is a programming error and raises ``ValueError``.

Names follow the keepalived exporters where they overlap, so existing dashboards and alerts keep working:

* ``keepalived_up`` 1 while keepalived runs;
* ``keepalived_vrrp_state{iname,intf,vrid,ip_address}`` in keepalived's numbering (INIT 0, BACKUP 1, MASTER 2,
  FAULT 3), one series per VIP address. A state keepalived reports that has no number there (STOP, DELETED, or the
  supervisor's own UNKNOWN before the first report) is exported as -1 rather than removed: a vanished series would
  silence an alert such as ``keepalived_vrrp_state != 2``; ``keepalived_vrrp_state < 0`` catches it instead.

The supervisor's own series carry the ``keepalived_supervisor_`` prefix (see ``Metrics``). Counters are exported
without ``_created`` samples (they only add noise to the text format).

``Metrics.serve`` runs a stdlib ``ThreadingHTTPServer`` in a daemon thread: ``/metrics`` (the registry in Prometheus text
format), ``/healthz`` (200 ``ok``, or 503 with the reason as text/plain, from a callable), anything else 404.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# 9655: listed as "FREE" on the Prometheus "Default port allocations" wiki page in the revision we could read, and
# no exporter we could find listens there. Its neighbours are taken (9650: gen2brain/keepalived_exporter; 9654 is
# used by a galaxy exporter), and the other keepalived exporter (mehdy/keepalived-exporter) uses 9165, which the
# wiki gives to an AWS instance-health exporter. Being next to 9650 makes it easy to remember beside the keepalived
# exporter a host may already run. METRICS_ADDR overrides it; check the wiki again before publishing the default.
DEFAULT_METRICS_PORT = 9655

PREFIX = "keepalived_supervisor_"

# keepalived's numbering of VRRP states (vrrp.h: VRRP_STATE_INIT .. VRRP_STATE_FAULT), as keepalived exporters use.
VRRP_STATE_VALUES: dict[str, int] = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
UNKNOWN_STATE_VALUE = -1

RELOAD_RESULTS = ("applied", "rejected", "unchanged")
PROBE_RESULTS = ("ok", "failed")
DISCOVERY_HOWS = ("labels", "selector", "check_port", "rancher")

# Label values that come from outside (Docker event actions, states, discovery kinds) are capped per metric, so a
# misbehaving engine cannot grow the exposition without bound; beyond the cap a value is counted as "other".
MAX_LABEL_VALUES = 64
OTHER = "other"

# Probe latency buckets (seconds): probes time out after CHECK_TIMEOUT (1 s by default, longer when configured).
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The classic text format generate_latest writes; every Prometheus version reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

VrrpKey = tuple[str, str, str, str]  # (iname, intf, vrid, ip_address)


def vrrp_state_value(state: str) -> int:
    """keepalived's number for a VRRP state name (case-insensitive); -1 for anything else (STOP, UNKNOWN, ...)."""
    return VRRP_STATE_VALUES.get(state.strip().upper(), UNKNOWN_STATE_VALUE)


class _WithoutCreated(Collector):
    """The registry's metrics without the ``_created`` samples prometheus-client adds to counters and histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class _BoundedLabel:
    """Remembers the values seen for one label; past `limit` distinct values, new ones become ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES, initial: Iterable[str] = ()) -> None:
        self._seen: set[str] = set(initial)
        self._limit = limit

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """The supervisor's metrics, in a registry of its own.

    Series (all gauges unless named ``_total``; ``probe_seconds`` is a histogram):

    ``keepalived_up``, ``keepalived_vrrp_state{iname,intf,vrid,ip_address}``, and with the ``keepalived_supervisor_``
    prefix: ``transitions_total{iname,state}``, ``reloads_total{result}`` (applied|rejected|unchanged),
    ``config_test_failures_total``, ``docker_events_total{action}``, ``watcher_reconnects_total``,
    ``probe_results_total{result}`` (ok|failed), ``probe_seconds``, ``member_healthy{iname,member}``,
    ``keepalived_restarts_total``, ``discovered_members{how}`` (labels|selector|check_port|rancher) and
    ``split_brain{iname}`` (1 while this node is MASTER and hears another MASTER for the same VRID).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._exposed = _WithoutCreated(self.registry)
        self._lock = threading.Lock()
        reg = self.registry

        self.up = Gauge("keepalived_up", "1 while keepalived runs under the supervisor, else 0.", registry=reg)
        self.vrrp_state = Gauge(
            "keepalived_vrrp_state",
            "VRRP state per VIP address: INIT 0, BACKUP 1, MASTER 2, FAULT 3 (keepalived's numbering); -1 unknown.",
            ["iname", "intf", "vrid", "ip_address"],
            registry=reg,
        )
        self.transitions = Counter(
            PREFIX + "transitions_total",
            "VRRP state transitions keepalived reported, by instance and new state.",
            ["iname", "state"],
            registry=reg,
        )
        self.reloads = Counter(
            PREFIX + "reloads_total",
            "Configuration renders by outcome: applied (keepalived reloaded), rejected (config test failed), unchanged.",
            ["result"],
            registry=reg,
        )
        self.config_test_failures = Counter(
            PREFIX + "config_test_failures_total",
            "Rendered configurations that keepalived --config-test rejected.",
            registry=reg,
        )
        self.docker_events = Counter(
            PREFIX + "docker_events_total", "Docker container events handled, by action.", ["action"], registry=reg
        )
        self.watcher_reconnects = Counter(
            PREFIX + "watcher_reconnects_total", "Reconnections of the Docker event stream.", registry=reg
        )
        self.probe_results = Counter(
            PREFIX + "probe_results_total", "Health probe results (ok or failed).", ["result"], registry=reg
        )
        self.probe_seconds = Histogram(
            PREFIX + "probe_seconds", "Health probe duration in seconds.", buckets=PROBE_BUCKETS, registry=reg
        )
        self.member_healthy = Gauge(
            PREFIX + "member_healthy",
            "1 while the member (a fronted container or the environment check) is healthy, else 0.",
            ["iname", "member"],
            registry=reg,
        )
        self.keepalived_restarts = Counter(
            PREFIX + "keepalived_restarts_total", "Restarts of keepalived after it died.", registry=reg
        )
        self.discovered_members = Gauge(
            PREFIX + "discovered_members",
            "Members currently found, by how they were found (labels, selector, check_port, rancher).",
            ["how"],
            registry=reg,
        )
        self.split_brain = Gauge(
            PREFIX + "split_brain",
            "1 while this node is MASTER and hears another MASTER's adverts for the same VRID, else 0.",
            ["iname"],
            registry=reg,
        )

        # Bounded sets of outside label values, and the labelled series that exist per instance (to remove them).
        self._actions = _BoundedLabel()
        self._states = _BoundedLabel(initial=VRRP_STATE_VALUES)
        self._hows = _BoundedLabel(initial=DISCOVERY_HOWS)
        self._vrrp_series: dict[str, set[VrrpKey]] = {}
        self._members: dict[str, set[str]] = {}
        self._transition_states: dict[str, set[str]] = {}

        # Known label values start at 0, so rate() and absent() work from the first scrape.
        self.up.set(0)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)
        for result in PROBE_RESULTS:
            self.probe_results.labels(result=result)
        for how in DISCOVERY_HOWS:
            self.discovered_members.labels(how=how).set(0)

    # -- keepalived and VRRP -------------------------------------------------------------------------------------

    def set_up(self, up: bool) -> None:
        self.up.set(1 if up else 0)

    def set_vrrp_state(self, iname: str, intf: str, vrid: int, ip_addresses: Iterable[str], state: str) -> None:
        """One series per VIP address of the instance; series of the instance not in this call are removed."""
        value = vrrp_state_value(state)
        keys = {(iname, intf, str(vrid), address) for address in ip_addresses}
        with self._lock:
            for stale in self._vrrp_series.get(iname, set()) - keys:
                with contextlib.suppress(KeyError):
                    self.vrrp_state.remove(*stale)
            for key in keys:
                self.vrrp_state.labels(*key).set(value)
            self._vrrp_series[iname] = keys

    def transition(self, iname: str, state: str) -> None:
        label = self._states(state.strip().upper())
        with self._lock:
            self._transition_states.setdefault(iname, set()).add(label)
            self.transitions.labels(iname=iname, state=label).inc()

    def set_split_brain(self, iname: str, active: bool) -> None:
        self.split_brain.labels(iname=iname).set(1 if active else 0)

    def forget_instance(self, iname: str) -> None:
        """Remove every series labelled with this instance (its VRRP state, members, transitions, split brain)."""
        with self._lock:
            for key in self._vrrp_series.pop(iname, set()):
                with contextlib.suppress(KeyError):
                    self.vrrp_state.remove(*key)
            for member in self._members.pop(iname, set()):
                with contextlib.suppress(KeyError):
                    self.member_healthy.remove(iname, member)
            for state in self._transition_states.pop(iname, set()):
                with contextlib.suppress(KeyError):
                    self.transitions.remove(iname, state)
            with contextlib.suppress(KeyError):
                self.split_brain.remove(iname)

    # -- reconcile and keepalived lifecycle ----------------------------------------------------------------------

    def reload(self, result: str) -> None:
        """Count one reconcile outcome: ``applied``, ``rejected`` or ``unchanged``."""
        if result not in RELOAD_RESULTS:
            raise ValueError(f"reload result {result!r} is not one of {', '.join(RELOAD_RESULTS)}")
        self.reloads.labels(result=result).inc()

    def config_test_failed(self) -> None:
        self.config_test_failures.inc()

    def keepalived_restarted(self) -> None:
        self.keepalived_restarts.inc()

    # -- Docker ------------------------------------------------------------------------------------------------------

    def docker_event(self, action: str) -> None:
        with self._lock:
            label = self._actions(action)
        self.docker_events.labels(action=label).inc()

    def watcher_reconnected(self) -> None:
        self.watcher_reconnects.inc()

    def set_discovered_members(self, counts: Mapping[str, int]) -> None:
        """Members per discovery kind; a known kind missing from `counts` is set to 0."""
        with self._lock:
            values = {how: 0 for how in DISCOVERY_HOWS}
            for how, count in counts.items():
                label = self._hows(how)
                values[label] = values.get(label, 0) + count
            for how, count in values.items():
                self.discovered_members.labels(how=how).set(count)

    # -- health ------------------------------------------------------------------------------------------------------

    def probe(self, ok: bool, seconds: float) -> None:
        self.probe_results.labels(result="ok" if ok else "failed").inc()
        self.probe_seconds.observe(max(0.0, seconds))

    def set_member_healthy(self, iname: str, member: str, healthy: bool) -> None:
        with self._lock:
            self._members.setdefault(iname, set()).add(member)
            self.member_healthy.labels(iname=iname, member=member).set(1 if healthy else 0)

    def forget_member(self, iname: str, member: str) -> None:
        with self._lock:
            self._members.get(iname, set()).discard(member)
            with contextlib.suppress(KeyError):
                self.member_healthy.remove(iname, member)

    # -- exposition --------------------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format (0.0.4)."""
        return generate_latest(self._exposed)

    # -- HTTP endpoint -----------------------------------------------------------------------------------------------

    def serve(self, addr: str, health: Callable[[], tuple[bool, str]]) -> Server:
        """Serve ``/metrics`` and ``/healthz`` at `addr` (see ``parse_metrics_addr``) in a daemon thread.

        `health` returns (ok, reason); it runs on the request's thread, so it must be cheap and thread-safe. Raises
        ``ValueError`` for a malformed address and ``OSError`` (naming METRICS_ADDR) when it cannot be bound.
        """
        return _serve(addr, self, health)


# -- HTTP endpoint ---------------------------------------------------------------------------------------------------


def parse_metrics_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv4 address), ``[V6]:PORT``, or ``:PORT`` (all addresses, returned as host "").

    Raises ``ValueError`` naming METRICS_ADDR. Port 0 asks the kernel for a free port (tests).
    """
    text = addr.strip()
    expected = "expected HOST:PORT, [IPV6]:PORT or :PORT with an IP address and a port 0-65535"
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"METRICS_ADDR={addr!r}: {expected}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"METRICS_ADDR={addr!r}: port {port} is out of range; {expected}")
    if host == "":
        return "", port
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            return str(ipaddress.IPv6Address(inner)), port
        except ValueError:
            raise ValueError(f"METRICS_ADDR={addr!r}: {inner!r} is not an IPv6 address; {expected}") from None
    if ":" in host:
        raise ValueError(f"METRICS_ADDR={addr!r}: an IPv6 address needs brackets, as in [::1]:{port}")
    try:
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        raise ValueError(f"METRICS_ADDR={addr!r}: {host!r} is not an IPv4 address; {expected}") from None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # the stdlib's 5 drops SYNs when a few scrapers connect at once (a 1 s retransmit)
    dual_stack = False

    def server_bind(self) -> None:
        if self.dual_stack:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _IPv4Server(_HTTPServer):
    address_family = socket.AF_INET


class _IPv6Server(_HTTPServer):
    address_family = socket.AF_INET6


class _DualStackServer(_IPv6Server):
    dual_stack = True


def _handler(metrics: Metrics, health: Callable[[], tuple[bool, str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that stalls mid-request loses its thread after this many seconds
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them
        server_version = "keepalived-supervisor"
        sys_version = ""

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    status, content_type, body = 200, CONTENT_TYPE, metrics.render()
                except Exception as error:  # a broken collector must not kill the endpoint
                    log.exception("rendering metrics failed")
                    status, content_type = 500, "text/plain; charset=utf-8"
                    body = f"rendering metrics failed: {type(error).__name__}\n".encode()
            elif path == "/healthz":
                try:
                    ok, reason = health()
                except Exception as error:
                    ok, reason = False, f"health check raised {type(error).__name__}: {error}"
                status, content_type = (200, "text/plain; charset=utf-8") if ok else (503, "text/plain; charset=utf-8")
                body = (("ok" if ok else reason or "unhealthy").rstrip("\n") + "\n").encode("utf-8", "replace")
            else:
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics endpoint %s: " + format, self.address_string(), *args)

    return Handler


class Server:
    """A running metrics endpoint; ``close()`` stops it (idempotent)."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._closed = False
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the port is the real one also when 0 was asked for."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)


def _bind(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> _HTTPServer:
    if host == "":
        try:
            return _DualStackServer(("::", port), handler)
        except OSError as error:
            if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
            # No IPv6 in this namespace (a container with IPv6 disabled): all IPv4 addresses then.
            return _IPv4Server(("0.0.0.0", port), handler)
    if ":" in host:
        return _IPv6Server((host, port), handler)
    return _IPv4Server((host, port), handler)


def _serve(addr: str, metrics: Metrics, health: Callable[[], tuple[bool, str]]) -> Server:
    host, port = parse_metrics_addr(addr)
    try:
        httpd = _bind(host, port, _handler(metrics, health))
    except OSError as error:
        raise OSError(error.errno, f"METRICS_ADDR={addr!r}: cannot listen: {error.strerror or error}") from error
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 1.0}, name="metrics-http", daemon=True
    )
    thread.start()
    host_bound, port_bound = httpd.server_address[:2]
    log.info("metrics endpoint listening on %s port %s (/metrics, /healthz)", host_bound or "*", port_bound)
    return Server(httpd, thread)
