"""The two-host demo (README's first command): watch a VIP fail over when the master's front end dies.

Two simulated hosts on one machine, each with a front end published Rancher-style (DNAT, no listener on the host)
and the supervisor image beside it, as a user would run it. One short line per step, timings in ms. Everything it
creates (containers, networks) is removed at the end, also on failure or Ctrl-C. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab.engine import wait_until
from lab.hosts import HostLab, SimHost

VIP = "198.51.100.100"
LABELS = {"keepalived.enable": "true", "keepalived.port": "80", "keepalived.check": "http"}


def say(message: str) -> None:
    print(message, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def holder(lab: HostLab) -> str:
    held = [host.name for host in lab.hosts if host.has(VIP)]
    return ", ".join(held) if held else "nobody"


def only_on(lab: HostLab, host: SimHost) -> Callable[[], bool]:
    return lambda: host.has(VIP) and all(not other.has(VIP) for other in lab.hosts if other is not host)


def run(workdir: Path) -> None:
    lab = HostLab(workdir)
    try:
        started = time.monotonic()
        h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
        for host in (h1, h2):
            host.add_service(f"front end on {host.name}".replace(" ", "-"), LABELS)
        say(f"two hosts up: h1 {h1.address}, h2 {h2.address}, each with a front end behind DNAT "
            f"({ms(time.monotonic() - started)})")  # fmt: skip
        peers = f"{h1.address},{h2.address}"
        started = time.monotonic()
        for host, priority in ((h1, 254), (h2, 250)):
            host.start_supervisor_container(
                {"VIRTUAL_IP": VIP, "VRID": "51", "PRIORITY": str(priority), "UNICAST_PEERS": peers}
            )
        wait_until(only_on(lab, h1), 60, "the VIP on h1")
        say(f"supervisors started (priority h1 254, h2 250): VIP {VIP} held by {holder(lab)} after "
            f"{ms(time.monotonic() - started)}")  # fmt: skip
        say(f"client -> {VIP}:80 answered by: {lab.fetch(VIP)}")

        client = lab.client_process("first", VIP, "front-end-on-h2", "20")
        time.sleep(0.2)
        killed_at = time.time()
        h1.services[0].kill()
        say("killed the front end on h1 (docker kill)")
        wait_until(only_on(lab, h2), 20, "the VIP on h2")
        moved = time.time() - killed_at
        out, _ = client.communicate(timeout=30)
        answered = float(out.strip()) - killed_at if client.returncode == 0 else None
        say(f"VIP moved to {holder(lab)} within {ms(moved)} of the kill")
        say(f"client answered by the backup's front end {ms(answered) if answered is not None else 'NEVER'} "
            "after the kill")  # fmt: skip
        say(f"client -> {VIP}:80 answered by: {lab.fetch(VIP)}")
        assert h1.supervisor_container is not None
        for line in h1.supervisor_container.status_text().splitlines():
            if line.startswith("VI_"):
                say(f"status on h1: {line}")

        started = time.monotonic()
        h1.services[0].start()
        wait_until(only_on(lab, h1), 30, "the VIP back on h1")
        say(f"front end on h1 restored: VIP back on {holder(lab)} after {ms(time.monotonic() - started)}")
        say(f"client -> {VIP}:80 answered by: {lab.fetch(VIP)}")
        if answered is None:
            raise RuntimeError("the backup never answered the client")
    finally:
        lab.close()
        say("cleaned up: containers and networks removed")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kat-demo-") as workdir:
        try:
            run(Path(workdir))
        except (AssertionError, RuntimeError) as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
