"""A local stand-in for Rancher 1.x's metadata service (rancher/rancher-metadata), for tests.

It serves, on 127.0.0.1 (or a lab bridge's own address), what the real service serves for an environment the test builds with ``add_host``,
``add_container``, ``remove_*`` and ``bump``:

* ``/`` (the API versions), ``/<api>/`` for ``2015-07-25``, ``2015-12-19``, ``2016-07-29`` and ``latest`` (=
  2016-07-29), and any path below: ``containers``, ``hosts``, ``services``, ``stacks``, ``version``, ``self/host``,
  ``self/container``, ``self/service``, ``self/stack``, drilling into lists by index, ``name`` or ``uuid`` as the
  real service does (``/containers/web_1/ports``);
* JSON with ``Accept: application/json``, the service's plain-text listing otherwise; 404 ``Not found`` for a path
  that does not exist, ``Invalid version`` for an unknown API version;
* the long-poll: ``?wait=true&value=<old>[&maxWait=<s>]`` on any path answers once the value differs from
  ``<old>``, or after ``maxWait`` seconds (60 when 0 or absent, at most 120) with the unchanged value;
* the per-version differences of the real generator: API 2016-07-29 lower-cases container, service and stack names
  and writes ``0.0.0.0`` as the host address of a port given without one; the older APIs write the host's agent
  address there (and in place of ``0.0.0.0``); ``services/<name>/containers`` holds names in 2015-07-25, objects
  after;
* ``self``: the real service answers by the caller's source address, here every caller is the same: ``set_self``
  chooses the host (``self/host``) and optionally the container (``self/container``, ``self/service``,
  ``self/stack``); without a container those three are 404, as for a container on the host's network.

Every change bumps ``version`` (a decimal string) and wakes long-polls. ``stop`` drops long-polls in flight without
an answer (as a dying service would) and ``start`` again serves on the same port. Every request is recorded
(``requests``).
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

V1 = "2015-07-25"
V2 = "2015-12-19"
V3 = "2016-07-29"
API_VERSIONS = (V1, V2, V3)
_MAGIC_KEYS = ("name", "uuid")
_DEFAULT_MAX_WAIT = 60.0
_MAX_MAX_WAIT = 120.0


@dataclass
class _Host:
    uuid: str
    name: str
    agent_ip: str
    labels: dict[str, str]
    host_id: int


@dataclass
class _Container:
    uuid: str
    name: str
    host_uuid: str
    external_id: str
    stack_name: str
    service_name: str
    ports: list[str]
    labels: dict[str, str]
    primary_ip: str
    state: str
    system: bool
    create_index: int
    service_index: str


@dataclass
class Request:
    """One request as the fake saw it."""

    path: str
    query: dict[str, str]
    accept: str
    at: float = field(default_factory=time.monotonic)


class FakeRancherMetadata:
    """The fake service; use as a context manager or call ``start`` and ``stop``."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address  # 127.0.0.1, or a lab bridge's own address that simulated hosts can reach
        self._cond = threading.Condition()
        self._hosts: dict[str, _Host] = {}
        self._containers: dict[str, _Container] = {}
        self._service_uuids: dict[tuple[str, str], str] = {}
        self._stack_uuids: dict[str, str] = {}
        self._version = 1
        self._self_host: str | None = None
        self._self_container: str | None = None
        self._closing = False
        self._failing: int | None = None
        self._requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life ----------------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on `address` (a free port the first time, the same port after a ``stop``); returns ``base_url``."""
        if self._server is not None:
            raise RuntimeError("already serving")
        with self._cond:
            self._closing = False
        server = ThreadingHTTPServer((self.address, self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-rancher-metadata", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving: long-polls in flight are dropped without an answer, new connections are refused."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> FakeRancherMetadata:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def url(self, api: str = V2) -> str:
        """The metadata URL of one API version, as the supervisor is given it."""
        return f"{self.base_url}/{api}"

    # -- the environment -----------------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        with self._cond:
            return str(self._version)

    @contextmanager
    def _change(self) -> Iterator[None]:
        with self._cond:
            yield
            self._version += 1
            self._cond.notify_all()

    def bump(self) -> str:
        """A new version with no visible change (as when a field nobody reads changes)."""
        with self._change():
            pass
        return self.version

    def add_host(
        self, name: str, agent_ip: str, *, uuid: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Add a host; returns its uuid."""
        host_uuid = uuid or str(uuidlib.uuid4())
        with self._change():
            self._hosts[host_uuid] = _Host(host_uuid, name, agent_ip, dict(labels or {}), len(self._hosts) + 1)
        return host_uuid

    def remove_host(self, host_uuid: str, *, with_containers: bool = True) -> None:
        with self._change():
            self._hosts.pop(host_uuid, None)
            if with_containers:
                for key in [k for k, c in self._containers.items() if c.host_uuid == host_uuid]:
                    del self._containers[key]

    def add_container(
        self,
        name: str,
        host_uuid: str,
        *,
        stack_name: str = "",
        service_name: str = "",
        ports: Sequence[str] = (),
        external_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        primary_ip: str = "",
        state: str = "running",
        system: bool = False,
        uuid: str | None = None,
    ) -> str:
        """Add a container (in a service when `stack_name` and `service_name` are given); returns its uuid.

        `ports` are Cattle's strings (``"8080:80/tcp"``, ``"10.0.0.5:80:80/tcp"``), served per API version.
        """
        container_uuid = uuid or str(uuidlib.uuid4())
        all_labels = dict(labels or {})
        if stack_name and service_name:
            all_labels.setdefault("io.rancher.stack.name", stack_name)
            all_labels.setdefault("io.rancher.stack_service.name", f"{stack_name}/{service_name}")
        all_labels.setdefault("io.rancher.container.uuid", container_uuid)
        with self._change():
            if stack_name and service_name:
                self._stack_uuids.setdefault(stack_name, str(uuidlib.uuid4()))
                self._service_uuids.setdefault((stack_name, service_name), str(uuidlib.uuid4()))
            index = 1 + sum(
                1 for c in self._containers.values() if (c.stack_name, c.service_name) == (stack_name, service_name)
            )
            self._containers[container_uuid] = _Container(
                uuid=container_uuid,
                name=name,
                host_uuid=host_uuid,
                external_id=external_id or secrets.token_hex(32),
                stack_name=stack_name,
                service_name=service_name,
                ports=list(ports),
                labels=all_labels,
                primary_ip=primary_ip,
                state=state,
                system=system,
                create_index=index,
                service_index=str(index),
            )
        return container_uuid

    def remove_container(self, container_uuid: str) -> None:
        with self._change():
            self._containers.pop(container_uuid, None)

    def set_container_state(self, container_uuid: str, state: str) -> None:
        with self._change():
            self._containers[container_uuid].state = state

    def set_self(self, host_uuid: str | None, container_uuid: str | None = None) -> None:
        """Who the caller is: its host (``self/host``) and, unless None, its container (``self/container`` ...)."""
        with self._change():
            self._self_host = host_uuid
            self._self_container = container_uuid

    def set_failing(self, status: int | None) -> None:
        """Answer every request with this HTTP status (a broken service), or normally again with None."""
        with self._cond:
            self._failing = status

    def requests(self, path: str | None = None) -> list[Request]:
        """The requests seen so far (only those to `path`, e.g. ``"/2015-12-19/version"``, when given)."""
        with self._cond:
            return [r for r in self._requests if path is None or r.path.rstrip("/") == path.rstrip("/")]

    # -- answers -------------------------------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._cond:
            self._requests.append(request)

    def _answers(self, api: str) -> dict[str, Any]:
        """The whole tree of one API version (the caller holds the lock)."""
        hosts = {u: self._host_json(h, api) for u, h in self._hosts.items()}
        containers = {u: self._container_json(c, api) for u, c in self._containers.items()}
        services: dict[tuple[str, str], dict[str, Any]] = {}
        for (stack, name), service_uuid in self._service_uuids.items():
            members = [c for c in self._containers.values() if (c.stack_name, c.service_name) == (stack, name)]
            if not members:
                continue
            services[(stack, name)] = {
                "name": name.lower() if api == V3 else name,
                "stack_name": stack.lower() if api == V3 else stack,
                "stack_uuid": self._stack_uuids[stack],
                "uuid": service_uuid,
                "kind": "service",
                "scale": len(members),
                "create_index": max(c.create_index for c in members),
                "containers": [
                    containers[c.uuid]["name"] if api == V1 else containers[c.uuid]
                    for c in sorted(members, key=lambda c: c.create_index)
                ],
                "ports": [],
                "expose": [],
                "external_ips": None,
                "fqdn": None,
                "health_check": None,
                "hostname": None,
                "labels": {},
                "lb_config": None,
                "links": None,
                "metadata": {},
                "primary_service_name": name.lower() if api == V3 else name,
                "sidekicks": None,
                "system": False,
                "token": "",
            }
        stacks = []
        for stack, stack_uuid in self._stack_uuids.items():
            own = [s for (st, _), s in services.items() if st == stack]
            if own:
                stacks.append(
                    {
                        "name": stack.lower() if api == V3 else stack,
                        "uuid": stack_uuid,
                        "environment_name": "Default",
                        "environment_uuid": "adminProject",
                        "services": [s["name"] for s in own] if api == V1 else own,
                        "system": False,
                    }
                )
        answers: dict[str, Any] = {
            "containers": list(containers.values()),
            "hosts": list(hosts.values()),
            "services": list(services.values()),
            "stacks": stacks,
            "networks": [],
            "version": str(self._version),
        }
        own_self: dict[str, Any] = {}
        if self._self_host in hosts:
            own_self["host"] = hosts[self._self_host]
        me = self._containers.get(self._self_container or "")
        if me is not None:
            own_self["container"] = containers[me.uuid]
            if (me.stack_name, me.service_name) in services:
                own_self["service"] = services[(me.stack_name, me.service_name)]
                own_self["stack"] = next(s for s in stacks if s["uuid"] == self._stack_uuids[me.stack_name])
        answers["self"] = own_self
        return copy.deepcopy(answers)

    def _host_json(self, host: _Host, api: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "agent_ip": host.agent_ip,
            "hostname": host.name,
            "labels": dict(host.labels),
            "local_storage_mb": 10240,
            "memory": 4096,
            "milli_cpu": 2000,
            "name": host.name,
            "uuid": host.uuid,
        }
        if api != V3:
            data["hostId"] = host.host_id
        return data

    def _container_json(self, container: _Container, api: str) -> dict[str, Any]:
        host = self._hosts.get(container.host_uuid)
        host_ip = host.agent_ip if host is not None else None
        lower = api == V3
        return {
            "create_index": container.create_index,
            "dns": ["169.254.169.250"],
            "dns_search": ["rancher.internal"],
            "external_id": container.external_id,
            "health_check_hosts": None,
            "health_state": "healthy",
            "host_uuid": container.host_uuid,
            "hostname": container.name,
            "ips": [container.primary_ip] if container.primary_ip else None,
            "labels": dict(container.labels),
            "links": None,
            "memory_reservation": 0,
            "milli_cpu_reservation": 0,
            "name": container.name.lower() if lower else container.name,
            "network_from_container_uuid": None,
            "network_uuid": "network-managed",
            "ports": [_served_port(port, api, host_ip) for port in container.ports],
            "primary_ip": container.primary_ip or None,
            "primary_mac_address": "02:42:0a:2a:00:01" if container.primary_ip else None,
            "service_index": container.service_index,
            "service_name": (container.service_name.lower() if lower else container.service_name) or None,
            "stack_name": (container.stack_name.lower() if lower else container.stack_name) or None,
            "stack_uuid": self._stack_uuids.get(container.stack_name),
            "start_count": 1,
            "state": container.state,
            "system": container.system,
            "uuid": container.uuid,
        }

    def _lookup(self, api: str, segments: list[str]) -> tuple[bool, Any]:
        with self._cond:
            node: Any = self._answers(api)
        for segment in segments:
            found, node = _step(node, segment)
            if not found:
                return False, None
        return True, node

    def _wait(self, api: str, segments: list[str], old: str, max_wait: float) -> tuple[bool, Any] | None:
        """The long-poll: the value once it differs from `old`, or after `max_wait`; None when the server stops."""
        deadline = time.monotonic() + max_wait
        with self._cond:
            while True:
                if self._closing:
                    return None
                found, value = self._lookup(api, segments)
                if found and _sprint(value) != old:
                    return found, value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return found, value
                self._cond.wait(remaining)


