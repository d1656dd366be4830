"""A lab of simulated hosts in network namespaces, joined by a bridge that lives in a namespace of its own.

Nothing touches the machine's own namespace: the bridge, every host and every address (198.51.100.0/24,
203.0.113.0/24) exist only inside namespaces this lab creates, and ``Lab.close`` removes them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.engine import REPO, terminate, wait_until

__all__ = ["Lab", "Node", "wait_until"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Node:
    """One simulated host: a namespace with eth0 on the lab bridge."""

    lab: Lab
    name: str
    netns: str
    address: str
    run_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def addresses(self, interface: str = "eth0") -> set[str]:
        out = sh("ip", "-n", self.netns, "-j", "addr", "show", "dev", interface).stdout
        return {info["local"] for link in json.loads(out or "[]") for info in link.get("addr_info", [])}

    def has(self, address: str) -> bool:
        return address in self.addresses()

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *args, check=check)

    def start_supervisor(self, env: Mapping[str, str], command: str = "run") -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": str(REPO),
            "RUN_DIR": str(self.run_dir),
            "SCRIPT_USER": "nobody",
            "INTERFACE": "eth0",
            # No lookup of rancher-metadata: outside Rancher it would only ask the machine's resolver.
            "RANCHER_METADATA_URL": "off",
            "RECONCILE_MIN_WAIT": "0.05",
            # VRRP-only tests run without an engine: the supervisor serves its env instance and keeps retrying.
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            **env,
        }
        self.log_path = self.lab.workdir / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "supervisor", command],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def status(self) -> dict[str, object]:
        path = self.run_dir / "status.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def instance_state(self, name: str) -> str | None:
        for entry in self.status().get("instances", []):  # type: ignore[attr-defined]
            if entry["name"] == name:
                return str(entry["state"])
        return None

    def keepalived_pid(self) -> int | None:
        pid = self.status().get("keepalived", {}).get("pid")  # type: ignore[attr-defined]
        return int(pid) if pid else None

    def reloads(self) -> int:
        return int(self.status().get("keepalived", {}).get("reloads", 0))  # type: ignore[attr-defined]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop_supervisor(self, timeout: float = 20) -> int | None:
        return None if self.process is None else terminate(self.process, timeout)


class Lab:
    """Namespaces `kat-<id>-*`: a bridge namespace `br` and simulated hosts attached to its bridge."""

    def __init__(self, workdir: Path, subnet: str = "198.51.100") -> None:
        self.id = uuid.uuid4().hex[:6]
        self.workdir = workdir
        self.subnet = subnet
        self.bridge_ns = f"kat-{self.id}-br"
        self.nodes: list[Node] = []
        self._namespaces: list[str] = []
        self._add_netns(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def add_node(self, name: str, host_octet: int) -> Node:
        netns = f"kat-{self.id}-{name}"
        self._add_netns(netns)
        peer = f"v{self.id}{len(self.nodes)}"
        sh("ip", "link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", peer, "netns", self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "set", peer, "master", "br0", "up")
        address = f"{self.subnet}.{host_octet}"
        sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        node = Node(self, name, netns, address, self.workdir / name)
        self.nodes.append(node)
        return node

    def cut(self, node: Node) -> None:
        """Take a host off the network (its link to the bridge goes down)."""
        sh("ip", "-n", node.netns, "link", "set", "eth0", "down")

    def close(self) -> None:
        for node in self.nodes:
            node.stop_supervisor()
        for netns in reversed(self._namespaces):
            # Anything still running inside (a stray keepalived) is killed before its namespace goes.
            pids = sh("ip", "netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", netns, check=False)
