"""Simulated hosts on one Docker engine, the way DESIGN.md describes, for health and failover tests and benches.

Each "host" is a long-running busybox container with NET_ADMIN on an internal bridge (198.51.100.0/25, no route
out). A front end either shares the host's network namespace (``--network container:HOST``, a listener the host
can see) or lives on a second internal network (198.51.100.128/25) reached through iptables DNAT set up in the host's
namespace: the Rancher case, where no socket exists on the host. Both networks' bridges live in the machine's own
namespace, where Docker adds a route for their subnets: they stay inside 198.51.100.0/24, which nothing else on
these machines uses (203.0.113.0/24 is not safe there: the package mirrors answer from it). The supervisor under test runs from this checkout
inside the host's network namespace (``nsenter -n``), with the engine's socket, scoped by a label selector.
A client container on the same bridge talks to the VIP. ``close`` removes every container and network.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
from docker.models.containers import Container
from docker.models.networks import Network

from lab.engine import IMAGE, REPO, SUPERVISOR_IMAGE, TEST_LABEL, engine_client, ensure_image, new_run_id, terminate

LAN_SUBNET = "198.51.100.0/25"  # hosts .11, .12, the VIP .100, the client
SVC_SUBNET = "198.51.100.128/25"  # front ends .140 and up, hosts' second legs .200 and up
LAN = SVC = "198.51.100"
# Root-owned and not world-writable all the way up (a checkout under /tmp would not be): keepalived's script
# security accepts scripts here.
SCRIPT_DIR = Path("/run/kat-lab/scripts")


# Runs in the client's network namespace; ADDR may be ADDR:PORT (port 80 otherwise). "first ADDR EXPECTED LIMIT":
# connect every 2 ms (each attempt cut at 2 ms: a held VIP on this bridge answers well within it) until a front end answers
# EXPECTED, print that moment (epoch seconds). "loop ADDR SECONDS INTERVAL": one request per INTERVAL for SECONDS,
# print JSON counts of answers by body and failures. Bounded in time either way.
CLIENT_CODE = r"""
import json, socket, sys, time

def ask(address, timeout):
    host, _, port = address.partition(":")
    try:
        with socket.create_connection((host, int(port or 80)), timeout=timeout) as conn:
            conn.settimeout(0.5)
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        return data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode() if b" 200 " in data.split(b"\r\n")[0] else None
    except OSError:
        return None

mode, address = sys.argv[1], sys.argv[2]
if mode == "first":
    expected, limit = sys.argv[3], time.time() + float(sys.argv[4])
    while time.time() < limit:
        if ask(address, 0.002) == expected:
            print(f"{time.time():.6f}")
            sys.exit(0)
        time.sleep(0.002)
    sys.exit(1)
seconds, interval = float(sys.argv[3]), float(sys.argv[4])
counts, failures, end = {}, 0, time.time() + seconds
while time.time() < end:
    started = time.time()
    body = ask(address, 0.25)
    if body is None:
        failures += 1
    else:
        counts[body] = counts.get(body, 0) + 1
    time.sleep(max(0.0, interval - (time.time() - started)))
print(json.dumps({"answers": counts, "failures": failures}))
"""


def nsenter(pid: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", *args], capture_output=True, text=True, check=check, timeout=30
    )


def write_check_script(name: str, body: str) -> Path:
    """A CHECK_SCRIPT in a directory keepalived's script security accepts (root-owned, mode 755 all the way up)."""
    SCRIPT_DIR.mkdir(parents=True, exist_ok=True)
    for directory in (SCRIPT_DIR, SCRIPT_DIR.parent):
        directory.chmod(0o755)
    path = SCRIPT_DIR / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@dataclass
class Supervisor:
    """A supervisor process from this checkout, inside a simulated host's network namespace."""

    host: SimHost
    run_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        path = self.run_dir / "status.json"
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def instance(self, name: str) -> dict[str, Any]:
        for entry in self.status().get("instances", []):
            if entry["name"] == name:
                return dict(entry)
        return {}

    def stop(self, timeout: float = 20) -> int:
        return terminate(self.process, timeout)


@dataclass
class SupervisorContainer:
    """The supervisor as users run it: the image, sharing a simulated host's network namespace."""

    host: SimHost
    container: Container

    def status(self) -> dict[str, Any]:
        try:
            result = self.container.exec_run(["keepalived-supervisor", "status", "--json"])
        except docker.errors.APIError:
            return {}
        output = result.output if isinstance(result.output, bytes) else b""
        try:
            return dict(json.loads(output.decode(errors="replace")))
        except ValueError:
            return {}

    def status_text(self) -> str:
        result = self.container.exec_run(["status"])
        return result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""

    def logs(self) -> str:
        return bytes(self.container.logs()).decode(errors="replace")