def _served_port(port: str, api: str, host_ip: str | None) -> str:
    """Cattle's port string as the generator of `api` serves it (rancher-metadata config/generator.go)."""
    parts = port.split(":")
    if api == V3:
        return port if len(parts) == 3 else f"0.0.0.0:{port}"
    if len(parts) == 3 and parts[0] != "0.0.0.0":
        return port
    if len(parts) == 3:
        return f"{host_ip}{port[len('0.0.0.0') :]}"
    return f"{host_ip}:{port}"


def _step(node: Any, segment: str) -> tuple[bool, Any]:
    if isinstance(node, dict):
        return (segment in node), node.get(segment)
    if isinstance(node, list):
        if segment.isdigit():
            index = int(segment)
            return (index < len(node)), (node[index] if index < len(node) else None)
        for item in node:
            if isinstance(item, dict) and any(item.get(key) == segment for key in _MAGIC_KEYS):
                return True, item
    return False, None


def _sprint(value: Any) -> str:
    """What the real service compares a long-poll's ``value`` with (Go's fmt.Sprint, for the scalars that matter)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    return json.dumps(value, sort_keys=True)


def _text(value: Any) -> str:
    """The plain-text rendering of the real service (keys of a map, ``index=name`` for lists of objects)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict):
        return "".join(sorted(f"{k}/\n" if isinstance(v, dict | list) else f"{k}\n" for k, v in value.items()))
    lines = []
    for index, item in enumerate(value):
        name = next((item[k] for k in _MAGIC_KEYS if isinstance(item, dict) and k in item), None)
        if name is not None:
            lines.append(f"{index}={name}\n")
        elif isinstance(item, dict | list):
            lines.append(f"{index}/\n")
        else:
            lines.append(f"{index}\n")
    return "".join(lines)


