"""The VIP lease (supervisor.adapters.lease) against the real kernel, in namespaces of its own (kat-lease-*).

The lease runs in a process inside the namespace (bench.lease_steady's runner), so SIGKILL is a real hard kill.
Addresses: 198.51.100.0/24 and, for IPv6, the documentation prefix 2001:db8::/32, only inside those namespaces.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.lease_steady import (
    FOREVER,
    REPO,
    LeaseLab,
    keepalived_findings,
    kill,
    monitor_deletions,
    vanish_time,
    wait_until,
)
from supervisor.adapters.lease import VipLease
from supervisor.core.validate import VirtualAddress
from tests.conftest import require_root_netns

require_root_netns()

LEASE = 2
# The kernel removes an address given N s after about N + 0.1 s (its timer fuzz adds up to 0.25 s); the last renewal
# was at most 0.5 s before a kill. The rest is slack for `ip` polling on a loaded machine: this bound says "the address
# goes by itself, soon", the benchmark measures how soon.
EXPIRY_BOUND = LEASE + 2.0
LIFETIME_KEYS = {"valid_life_time", "preferred_life_time", "dynamic"}


@pytest.fixture
def lease_lab(tmp_path: Path) -> Iterator[LeaseLab]:
    with LeaseLab(tmp_path) as lab:
        yield lab


def valid_lft(lab: LeaseLab, address: str) -> int | None:
    info = lab.addr_info().get(address)
    return None if info is None else int(info.get("valid_life_time", FOREVER))


def leased(lab: LeaseLab, *addresses: str) -> bool:
    infos = lab.addr_info()
    return all(
        a in infos
        and int(infos[a].get("valid_life_time", FOREVER)) <= LEASE
        and int(infos[a].get("preferred_life_time", FOREVER)) <= LEASE
        for a in addresses
    )


def without_lifetimes(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in info.items() if key not in LIFETIME_KEYS}


def test_lease_keeps_present_vips_and_they_expire_after_sigkill(lease_lab: LeaseLab) -> None:
    lab = lease_lab
    lab.ip("addr", "add", "198.51.100.50/32", "dev", "eth0")
    lab.ip("addr", "add", "198.51.100.51/24", "brd", "+", "dev", "eth0", "label", "eth0:vip")  # a secondary
    lab.ip("addr", "add", "2001:db8::50/128", "dev", "eth0", "nodad")
    lab.ip("addr", "add", "2001:db8:1::51/64", "dev", "eth0", "nodad", "noprefixroute")
    vips = ["198.51.100.50", "198.51.100.51", "2001:db8::50", "2001:db8:1::51"]
    before = lab.addr_info()
    runner, log = lab.start_runner(
        ["198.51.100.50/32", "198.51.100.51/24", "2001:db8::50/128", "2001:db8:1::51/64"], lease=LEASE, renew=0.5
    )
    wait_until(lambda: leased(lab, *vips), 3, "every VIP to get the lease lifetime")

    after = lab.addr_info()
    for address in vips:
        assert without_lifetimes(after[address]) == without_lifetimes(before[address]), address
        assert after[address]["valid_life_time"] <= LEASE
        assert before[address]["valid_life_time"] == FOREVER
    assert after["198.51.100.51"]["label"] == "eth0:vip"
    assert after["198.51.100.51"]["broadcast"] == "198.51.100.255"
    assert after["198.51.100.51"].get("secondary") is True
    assert after["2001:db8::50"].get("nodad") is True
    assert after["2001:db8:1::51"].get("noprefixroute") is True
    # The host's own address is not a target: untouched.
    assert after["198.51.100.2"]["valid_life_time"] == FOREVER

    # Renewed while the runner lives: present and leased for 5 s, well past the 2 s lifetime.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert leased(lab, *vips), lab.addr_info()
        time.sleep(0.1)
    assert runner.poll() is None
    assert "problem:" not in log.read_text()

    kill(runner)  # SIGKILL
    killed = time.monotonic()
    for address in vips:
        vanish_time(lab, address, EXPIRY_BOUND)
    took = time.monotonic() - killed
    assert took <= EXPIRY_BOUND
    assert lab.has("198.51.100.2")


def test_not_allowed_lets_the_lease_run_out_and_absent_vips_stay_absent(lease_lab: LeaseLab, tmp_path: Path) -> None:
    lab = lease_lab
    deny = tmp_path / "deny"
    lab.ip("addr", "add", "198.51.100.50/32", "dev", "eth0")
    runner, log = lab.start_runner(["198.51.100.50/32"], lease=LEASE, renew=0.5, deny_file=deny)
    wait_until(lambda: leased(lab, "198.51.100.50"), 3, "the lease")

    deny.touch()  # allowed() now False: no more renewals
    took = vanish_time(lab, "198.51.100.50", EXPIRY_BOUND)
    assert took <= EXPIRY_BOUND

    deny.unlink()  # allowed again, but the address is absent: never re-added
    time.sleep(2)
    assert not lab.has("198.51.100.50")
    assert runner.poll() is None
    assert "problem:" not in log.read_text()


def test_absent_or_other_prefix_addresses_are_left_alone(lease_lab: LeaseLab) -> None:
    lab = lease_lab
    lab.ip("addr", "add", "198.51.100.52/24", "dev", "eth0")  # same address as a target, other prefix
    runner, _ = lab.start_runner(["198.51.100.50/32", "198.51.100.52/32", "2001:db8::50/128"], lease=LEASE, renew=0.2)
    time.sleep(2)
    infos = lab.addr_info()
    assert "198.51.100.50" not in infos
    assert "2001:db8::50" not in infos
    assert infos["198.51.100.52"]["valid_life_time"] == FOREVER
    assert runner.poll() is None


def test_release_forever_restores_the_infinite_lifetime(lease_lab: LeaseLab) -> None:
    lab = lease_lab
    lab.ip("addr", "add", "198.51.100.50/32", "dev", "eth0", "valid_lft", "30", "preferred_lft", "30")
    lab.ip("addr", "add", "198.51.100.51/24", "brd", "+", "dev", "eth0", "label", "eth0:vip", "valid_lft", "30",
           "preferred_lft", "30")  # fmt: skip
    lab.ip("addr", "add", "2001:db8::50/128", "dev", "eth0", "nodad", "valid_lft", "30", "preferred_lft", "30")
    before = lab.addr_info()
    code = (
        "from supervisor.adapters.lease import VipLease; from supervisor.core.validate import VirtualAddress as V; "
        "import ipaddress as i; "
        "print(sorted(str(v) for v in VipLease.release_forever('eth0', [V(i.ip_address('198.51.100.50'), 32), "
        "V(i.ip_address('198.51.100.51'), 24), V(i.ip_address('2001:db8::50'), 128), "
        "V(i.ip_address('198.51.100.99'), 32)])))"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", lab.ns, sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.strip() == "['198.51.100.50/32', '198.51.100.51/24', '2001:db8::50/128']"
    after = lab.addr_info()
    for address in ("198.51.100.50", "198.51.100.51", "2001:db8::50"):
        assert after[address]["valid_life_time"] == FOREVER
        assert after[address]["preferred_life_time"] == FOREVER
        assert without_lifetimes(after[address]) == without_lifetimes(before[address])
    assert "198.51.100.99" not in after


def test_keepalived_master_keeps_its_vip_under_the_lease_and_loses_it_when_killed(lease_lab: LeaseLab) -> None:
    lab = lease_lab
    vip = "198.51.100.60"
    _, monitor_log = lab.start_monitor()
    keepalived, keepalived_log = lab.start_keepalived(f"{vip}/32")
    wait_until(lambda: lab.has(vip), 20, "keepalived to become MASTER and add the VIP")
    runner, runner_log = lab.start_runner([f"{vip}/32"], lease=LEASE, renew=0.5)
    wait_until(lambda: leased(lab, vip), 3, "the lease on keepalived's VIP")

    missing = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not leased(lab, vip):
            missing += 1
        time.sleep(0.1)
    assert missing == 0
    assert keepalived.poll() is None
    assert runner.poll() is None
    time.sleep(0.2)
    assert monitor_deletions(monitor_log.read_text(), vip) == [], "the VIP flapped"
    findings = keepalived_findings(keepalived_log.read_text(errors="replace"), vip)
    assert findings["became_master"] == 1, findings["state_changes"]
    assert findings["address_lines_not_garp"] == []
    assert findings["alarm_lines"] == []
    assert "problem:" not in runner_log.read_text()

    kill(keepalived)  # SIGKILL to the whole process group, children included
    kill(runner)
    killed = time.monotonic()
    vanish_time(lab, vip, EXPIRY_BOUND)
    assert time.monotonic() - killed <= EXPIRY_BOUND


# -- the thread's own behaviour (no namespace needed: targets() fails before any interface is touched) -----------


def test_failing_renewals_are_logged_once_and_reported_as_a_problem(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def targets() -> list[tuple[str, list[VirtualAddress]]]:
        calls.append(1)
        raise RuntimeError("plan unavailable")

    lease = VipLease(1, 0.1, targets, lambda: True)
    with caplog.at_level(logging.WARNING, logger="supervisor.adapters.lease"):
        lease.start()
        try:
            assert lease.problem() is None
            wait_until(lambda: lease.problem() is not None, 3, "the lease to report its failing renewals")
            problem = lease.problem()
            assert problem is not None and "plan unavailable" in problem
            assert len(calls) >= 5  # the loop goes on after each failure
        finally:
            lease.stop()
    assert [r.getMessage() for r in caplog.records].count(
        "VIP lease: renewal failed (RuntimeError: plan unavailable); retrying every 0.1 s"
    ) == 1
    assert lease.problem() is None  # stopped on purpose


def test_not_allowed_touches_nothing_and_is_no_problem() -> None:
    calls = []

    def targets() -> list[tuple[str, list[VirtualAddress]]]:
        calls.append(1)
        return []

    lease = VipLease(1, 0.05, targets, lambda: False)
    lease.start()
    try:
        time.sleep(1.3)
        assert lease.problem() is None
        assert calls == []
        assert lease.turns >= 10
    finally:
        lease.stop()


@pytest.mark.parametrize(
    ("lease_seconds", "renew_every", "error"),
    [(0, 0.5, ValueError), (2, 2, ValueError), (2, 0, ValueError), (1.5, 0.5, TypeError), (True, 0.5, TypeError)],
)
def test_bad_settings_are_refused(lease_seconds: Any, renew_every: float, error: type[Exception]) -> None:
    with pytest.raises(error):
        VipLease(lease_seconds, renew_every, lambda: [], lambda: True)


def test_release_forever_is_also_a_module_function() -> None:
    from supervisor.adapters import lease

    assert VipLease.release_forever is lease.release_forever