@dataclass
class SimHost:
    lab: HostLab
    name: str
    address: str
    container: Container
    pid: int
    services: list[Container] = field(default_factory=list)
    supervisor: Supervisor | None = None
    supervisor_container: SupervisorContainer | None = None
    svc_attached: bool = False

    def has(self, address: str) -> bool:
        """Whether this host holds `address` on any interface (a host cut off from its network may have none)."""
        out = nsenter(self.pid, "ip", "-o", "addr", "show", check=False).stdout
        return f" {address}/" in out

    def restore_interface_name(self, name: str, address: str) -> None:
        """Rename the interface that carries `address` back to `name` (after a docker network re-connect)."""
        for line in nsenter(self.pid, "ip", "-o", "-4", "addr", "show").stdout.splitlines():
            fields = line.split()
            if f"{address}/" in line and fields[1] != name:
                nsenter(self.pid, "ip", "link", "set", fields[1], "down")
                nsenter(self.pid, "ip", "link", "set", fields[1], "name", name)
                nsenter(self.pid, "ip", "link", "set", name, "up")

    def selector_value(self) -> str:
        return f"{self.lab.id}-{self.name}"

    def start_supervisor(self, env: dict[str, str]) -> Supervisor:
        run_dir = self.lab.workdir / self.name
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.lab.workdir / f"{self.name}-supervisor.log"
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": str(REPO),
            "RUN_DIR": str(run_dir),
            "SCRIPT_USER": "nobody",
            "INTERFACE": "eth0",
            # No lookup of rancher-metadata: outside Rancher it would only ask the machine's resolver.
            "RANCHER_METADATA_URL": "off",
            "LABEL_SELECTOR": f"kat.host={self.selector_value()}",
            "RECONCILE_MIN_WAIT": "0.05",
            **env,
        }
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["nsenter", "-t", str(self.pid), "-n", sys.executable, "-m", "supervisor", "run"],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.supervisor = Supervisor(self, run_dir, log_path, process)
        return self.supervisor

    def start_supervisor_container(self, env: dict[str, str]) -> SupervisorContainer:
        """The image's supervisor in this host's network namespace: the capabilities and socket mount of the README."""
        container = self.lab.client.containers.run(
            SUPERVISOR_IMAGE,
            name=f"kat-{self.lab.id}-{self.name}-keepalived",
            labels={TEST_LABEL: self.lab.id},
            network_mode=f"container:{self.container.id}",
            cap_add=["NET_ADMIN", "NET_RAW", "NET_BROADCAST"],
            volumes={"/var/run": {"bind": "/host-run", "mode": "ro"}},
            environment={
                "DOCKER_HOST": "unix:///host-run/docker.sock",
                "INTERFACE": "eth0",
                "RANCHER_METADATA_URL": "off",
                "LABEL_SELECTOR": f"kat.host={self.selector_value()}",
                **env,
            },
            detach=True,
        )
        self.supervisor_container = SupervisorContainer(self, container)
        return self.supervisor_container

    def add_service(
        self,
        name: str,
        labels: dict[str, str],
        mode: str = "rancher",
        port: int = 80,
        healthcheck: dict[str, Any] | None = None,
        publish: bool = False,
    ) -> Container:
        """A busybox httpd answering with `name`. mode "rancher": on the service network behind DNAT from this
        host; mode "shared": in the host's own network namespace (a listener the host can see)."""
        command = [
            "sh",
            "-c",
            f"mkdir -p /www && echo {name} > /www/index.html && touch /ok && exec httpd -f -p {port} -h /www",
        ]
        all_labels = {TEST_LABEL: self.lab.id, "kat.host": self.selector_value(), **labels}
        options: dict[str, Any] = {
            "name": f"kat-{self.lab.id}-{name}",
            "labels": all_labels,
            "detach": True,
            "healthcheck": healthcheck,
        }
        if publish:  # a published binding (on a loopback address of the host's own), as `docker run -p` users have
            options["ports"] = {f"{port}/tcp": (f"127.0.0.{self.address.rsplit('.', 1)[1]}", port)}
        if mode == "shared":
            options["network_mode"] = f"container:{self.container.id}"
            container = self.lab.client.containers.run(IMAGE, command, **options)
        else:
            address = f"{SVC}.{140 + len(self.lab.all_services())}"
            container = self.lab.client.containers.run(
                IMAGE, command, **options, **self.lab.endpoint(self.lab.svc, address)
            )
            self._dnat(port, address)
        self.services.append(container)
        return container  # type: ignore[no-any-return]

    def _dnat(self, port: int, target: str) -> None:
        if not self.svc_attached:
            self.lab.svc.connect(self.container, ipv4_address=f"{SVC}.{200 + int(self.address.rsplit('.', 1)[1])}")
            self.svc_attached = True
        for chain in ("PREROUTING", "OUTPUT"):
            nsenter(
                self.pid, "iptables", "-t", "nat", "-A", chain, "-p", "tcp", "--dport", str(port),
                "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DNAT", "--to-destination", f"{target}:{port}",
            )  # fmt: skip
        nsenter(self.pid, "iptables", "-t", "nat", "-A", "POSTROUTING", "-d", target, "-j", "MASQUERADE")

    def listeners(self) -> str:
        return nsenter(self.pid, "ss", "-Hltn").stdout


