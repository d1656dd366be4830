"""Front ends nobody labelled fail over through Docker events: found by LABEL_SELECTOR alone, or by CHECK_PORT.

Two simulated hosts on the real engine (lab.hosts), front ends behind Rancher-style DNAT (no socket on the host),
supervisors from this checkout with the old image's variables. The test asserts the path (the Docker event failed
the member at once, before any probe), not a time.
"""

from __future__ import annotations

from lab.engine import wait_until
from lab.hosts import HostLab, SimHost

VIP = "198.51.100.100"


def start(lab: HostLab, ports: tuple[int, int], publish: bool, env: dict[str, str]) -> tuple[SimHost, SimHost]:
    h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
    for host, priority, port in ((h1, 150, ports[0]), (h2, 100, ports[1])):
        host.add_service(f"s{host.name[-1]}", {}, mode="rancher", port=port, publish=publish)
        host.start_supervisor(
            {
                "VIRTUAL_IP": VIP,
                "VRID": "72",
                "PRIORITY": str(priority),
                "UNICAST_PEERS": f"{h1.address},{h2.address}",
                "ADVERT_INT": "0.5",
                "CHECK_PORT": str(port),
                "CHECK_INTERVAL": "1",
                "CHECK_FALL": "3",
                **env,
            }
        )
    return h1, h2


def serves(lab: HostLab, holder: SimHost, port: int, answer: str) -> bool:
    others = [host for host in lab.hosts if host is not holder]
    return holder.has(VIP) and not any(h.has(VIP) for h in others) and lab.fetch(VIP, port) == answer


def members(host: SimHost) -> list[str]:
    assert host.supervisor is not None
    return list(host.supervisor.instance("VI_72").get("members", []))


def fails_by_event(lab: HostLab, h1: SimHost, h2: SimHost, ports: tuple[int, int]) -> None:
    wait_until(lambda: serves(lab, h1, ports[0], "s1"), 40, "the VIP on h1, answered by s1")
    h1.services[0].kill()
    wait_until(lambda: serves(lab, h2, ports[1], "s2"), 15, "the VIP on h2, answered by s2, after s1 was killed")
    assert h1.supervisor is not None
    log = h1.supervisor.log_text()
    event_line = next((n for n, line in enumerate(log.splitlines()) if "s1 kill -> failed at once" in line), None)
    assert event_line is not None, "the Docker event did not fail the member:\n" + log[-3000:]
    lines = log.splitlines()
    fault = next((n for n in range(event_line, len(lines)) if "VI_72 is FAILED" in lines[n]), None)
    assert fault is not None, "the instance never failed after the event:\n" + log[-3000:]
    between = lines[event_line:fault]
    assert not any("failed:" in line and "health: s" not in line for line in between), "\n".join(between)


def test_front_end_selected_by_label_selector_alone(hostlab: HostLab) -> None:
    h1, h2 = start(hostlab, (80, 80), publish=False, env={"DISCOVER_CHECK_PORT": "false"})
    wait_until(lambda: any("LABEL_SELECTOR" in m for m in members(h1)), 30, "s1 joined through LABEL_SELECTOR")
    fails_by_event(hostlab, h1, h2, (80, 80))


def test_front_end_found_by_its_published_check_port(hostlab: HostLab) -> None:
    # No selector at all: every container on the engine is looked at; only the one publishing this host's
    # CHECK_PORT joins (the two simulated hosts share one engine, so each gets a port of its own).
    ports = (18081, 18082)
    # A prefix of its own, so that labelled containers of other runs on this shared engine are not ours.
    env = {"LABEL_SELECTOR": "", "LABEL_PREFIX": f"kat{hostlab.id}."}
    h1, h2 = start(hostlab, ports, publish=True, env=env)
    wait_until(lambda: any("CHECK_PORT" in m for m in members(h1)), 30, "s1 discovered by its CHECK_PORT binding")
    assert members(h1) == ["kat-" + hostlab.id + "-s1 (found by its published CHECK_PORT)"], members(h1)
    fails_by_event(hostlab, h1, h2, ports)
