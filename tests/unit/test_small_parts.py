"""Debounce windows, restart backoff, the notify FIFO line format and the status view."""

from __future__ import annotations

from supervisor.adapters.notify import Transition, parse_notify_line
from supervisor.adapters.status import format_status
from supervisor.core.debounce import Debouncer, restart_delay


def test_debounce_min_window_resets_on_each_change() -> None:
    debouncer = Debouncer(min_wait=0.1, max_wait=1.0)
    assert debouncer.deadline() is None and not debouncer.due(0.0)
    debouncer.mark(0.0)
    debouncer.mark(0.05)
    assert not debouncer.due(0.1) and debouncer.due(0.16)
    debouncer.clear()
    assert debouncer.deadline() is None


def test_debounce_max_window_bounds_a_steady_stream() -> None:
    debouncer = Debouncer(min_wait=0.1, max_wait=1.0)
    now = 0.0
    while not debouncer.due(now):
        debouncer.mark(now)
        now += 0.05
    assert 0.95 <= now <= 1.05


def test_restart_delay_grows_and_caps() -> None:
    assert [restart_delay(n) for n in range(1, 5)] == [0.0, 0.5, 1.0, 2.0]
    assert restart_delay(50) == 30.0


def test_notify_lines() -> None:
    assert parse_notify_line('INSTANCE "VI_51" MASTER 100\n') == Transition("VI_51", "MASTER", 100)
    assert parse_notify_line('INSTANCE "VI_7" FAULT 0') == Transition("VI_7", "FAULT", 0)
    assert parse_notify_line('INSTANCE "VI_7" BACKUP') == Transition("VI_7", "BACKUP", None)
    assert parse_notify_line('GROUP "G" MASTER') is None
    assert parse_notify_line("garbage") is None


def test_status_view() -> None:
    data = {
        "supervisor_pid": 1,
        "engine_reachable": True,
        "keepalived": {"pid": 7, "starts": 1, "reloads": 2, "last_reload": None, "last_config_error": None},
        "instances": [
            {
                "name": "VI_51",
                "state": "MASTER",
                "vrid": 51,
                "priority": 150,
                "interface": "eth0",
                "vips": ["10.0.0.208/24"],
                "holds_vips": True,
                "healthy": True,
                "health_reason": "web ok",
                "last_transition": None,
            },
        ],
        "problems": ["container x: bad label"],
    }
    text = format_status(data, running=True)
    assert "VI_51: MASTER vrid 51 priority 150 on eth0 vips 10.0.0.208/24 (held here) health healthy" in text
    assert "problem: container x: bad label" in text and "docker engine: reachable" in text
    assert "no VRRP instance configured" in format_status({}, running=False)


def test_address_events_count_only_addresses_that_come_or_go() -> None:
    """A lease renewal is an RTM_NEWADDR for an address already there: it must not wake the supervisor."""
    from supervisor.adapters.net import address_set_changed

    def event(kind: str, address: str, prefix: int = 32, index: int = 2) -> dict[str, object]:
        return {"event": kind, "IFA_LOCAL": address, "prefixlen": prefix, "index": index}

    known: set[tuple[int, str, int]] = set()
    assert address_set_changed(known, [event("RTM_NEWADDR", "198.51.100.100")])  # first sighting
    assert not address_set_changed(known, [event("RTM_NEWADDR", "198.51.100.100")])  # lifetime renewed
    assert not address_set_changed(known, [{"event": "RTM_NEWLINK", "index": 2}])
    assert address_set_changed(known, [event("RTM_NEWADDR", "198.51.100.100", prefix=24)])  # another prefix
    assert address_set_changed(known, [event("RTM_NEWADDR", "198.51.100.100", index=3)])  # another interface
    assert address_set_changed(known, [event("RTM_DELADDR", "198.51.100.100")])
    assert address_set_changed(known, [event("RTM_NEWADDR", "198.51.100.100")])  # back again
    assert not address_set_changed(known, [object()])  # not a netlink message: ignored


def test_every_allowed_lease_gets_a_renewal_period_the_lease_accepts() -> None:
    """VIP_LEASE=1 once crashed the run loop: the fixed 1 s period was not shorter than the lease."""
    from supervisor.adapters.lease import VipLease, renew_period

    assert renew_period(1) == 0.5 and renew_period(2) == 1.0 and renew_period(3600) == 1.0
    for seconds in (1, 2, 3, 60, 3600):
        lease = VipLease(seconds, renew_period(seconds), targets=list, allowed=lambda: True)
        assert 0 < lease.renew_every < lease.lease_seconds