def _handler_for(fake: FakeRancherMetadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            accept = self.headers.get("Accept", "")
            fake._record(Request(split.path, query, accept))
            json_wanted = "json" in accept.lower()
            with fake._cond:
                failing = fake._failing
            if failing is not None:
                self._send(failing, {"code": failing, "message": "failing on purpose", "type": "error"}, json_wanted)
                return
            segments = [unquote(s) for s in split.path.strip("/").split("/") if s]
            if not segments:
                versions = {v: f"/{v}" for v in (*API_VERSIONS, "latest")}
                self._send(200, versions, json_wanted)
                return
            api = V3 if segments[0] == "latest" else segments[0]
            if api not in API_VERSIONS:
                self._error(404, "Invalid version", json_wanted)
                return
            if query.get("wait") == "true" and "value" in query:
                try:
                    max_wait = float(query.get("maxWait") or 0)
                except ValueError:
                    max_wait = 0
                max_wait = _DEFAULT_MAX_WAIT if max_wait <= 0 else min(max_wait, _MAX_MAX_WAIT)
                result = fake._wait(api, segments[1:], query["value"], max_wait)
                if result is None:  # stopping: drop the connection without an answer
                    self.close_connection = True
                    return
                found, value = result
            else:
                found, value = fake._lookup(api, segments[1:])
            if not found:
                self._error(404, "Not found", json_wanted)
                return
            self._send(200, value, json_wanted)

        def _error(self, status: int, message: str, json_wanted: bool) -> None:
            self._send(status, {"code": status, "message": message, "type": "error"}, json_wanted, text=message)

        def _send(self, status: int, value: Any, json_wanted: bool, text: str | None = None) -> None:
            body = (json.dumps(value) if json_wanted else (text if text is not None else _text(value))).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if json_wanted else "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler
