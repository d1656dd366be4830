"""VIP lease steady state: a real keepalived MASTER plus the lease renewing its VIP, watched for N seconds.

A namespace with eth0 (a veth whose peer sits in a second namespace), keepalived 2.x as sole MASTER of one
instance holding 198.51.100.60/32, and a lease runner (supervisor.adapters.lease.VipLease in a process of its own,
lease 2 s, renew every 0.5 s). For N seconds the bench samples the VIP every 100 ms and records `ip monitor
address` events, then kills both with SIGKILL and measures how long the VIP outlives them.

Counts: samples without the VIP, deletions of the VIP seen by `ip monitor`, samples whose lifetime was not the
lease's (forever or above the lease), keepalived log lines mentioning the address (gratuitous ARP lines apart) or
saying removed/warning/error. Writes bench/results/lease_steady.json and prints a summary.

Also the lab the integration tests (tests/integration/test_lease.py) use: `LeaseLab` and the runner entry point
(`python -m bench.lease_steady --runner ...`, run inside the namespace by the lab).

Usage: python -m bench.lease_steady [--seconds 600]   (root; only touches namespaces it creates, kat-lease-*)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
HOST_ADDRESS = "198.51.100.2/24"
VIP = "198.51.100.60"
FOREVER = 0xFFFFFFFF


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll `predicate` until true; return the seconds it took, or fail naming `what`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def keepalived_config(name: str, vip: str, vrid: int = 51, advert: float = 1.0) -> str:
    return f"""global_defs {{
    router_id {name}
    vrrp_garp_master_delay 1
}}
vrrp_instance VI_LEASE {{
    state MASTER
    interface eth0
    virtual_router_id {vrid}
    priority 150
    advert_int {advert:g}
    virtual_ipaddress {{
        {vip}
    }}
}}
"""


class LeaseLab:
    """Two namespaces joined by a veth: `ns` (eth0, 198.51.100.2/24) where everything runs, and its peer.

    Every process started here is killed by its own pid and both namespaces are deleted on close, also when
    setup fails half way."""

    def __init__(self, workdir: Path) -> None:
        run = uuid.uuid4().hex[:6]
        self.ns = f"kat-lease-{run}-a"
        self.peer_ns = f"kat-lease-{run}-b"
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []

    def __enter__(self) -> LeaseLab:
        try:
            for ns in (self.ns, self.peer_ns):
                sh("ip", "netns", "add", ns)
                self._created.append(ns)
            sh("ip", "link", "add", "eth0", "netns", self.ns, "type", "veth", "peer", "name", "peer0",
               "netns", self.peer_ns)  # fmt: skip
            sh("ip", "-n", self.ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.peer_ns, "link", "set", "peer0", "up")
            sh("ip", "-n", self.ns, "addr", "add", HOST_ADDRESS, "dev", "eth0")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes:
            kill(process)
        self.processes.clear()
        for ns in reversed(self._created):
            # Anything still inside a namespace this lab created was started by it (a forked child, say).
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        self._created.clear()

    # -- addresses ----------------------------------------------------------------------------------------------

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns, *args, check=check)

    def addr_info(self, interface: str = "eth0") -> dict[str, dict[str, Any]]:
        """`ip -j addr show` entries of the interface, by address."""
        out = self.ip("-j", "addr", "show", "dev", interface).stdout
        return {info["local"]: info for link in json.loads(out or "[]") for info in link.get("addr_info", [])}

    def has(self, address: str, interface: str = "eth0") -> bool:
        return address in self.addr_info(interface)

    # -- processes ----------------------------------------------------------------------------------------------

    def spawn(self, name: str, *command: str) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `command` inside the namespace, output to workdir/name.log."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *command],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process, log_path

    def start_runner(
        self, vips: list[str], lease: int = 2, renew: float = 0.5, deny_file: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """A process running VipLease on eth0 for `vips` (prefix included); it renews unless `deny_file` exists."""
        command = [sys.executable, "-m", "bench.lease_steady", "--runner", "--lease", str(lease), "--renew", str(renew)]
        for vip in vips:
            command += ["--vip", vip]
        if deny_file is not None:
            command += ["--deny-file", str(deny_file)]
        process, log_path = self.spawn("runner", *command)
        wait_until(lambda: "lease running" in log_path.read_text() or process.poll() is not None, 20, "the runner")
        if process.poll() is not None:
            raise AssertionError(f"the lease runner exited: {log_path.read_text()}")
        return process, log_path

    def start_keepalived(self, vip: str, advert: float = 1.0) -> tuple[subprocess.Popen[bytes], Path]:
        config = self.workdir / "keepalived.conf"
        config.write_text(keepalived_config(self.ns, vip, advert=advert))
        return self.spawn(
            "keepalived", "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "-f", str(config), "-p", str(self.workdir / "keepalived.pid"), "-r", str(self.workdir / "vrrp.pid"),
            "-c", str(self.workdir / "checkers.pid"),
        )  # fmt: skip

    def start_monitor(self) -> tuple[subprocess.Popen[bytes], Path]:
        """`ip monitor address` in the namespace, with timestamps."""
        return self.spawn("monitor", "ip", "-ts", "monitor", "address")


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this lab started (its session leader is `ip netns exec`, then exec'd)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def vanish_time(lab: LeaseLab, address: str, timeout: float) -> float:
    """Seconds until `address` is gone from eth0 (polled every 10 ms)."""
    return wait_until(lambda: not lab.has(address), timeout, f"{address} to expire", interval=0.01)


# -- the runner (inside the namespace) --------------------------------------------------------------------------


def runner(args: argparse.Namespace) -> int:
    import ipaddress
    import logging

    from supervisor.adapters.lease import VipLease
    from supervisor.core.validate import VirtualAddress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    vips = []
    for text in args.vip:
        network = ipaddress.ip_interface(text)
        vips.append(VirtualAddress(network.ip, network.network.prefixlen))
    deny = Path(args.deny_file) if args.deny_file else None
    lease = VipLease(
        args.lease, args.renew, lambda: [(args.interface, vips)], lambda: deny is None or not deny.exists()
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    lease.start()
    print("lease running", flush=True)
    while not stopping:
        time.sleep(0.2)
        problem = lease.problem()
        if problem:
            print(f"problem: {problem}", flush=True)
    lease.stop()
    return 0


# -- the bench --------------------------------------------------------------------------------------------------

_ARP_LINE = re.compile(r"gratuitous (ARP|NA)", re.IGNORECASE)
_ALARM = re.compile(r"remov|warn|error|delet|reinstat|missing|fault", re.IGNORECASE)


def keepalived_findings(log_text: str, address: str) -> dict[str, Any]:
    """What keepalived said once MASTER (its startup "removing VIPs." before the first MASTER is normal)."""
    lines = log_text.splitlines()
    first_master = next((i for i, line in enumerate(lines) if "Entering MASTER STATE" in line), len(lines))
    steady_lines = lines[first_master + 1 :]
    mentions = [line for line in steady_lines if address in line]
    return {
        "lines": len(lines),
        "address_lines": len(mentions),
        "address_lines_not_garp": [line for line in mentions if not _ARP_LINE.search(line)],
        "alarm_lines": [line for line in steady_lines if _ALARM.search(line)],
        "startup_alarm_lines": [line for line in lines[:first_master] if _ALARM.search(line)],
        "became_master": sum("Entering MASTER STATE" in line for line in lines),
        "state_changes": [line for line in lines if "Entering" in line and "STATE" in line],
    }


def monitor_deletions(log_text: str, address: str) -> list[str]:
    return [line for line in log_text.splitlines() if "Deleted" in line and f" {address}/" in line]


def steady(seconds: float, workdir: Path) -> dict[str, Any]:
    vip_cidr = f"{VIP}/32"
    with LeaseLab(workdir) as lab:
        _, monitor_log = lab.start_monitor()
        keepalived, keepalived_log = lab.start_keepalived(vip_cidr)
        wait_until(lambda: lab.has(VIP), 20, "keepalived to add the VIP")
        runner_process, runner_log = lab.start_runner([vip_cidr])
        wait_until(lambda: lab.addr_info().get(VIP, {}).get("valid_life_time", FOREVER) <= 2, 5, "the first lease")
        samples = missing = not_leased = 0
        lifetimes: dict[str, int] = {}
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < seconds:
            info = lab.addr_info().get(VIP)
            samples += 1
            if info is None:
                missing += 1
            else:
                valid = int(info.get("valid_life_time", FOREVER))
                lifetimes[str(valid)] = lifetimes.get(str(valid), 0) + 1
                if valid > 2:
                    not_leased += 1
            if keepalived.poll() is not None or runner_process.poll() is not None:
                raise AssertionError("keepalived or the lease runner exited during the run")
            next_sample += 0.1
            time.sleep(max(0.0, next_sample - time.monotonic()))
        elapsed = time.monotonic() - start
        runner_cpu = cpu_seconds(runner_process.pid)
        time.sleep(0.2)  # let ip monitor write what it saw
        deletions = monitor_deletions(monitor_log.read_text(errors="replace"), VIP)
        kill(keepalived)
        kill(runner_process)
        killed = time.monotonic()
        try:
            gone_after = vanish_time(lab, VIP, 10)
        except AssertionError:
            gone_after = None
        outlived = time.monotonic() - killed if gone_after is not None else None
        time.sleep(0.3)  # let ip monitor write the expiry
        findings = keepalived_findings(keepalived_log.read_text(errors="replace"), VIP)
        expiry_seen = len(monitor_deletions(monitor_log.read_text(errors="replace"), VIP)) - len(deletions)
        runner_text = runner_log.read_text(errors="replace")
    return {
        "seconds": round(elapsed, 1),
        "lease_seconds": 2,
        "renew_every": 0.5,
        "samples": samples,
        "samples_without_vip": missing,
        "samples_not_leased": not_leased,
        "valid_lft_seen": dict(sorted(lifetimes.items())),
        "monitor_deletions_during_run": len(deletions),
        "monitor_deletion_lines": deletions,
        "monitor_saw_expiry_after_kill": expiry_seen,
        "vip_gone_after_sigkill_s": round(outlived, 3) if outlived is not None else None,
        "keepalived": findings,
        "runner_cpu_seconds": runner_cpu,
        "runner_problems": [line for line in runner_text.splitlines() if "problem:" in line or "WARNING" in line],
        "kernel": os.uname().release,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interface", default="eth0", help=argparse.SUPPRESS)
    parser.add_argument("--vip", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--lease", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--renew", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--deny-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runner:
        return runner(args)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kat-lease-bench-") as tmp:
        result = steady(args.seconds, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lease_steady.json").write_text(json.dumps(result, indent=2) + "\n")
    ka = result["keepalived"]
    print(
        f"{result['seconds']:.0f} s, {result['samples']} samples every 100 ms: "
        f"{result['samples_without_vip']} without the VIP, {result['samples_not_leased']} not leased, "
        f"{result['monitor_deletions_during_run']} deletions seen by ip monitor during the run; "
        f"keepalived: {ka['address_lines']} lines mention {VIP} "
        f"({len(ka['address_lines_not_garp'])} not gratuitous ARP), {len(ka['alarm_lines'])} removed/warning/error "
        f"lines; after SIGKILL the VIP was gone in {result['vip_gone_after_sigkill_s']} s; "
        f"lease runner CPU {result['runner_cpu_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
