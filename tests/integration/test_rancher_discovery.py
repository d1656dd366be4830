"""Rancher 1.x without a single label: front ends behind Rancher's own DNAT found through the metadata service, and
the unicast peers taken from it, kept current by its long-poll.

Two simulated hosts on the real engine (lab.hosts); each front end lives behind DNAT in its host's namespace, so
Docker shows no port binding and no socket exists on the host. A local metadata service per host (lab.rancher_metadata,
on the lab bridge's own address, which the hosts reach) serves the environment in the real layout; each one answers
`self` for its own host, as the real service does by source address. No UNICAST_PEERS is set: on this Docker bridge
multicast adverts are dropped, so a single holder shows the peers really came from the metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from lab.engine import wait_until
from lab.hosts import HostLab, SimHost
from lab.rancher_metadata import FakeRancherMetadata

VIP = "198.51.100.100"
STACK, SERVICE = "vip", "keepalived"


@pytest.fixture
def metadata(hostlab: HostLab) -> Iterator[tuple[FakeRancherMetadata, FakeRancherMetadata]]:
    hostlab.lan.reload()
    gateway = hostlab.lan.attrs["IPAM"]["Config"][0].get("Gateway") or "198.51.100.1"
    servers = (FakeRancherMetadata(gateway), FakeRancherMetadata(gateway))
    for server in servers:
        server.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def both(servers: tuple[FakeRancherMetadata, ...], method: str, *args: object, **kwargs: object) -> list[str]:
    return [getattr(server, method)(*args, **kwargs) for server in servers]


def config(host: SimHost) -> str:
    assert host.supervisor is not None
    path = host.supervisor.run_dir / "keepalived.conf"
    return path.read_text() if path.exists() else ""


def peers_of(host: SimHost) -> list[str]:
    block = re.search(r"unicast_peer \{([^}]*)\}", config(host))
    return block.group(1).split() if block else []


def serves(lab: HostLab, holder: SimHost, answer: str) -> bool:
    others = [host for host in lab.hosts if host is not holder]
    return holder.has(VIP) and not any(h.has(VIP) for h in others) and lab.fetch(VIP) == answer


def test_rancher_dnat_front_ends_and_peers_from_metadata(
    hostlab: HostLab, metadata: tuple[FakeRancherMetadata, FakeRancherMetadata]
) -> None:
    h1, h2 = hostlab.add_host("h1", 11), hostlab.add_host("h2", 12)
    s1 = h1.add_service("s1", {}, mode="rancher")
    s2 = h2.add_service("s2", {}, mode="rancher")
    uuids = {}
    for host, service in ((h1, s1), (h2, s2)):
        (uuids[host.name],) = {*both(metadata, "add_host", host.name, host.address, uuid=f"uuid-{host.name}")}
        both(metadata, "add_container", f"lb-{host.name}", uuids[host.name], stack_name="lb",
             service_name="haproxy", ports=["80:80/tcp"], external_id=service.id, uuid=f"lb-{host.name}")  # fmt: skip
        both(metadata, "add_container", f"vip-{host.name}", uuids[host.name], stack_name=STACK,
             service_name=SERVICE, uuid=f"vip-{host.name}")  # fmt: skip
    metadata[0].set_self(uuids["h1"], "vip-h1")
    metadata[1].set_self(uuids["h2"], "vip-h2")
    for host, priority, server in ((h1, 150, metadata[0]), (h2, 100, metadata[1])):
        host.start_supervisor(
            {
                "VIRTUAL_IP": VIP,
                "VRID": "73",
                "PRIORITY": str(priority),
                "ADVERT_INT": "0.5",
                "CHECK_PORT": "80",
                "LABEL_SELECTOR": "",
                "LABEL_PREFIX": f"kat{hostlab.id}.",
                "RANCHER_METADATA_URL": server.url("2015-12-19"),
            }
        )
    wait_until(lambda: peers_of(h1) == [h2.address] and peers_of(h2) == [h1.address], 30, "peers from metadata")
    assert f"unicast_src_ip {h1.address}" in config(h1)
    wait_until(lambda: serves(hostlab, h1, "s1"), 40, "the VIP on h1 only, answered by s1")
    assert h1.supervisor is not None
    members = h1.supervisor.instance("VI_73").get("members", [])
    assert members == [f"kat-{hostlab.id}-s1 (found by Rancher metadata publishing CHECK_PORT)"], members
    assert ":80 " not in h1.listeners(), "the Rancher case has no listener on the host"

    # A peer joins, then leaves: the long-poll brings each change, and keepalived is reloaded, not restarted.
    pid = h1.supervisor.status()["keepalived"]["pid"]
    extra = both(metadata, "add_host", "h3", "198.51.100.13", uuid="uuid-h3")[0]
    both(metadata, "add_container", "vip-h3", extra, stack_name=STACK, service_name=SERVICE, uuid="vip-h3")
    wait_until(lambda: peers_of(h1) == [h2.address, "198.51.100.13"], 20, "the new peer in h1's config")
    both(metadata, "remove_host", extra)
    wait_until(lambda: peers_of(h1) == [h2.address], 20, "the removed peer gone from h1's config")
    assert h1.supervisor.status()["keepalived"]["pid"] == pid, "keepalived must be reloaded, not restarted"

    # Its Docker event fails the discovered front end at once.
    s1.kill()
    wait_until(lambda: serves(hostlab, h2, "s2"), 15, "the VIP on h2, answered by s2, after s1 was killed")
    assert "s1 kill -> failed at once" in h1.supervisor.log_text()