class HostLab:
    """Internal networks `kat-<id>-lan` and `kat-<id>-svc`, hosts, services and a client; all removed on close."""

    def __init__(self, workdir: Path) -> None:
        self.client: docker.DockerClient = engine_client()
        ensure_image(self.client)
        self.id = new_run_id()
        self.workdir = workdir
        self.hosts: list[SimHost] = []
        self._remove_leftovers()
        self.lan: Network = self._network("lan", LAN_SUBNET)
        self.svc: Network = self._network("svc", SVC_SUBNET)
        self.client_container = self.client.containers.run(
            IMAGE,
            ["sleep", "3600"],
            name=f"kat-{self.id}-client",
            labels={TEST_LABEL: self.id},
            network=self.lan.name,
            detach=True,
        )
        self.client_container.reload()

    def _remove_leftovers(self) -> None:
        """Containers and networks of an earlier lab that was killed before its cleanup (their subnets would clash)."""
        for network in self.client.networks.list(filters={"label": TEST_LABEL}):
            run_id = network.attrs.get("Labels", {}).get(TEST_LABEL, "")
            for container in self.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()

    def _network(self, role: str, subnet: str) -> Network:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        return self.client.networks.create(
            f"kat-{self.id}-{role}", driver="bridge", internal=True, ipam=ipam, labels={TEST_LABEL: self.id}
        )

    @staticmethod
    def endpoint(network: Network, address: str) -> dict[str, Any]:
        """Options of containers.run that attach the container to `network` with a fixed address."""
        return {
            "network": network.name,
            "networking_config": {network.name: docker.types.EndpointConfig("1.41", ipv4_address=address)},
        }

    def all_services(self) -> list[Container]:
        return [service for host in self.hosts for service in host.services]

    def add_host(self, name: str, octet: int) -> SimHost:
        address = f"{LAN}.{octet}"
        container = self.client.containers.run(
            IMAGE,
            ["sleep", "3600"],
            name=f"kat-{self.id}-{name}",
            labels={TEST_LABEL: self.id},
            cap_add=["NET_ADMIN", "NET_RAW"],
            sysctls={"net.ipv4.ip_forward": "1"},
            detach=True,
            **self.endpoint(self.lan, address),
        )
        container.reload()
        host = SimHost(self, name, address, container, int(container.attrs["State"]["Pid"]))
        self.hosts.append(host)
        return host

    def fetch(self, address: str, port: int = 80, timeout: int = 1) -> str | None:
        """One HTTP request from the client container; the body, or None when it failed (a hung server included:
        busybox nc's -w bounds only the connect, `timeout` bounds the whole exchange)."""
        result = self.client_container.exec_run(
            [
                "sh",
                "-c",
                f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout {timeout + 1} nc -w {timeout} {address} {port}",
            ]
        )
        output = result.output
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        if result.exit_code != 0 or "200 OK" not in text:
            return None
        return text.rsplit("\r\n\r\n", 1)[-1].strip()

    def client_process(self, mode: str, *args: str) -> subprocess.Popen[str]:
        """A Python client inside the client container's network namespace (see CLIENT_CODE), output on stdout."""
        pid = str(self.client_container.attrs["State"]["Pid"])
        return subprocess.Popen(
            ["nsenter", "-t", pid, "-n", sys.executable, "-c", CLIENT_CODE, mode, *args],
            stdout=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        for host in self.hosts:
            if host.supervisor is not None:
                host.supervisor.stop()
        for container in self.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={self.id}"}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        for network in (self.svc, self.lan):
            for _ in range(20):
                try:
                    network.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    time.sleep(0.25)


class HolderSampler:
    """Samples every host in the background: how many samples saw no holder, and how many saw two."""

    def __init__(self, lab: HostLab, address: str) -> None:
        self.lab = lab
        self.address = address
        self.samples = 0
        self.none = 0
        self.two = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            held = sum(host.has(self.address) for host in self.lab.hosts)
            if held != 1:
                # The hosts are read one after another (tens of ms apart under load): a handover between the reads
                # looks like two holders or none. Count it only if a second read, in the other order, agrees.
                again = sum(host.has(self.address) for host in reversed(self.lab.hosts))
                held = held if (again > 1) == (held > 1) and (again == 0) == (held == 0) else 1
            self.samples += 1
            self.none += held == 0
            self.two += held > 1

    def __enter__(self) -> HolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
