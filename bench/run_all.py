"""Every benchmark and fault case in one run: prints a table and writes bench/results.json.

    .venv/bin/python -m bench.run_all              # the full run (about half an hour on 2 cores)
    .venv/bin/python -m bench.run_all --smoke      # one run of each case: checks that every key is produced
    .venv/bin/python -m bench.report               # README's table and docs/RELIABILITY.md from the JSON

Topology (lab.hosts): two simulated hosts on an internal bridge, each front end behind Rancher-style DNAT (no socket on
the host), supervisors from this checkout in the hosts' namespaces, unicast VRRP v3, priorities 254/250, a client on
the same bridge that retries every 2 ms. Timings are medians and p95 over --runs runs unless a case says otherwise.
Fault cases run the integration tests that inject them (each bounded in count and time) and record what they report.
A case that fails is recorded with its error; the other cases still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.containers import ContainerLab
from lab.engine import REPO, SUPERVISOR_IMAGE, engine_client, wait_until
from lab.hosts import HostLab, SimHost, nsenter, write_check_script
from lab.netns import Lab

VIP = "198.51.100.100"
RESULTS = Path(__file__).resolve().parent / "results.json"
LABELLED = {"keepalived.port": "80", "keepalived.check": "tcp"}


def summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"p50": None, "p95": None, "n": 0, "min": None, "max": None}
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    ms = 1000.0
    return {
        "p50": round(statistics.median(ordered) * ms, 1),
        "p95": round(p95 * ms, 1),
        "n": len(ordered),
        "min": round(ordered[0] * ms, 1),
        "max": round(ordered[-1] * ms, 1),
    }


@contextlib.contextmanager
def host_lab() -> Iterator[HostLab]:
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = HostLab(Path(workdir))
        try:
            yield lab
        finally:
            lab.close()


def serves(lab: HostLab, holder: SimHost, answer: str, port: int = 80) -> bool:
    others = [host for host in lab.hosts if host is not holder]
    return holder.has(VIP) and not any(h.has(VIP) for h in others) and lab.fetch(VIP, port) == answer


# --- service death ---------------------------------------------------------------------------------------------


def service_death(mode: str, runs: int, advert: str = "1") -> tuple[list[float], list[float]]:
    """docker kill of the master's front end -> the first client answered by the backup; and the return times."""
    ports = (18081, 18082) if mode == "check_port" else (80, 80)
    with host_lab() as lab:
        h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
        for host, port in ((h1, ports[0]), (h2, ports[1])):
            labels = LABELLED if mode == "ours" else {}
            host.add_service(f"s{host.name[-1]}", labels, port=port, publish=mode == "check_port")
        peers = f"{h1.address},{h2.address}"
        for host, priority, port in ((h1, 254, ports[0]), (h2, 250, ports[1])):
            env = {"VIRTUAL_IP": VIP, "VRID": "81", "PRIORITY": str(priority), "UNICAST_PEERS": peers,
                   "ADVERT_INT": advert, "CHECK_PORT": str(port), "DISCOVER_CHECK_PORT": "false"}  # fmt: skip
            if mode in {"ours"}:
                del env["CHECK_PORT"]  # the labels say what to probe
            if mode == "check_port":
                env.update({"DISCOVER_CHECK_PORT": "true", "LABEL_SELECTOR": "", "LABEL_PREFIX": f"kat{lab.id}."})
            elif mode in {"polling", "no_check"}:
                env.update({"LABEL_SELECTOR": "kat.nothing=selected"})
                del env["CHECK_PORT"]
                if mode == "polling":  # the old image's way: a vrrp_script TCP check every 1 s, fall 2
                    script = write_check_script(
                        f"tcp-80-{host.name}", f"exec timeout 1 bash -c 'exec 3<>/dev/tcp/{host.address}/80'"
                    )
                    env.update({"CHECK_SCRIPT": str(script), "CHECK_INTERVAL": "1", "CHECK_TIMEOUT": "1",
                                "CHECK_FALL": "2", "CHECK_RISE": "1"})  # fmt: skip
            host.start_supervisor(env)
        timings: list[float] = []
        returns: list[float] = []
        window = 5.0 if mode == "no_check" else 20.0
        wait_until(lambda: serves(lab, h1, "s1", ports[0]), 60, f"{mode}: the VIP on h1 serving s1")
        for run in range(runs):
            wait_until(lambda: h1.has(VIP) and not h2.has(VIP), 60, f"{mode}: the VIP on h1 only")
            time.sleep(0.5)
            client = lab.client_process("first", f"{VIP}:{ports[1]}", "s2", str(window))
            time.sleep(0.3)
            killed_at = time.time()
            h1.services[0].kill()
            out, _ = client.communicate(timeout=window + 10)
            if client.returncode == 0:
                timings.append(float(out.strip()) - killed_at)
            elif mode != "no_check":
                raise RuntimeError(f"{mode} run {run}: the backup never answered within {window:g} s")
            started = time.monotonic()
            h1.services[0].start()
            wait_until(lambda: h1.has(VIP) and not h2.has(VIP), 60, f"{mode}: the VIP back on h1", interval=0.01)
            returns.append(time.monotonic() - started)
            print(f"  {mode:10s} advert {advert:4s} run {run + 1:2d}: "
                  f"{(timings[-1] * 1000 if timings and client.returncode == 0 else float('nan')):8.1f} ms", flush=True)  # fmt: skip
        return timings, returns


# --- host loss -------------------------------------------------------------------------------------------------


def host_loss(runs: int, advert: float) -> list[float]:
    with host_lab() as lab:
        h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
        peers = f"{h1.address},{h2.address}"
        for host, priority in ((h1, 254), (h2, 250)):
            host.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "82", "PRIORITY": str(priority),
                                   "UNICAST_PEERS": peers, "ADVERT_INT": f"{advert:g}"})  # fmt: skip
        timings: list[float] = []
        for run in range(runs):
            wait_until(lambda: h1.has(VIP) and not h2.has(VIP), 60, "the VIP on h1 only")
            time.sleep(2 * advert + 0.5)
            # The master's link goes down (a cable pulled): its adverts stop at once, as with a dead host.
            cut = time.monotonic()
            nsenter(h1.pid, "ip", "link", "set", "eth0", "down")
            try:
                while not h2.has(VIP):
                    if time.monotonic() - cut > 30:
                        raise RuntimeError("the backup never took the VIP")
                    time.sleep(0.002)
                timings.append(time.monotonic() - cut)
            finally:
                nsenter(h1.pid, "ip", "link", "set", "eth0", "up")
            print(f"  host loss advert {advert:g} run {run + 1:2d}: {timings[-1] * 1000:8.1f} ms", flush=True)
        return timings


def bound_ms(advert: float, backup_priority: int = 250) -> float:
    """The backup's master-down time: 3 x advert + skew, (256 - priority) / 256 x advert (VRRP v3)."""
    return round((3 * advert + (256 - backup_priority) / 256 * advert) * 1000, 1)


# --- graceful handover, convergence, cold start ----------------------------------------------------------------


def graceful(runs: int) -> list[float]:
    """SIGTERM to the master's supervisor (what `docker stop` sends) -> the VIP on the backup."""
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = Lab(Path(workdir))
        try:
            a, b = lab.add_node("a", 11), lab.add_node("b", 12)
            timings: list[float] = []
            for run in range(runs):
                for node, priority in ((a, "254"), (b, "250")):
                    node.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "83", "PRIORITY": priority,
                                           "UNICAST_PEERS": f"{a.address},{b.address}"})  # fmt: skip
                wait_until(lambda: a.has(VIP) and b.instance_state("VI_83") == "BACKUP", 30, "a MASTER, b BACKUP")
                time.sleep(1)
                stopped = time.monotonic()
                assert a.process is not None
                a.process.send_signal(15)
                while not b.has(VIP):
                    if time.monotonic() - stopped > 10:
                        raise RuntimeError("the backup never took the VIP")
                    time.sleep(0.001)
                timings.append(time.monotonic() - stopped)
                for node in (a, b):
                    node.stop_supervisor()
                print(f"  graceful run {run + 1:2d}: {timings[-1] * 1000:8.1f} ms", flush=True)
            return timings
        finally:
            lab.close()


def convergence(runs: int) -> dict[str, Any]:
    """A labelled container started -> its instance installed (debounce included) -> its VIP held (master-down)."""
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = Lab(Path(workdir))
        containers = ContainerLab(engine_client())
        try:
            node = lab.add_node("a", 11)
            node.start_supervisor({"DOCKER_HOST": "unix:///var/run/docker.sock",
                                   "LABEL_SELECTOR": f"kat.test={containers.run_id}", "ADVERT_INT": "1"})  # fmt: skip
            wait_until(lambda: (node.run_dir / "keepalived.conf").exists(), 30, "the supervisor up")
            time.sleep(1)
            config: list[float] = []
            held: list[float] = []
            for run in range(runs):
                vip = f"198.51.100.{120 + run % 100}"
                started = time.monotonic()
                c = containers.create({"keepalived.vip": vip, "keepalived.vrid": str(90 + run % 100),
                                       "keepalived.check": "none"})  # fmt: skip
                conf = node.run_dir / "keepalived.conf"
                while f"{vip}/32" not in conf.read_text():
                    time.sleep(0.002)
                config.append(time.monotonic() - started)
                while not node.has(vip):
                    time.sleep(0.005)
                held.append(time.monotonic() - started)
                c.remove(force=True)
                wait_until(lambda v=vip: f"{v}/32" not in conf.read_text(), 20, "the instance removed")  # type: ignore[misc]  # noqa: B023
                print(f"  convergence run {run + 1:2d}: config {config[-1] * 1000:7.1f} ms, held {held[-1] * 1000:7.1f} ms",
                      flush=True)  # fmt: skip
            return {**summary(config), "config_p50": summary(config)["p50"], "held": summary(held),
                    "debounce_ms": 50.0, "master_down_ms": bound_ms(1.0, 100)}  # fmt: skip
        finally:
            containers.close()
            lab.close()


def cold_start(runs: int) -> list[float]:
    """Two supervisor containers (the image) started -> the VIP held."""
    timings: list[float] = []
    for _ in range(runs):
        with host_lab() as lab:
            h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
            h1.add_service("s1", LABELLED)
            h2.add_service("s2", LABELLED)
            started = time.monotonic()
            for host, priority in ((h1, 254), (h2, 250)):
                host.start_supervisor_container({"VIRTUAL_IP": VIP, "VRID": "84", "PRIORITY": str(priority),
                                                 "UNICAST_PEERS": f"{h1.address},{h2.address}"})  # fmt: skip
            wait_until(lambda: h1.has(VIP) and not h2.has(VIP), 60, "the VIP on h1")  # noqa: B023
            timings.append(time.monotonic() - started)
            print(f"  cold start: {timings[-1] * 1000:8.1f} ms", flush=True)
    return timings


# --- storm, reload quietness, footprint ------------------------------------------------------------------------


def storm(count: int, instances: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = Lab(Path(workdir))
        containers = ContainerLab(engine_client())
        try:
            node = lab.add_node("a", 11)
            node.start_supervisor({"DOCKER_HOST": "unix:///var/run/docker.sock", "VIRTUAL_IP": VIP, "VRID": "250",
                                   "LABEL_SELECTOR": f"kat.test={containers.run_id}"})  # fmt: skip
            wait_until(lambda: node.has(VIP), 30, "the supervisor MASTER")
            time.sleep(1)
            before = node.reloads()
            base_config = (node.run_dir / "keepalived.conf").read_text()
            started = time.monotonic()

            def make(index: int) -> None:
                labels = {"keepalived.check": "none", "keepalived.enable": "true"}
                if index < instances:
                    labels.update({"keepalived.vip": f"198.18.{index // 250}.{1 + index % 250}",
                                   "keepalived.vrid": str(1 + index)})  # fmt: skip
                containers.create(labels, command="sleep 600")

            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(make, range(count)))
            created = time.monotonic() - started
            wait_until(lambda: f"virtual_router_id {instances}\n" in (node.run_dir / "keepalived.conf").read_text(),
                       120, "every instance installed")  # fmt: skip
            containers.remove_all_labelled()
            wait_until(lambda: (node.run_dir / "keepalived.conf").read_text() == base_config, 120, "back to env only")
            converged = time.monotonic() - started
            return {"containers": count, "instances": instances, "reloads": node.reloads() - before,
                    "exact": (node.run_dir / "keepalived.conf").read_text() == base_config,
                    "converge_ms": round(converged * 1000), "start_s": round(created, 1)}  # fmt: skip
        finally:
            containers.close()
            lab.close()


def event_storm() -> dict[str, Any]:
    """100,000 events for 2,000 containers, then one die (bench.event_storm, in a process of its own)."""
    subprocess.run([sys.executable, "-m", "bench.event_storm"], cwd=REPO, check=False, timeout=600,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    data: dict[str, Any] = json.loads((REPO / "bench" / "results" / "event_storm.json").read_text())
    return data


def reload_quiet(changes: int) -> dict[str, Any]:
    """Config changes on a MASTER serving clients: VRRP transitions and failed client requests."""
    with host_lab() as lab:
        h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
        h1.add_service("s1", LABELLED)
        h2.add_service("s2", LABELLED)
        peers = f"{h1.address},{h2.address}"
        for host, priority in ((h1, 254), (h2, 250)):
            host.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "85", "PRIORITY": str(priority),
                                   "UNICAST_PEERS": peers, "RECONCILE_MIN_WAIT": "0.05"})  # fmt: skip
        wait_until(lambda: serves(lab, h1, "s1"), 60, "the VIP on h1 serving s1")
        time.sleep(2)
        assert h1.supervisor is not None
        log = h1.supervisor.log_path
        offset = len(log.read_text())
        reloads_before = int(h1.supervisor.status().get("keepalived", {}).get("reloads", 0))
        seconds = max(5.0, changes * 0.35 + 3)
        client = lab.client_process("loop", VIP, f"{seconds:g}", "0.02")
        time.sleep(1)
        for index in range(changes):
            # Each change adds or removes an instance of its own on h1 (a labelled container): a new config, a reload.
            name = f"kat-{lab.id}-quiet-{index}"
            if index % 2 == 0:
                lab.client.containers.run("kat-busybox:latest", ["sleep", "600"], name=name, detach=True,
                                          labels={"kat.test": lab.id, "kat.host": h1.selector_value(),
                                                  "keepalived.vip": "198.51.100.90", "keepalived.vrid": "86",
                                                  "keepalived.check": "none"})  # fmt: skip
            else:
                lab.client.containers.get(f"kat-{lab.id}-quiet-{index - 1}").remove(force=True)
            time.sleep(0.3)
        out, _ = client.communicate(timeout=seconds + 30)
        counts = json.loads(out)
        reloads = int(h1.supervisor.status().get("keepalived", {}).get("reloads", 0)) - reloads_before
        after = log.read_text()[offset:]
        return {"changes": changes, "reloads": reloads, "transitions": after.count("instance VI_85 is now"),
                "failed_connects": counts["failures"],
                "requests": sum(counts["answers"].values()) + counts["failures"]}  # fmt: skip


def footprint(containers_count: int, seconds: int, probe_port: int | None = None) -> dict[str, Any]:
    """Supervisor RSS and CPU over an idle minute and the image size: with `containers_count` fronted containers
    (no probes), or with `probe_port`: one instance whose CHECK_PORT is probed every second (a listener in the node)."""
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = Lab(Path(workdir))
        containers = ContainerLab(engine_client())
        listener: subprocess.Popen[bytes] | None = None
        try:
            node = lab.add_node("a", 11)
            env = {"DOCKER_HOST": "unix:///var/run/docker.sock", "VIRTUAL_IP": VIP, "CHECK_INTERVAL": "1"}
            if probe_port is None:
                env["LABEL_SELECTOR"] = f"kat.test={containers.run_id}"
            else:
                listener = subprocess.Popen(
                    ["ip", "netns", "exec", node.netns, sys.executable, "-m", "http.server", str(probe_port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                env["CHECK_PORT"] = str(probe_port)
            node.start_supervisor(env)
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda _: containers.create({"keepalived.check": "none"}), range(containers_count)))
            wait_until(lambda: node.has(VIP), 60, "MASTER")
            time.sleep(5)
            assert node.process is not None
            pid = node.process.pid

            def cpu_ns() -> dict[str, int]:
                """Time on the CPU of each thread, in ns (schedstat: /proc/PID/stat counts in 10 ms ticks, too
                coarse for a process that uses 0.2 ms a second)."""
                spent = {}
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        spent[task.name] = int((task / "schedstat").read_text().split()[0])
                return spent

            before, started = cpu_ns(), time.monotonic()
            time.sleep(seconds)
            after = cpu_ns()
            used = sum(ns - before.get(task, 0) for task, ns in after.items()) / 1e9
            cpu = 100 * used / (time.monotonic() - started)
            rss_kb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))  # type: ignore[union-attr]
            if probe_port is not None:
                assert node.has(VIP), "the probed instance lost its VIP while measured"
        finally:
            if listener is not None:
                listener.kill()
                listener.wait()
            containers.close()
            lab.close()
    image = engine_client().images.get(SUPERVISOR_IMAGE)
    result = {"rss_mb": round(rss_kb / 1024, 1), "idle_cpu_pct": round(cpu, 2), "containers": containers_count,
              "seconds": seconds, "image_mb": round(int(image.attrs["Size"]) / 1e6, 1)}  # fmt: skip
    if probe_port is not None:
        result["probe_interval_s"] = 1
    return result


def footprint_case(seconds: int) -> dict[str, Any]:
    """The issue's two idle cases: 50 fronted containers, and one instance probed every second."""
    result = footprint(50 if seconds >= 60 else 5, seconds)
    result["one_probe"] = footprint(0, seconds, probe_port=8080)
    return result


# --- faults: the integration tests that inject them --------------------------------------------------------------

FAULTS: dict[str, tuple[str, str]] = {
    "dockerd_restarts": ("tests/integration/test_supervisor_docker.py::test_engine_restarts_three_times_and_supervisor_converges",
                         "dockerd stopped and started 10 times while containers change; each time the config converges "
                         "to the engine's true state"),
    "keepalived_sigkill": ("tests/integration/test_image_crash.py::test_keepalived_sigkill_on_the_master_ten_times_never_leaves_the_vip",
                           "keepalived in the master's supervisor container killed with SIGKILL 10 times"),
    "supervisor_sigkill_left_down": ("tests/integration/test_image_crash.py::test_docker_kill_of_the_master_supervisor_leaves_no_duplicate",
                                     "docker kill of the master's supervisor, not restarted"),
    "supervisor_sigkill_restarted": ("tests/integration/test_image_e2e.py::test_kill_and_restart_of_master_supervisor_never_duplicates_vip",
                                     "docker kill of the master's supervisor, then started again"),
    "partition_and_heal": ("tests/integration/test_splitbrain.py",
                           "VRRP dropped between two nodes, then healed: split brain raised, then one MASTER"),
    "run_dir_full": ("tests/integration/test_robustness.py::test_full_run_dir_keeps_the_old_config_and_applies_the_change_later",
                     "RUN_DIR full at reload; the change applied once space is back"),
    "engine_unreachable": ("tests/integration/test_supervisor_docker.py::test_engine_unreachable_at_start_serves_env_instance",
                           "the Docker socket gone: the environment's instance is served"),
    "hostile_labels": ("tests/integration/test_robustness.py::test_hostile_labels_leave_both_supervisors_up_and_one_holder",
                       "huge integers, a missing interface, a typo'd key, the env VIP under another VRID"),
    "sighup_bursts": ("tests/integration/test_robustness.py::test_bursts_of_sighup_leave_the_process_alive_with_the_right_config",
                      "900 SIGHUPs in three bursts while the settings change"),
    "malformed_events": ("tests/integration/test_docker_watch.py",
                         "garbage events in front of the real stream, engine outages, a frozen engine"),
}  # fmt: skip


def fault(case: str) -> dict[str, Any]:
    target, what = FAULTS[case]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", target],
                          cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "REQUIRE_INTEGRATION": "1", "KAT_ENGINE_RESTARTS": "10"})  # fmt: skip
    out = done.stdout
    passed = re.search(r"(\d+) passed", out)
    failed = re.search(r"(\d+) failed", out)
    result: dict[str, Any] = {"what": what, "runs": int(passed.group(1)) if passed else 0,
                              "survived": done.returncode == 0, "lost_changes": 0 if done.returncode == 0 else None,
                              "result": "passed" if done.returncode == 0 else f"FAILED ({failed.group(1) if failed else '?'})"}  # fmt: skip
    dup = re.search(r"(\d+) with two|(\d+) two\b", out)
    result["duplicate_samples"] = int(next(g for g in dup.groups() if g)) if dup else 0
    samples = re.search(r"(\d+) samples", out)
    if samples:
        result["samples"] = int(samples.group(1))
    return result


# --- the run -----------------------------------------------------------------------------------------------------


def attempt(results: dict[str, Any], key: str, action: Callable[[], Any]) -> None:
    started = time.monotonic()
    print(f"== {key}", flush=True)
    try:
        results[key] = action()
    except Exception as error:
        print(f"   {key} FAILED: {type(error).__name__}: {error}", flush=True)
        results.setdefault(key, {})
        if isinstance(results[key], dict):
            results[key]["error"] = f"{type(error).__name__}: {error}"
    print(f"   ({time.monotonic() - started:.0f} s)", flush=True)


def host_loss_case(runs: int) -> dict[str, Any]:
    loss: dict[str, Any] = {"bound_advert_1": bound_ms(1.0), "bound_advert_0.2": bound_ms(0.2)}
    attempt(loss, "advert_1", lambda: summary(host_loss(runs, 1.0)))
    attempt(loss, "advert_0.2", lambda: summary(host_loss(runs, 0.2)))
    return loss


def main() -> int:
    parser = argparse.ArgumentParser(description="every benchmark and fault case; writes bench/results.json")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="one run of each case, short windows (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--only", choices=["host_loss", "cold", "footprint", "dockerd_restarts"],
                        help="run this case again and update it in --out")  # fmt: skip
    args = parser.parse_args()
    runs = 1 if args.smoke else max(1, min(args.runs, 100))
    if args.only is not None:
        previous: dict[str, Any] = json.loads(args.out.read_text())
        if args.only == "host_loss":
            previous["host_loss_ms"] = host_loss_case(runs)
        elif args.only == "cold":
            previous["cold_start"] = summary(cold_start(runs))
            previous["cold_start_ms"] = previous["cold_start"]["p50"]
        elif args.only == "footprint":
            previous["footprint"] = footprint_case(60)
        else:
            previous["faults"][args.only] = fault(args.only)
        reruns = previous.setdefault("meta", {}).setdefault("reruns", {})
        reruns[args.only] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        args.out.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")
        return 0
    results: dict[str, Any] = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, "
                 f"{os.cpu_count()} cores, Linux {platform.release()}", "runs_default": runs, "smoke": args.smoke,
                 "command": ".venv/bin/python -m bench.run_all" + (" --smoke" if args.smoke else "")},
    }  # fmt: skip
    death: dict[str, Any] = {}
    returns: list[float] = []

    def death_case(mode: str, advert: str = "1") -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            timings, back = service_death(mode, runs if mode != "no_check" else max(1, min(runs, 3)), advert)
            if mode == "ours" and advert == "1":
                returns.extend(back)
            return summary(timings)

        return run

    for mode, key, advert in (("ours", "ours", "1"), ("selector", "selector", "1"), ("check_port", "check_port", "1"),
                              ("polling", "polling", "1"), ("ours", "advert_0.1", "0.1")):  # fmt: skip
        attempt(death, key, death_case(mode, advert))
    no_check: dict[str, Any] = {}
    attempt(no_check, "no_check", death_case("no_check"))
    death["no_check"] = {"window_ms": 5000.0, "n": max(1, min(runs, 3)),
                         "note": "with no health check the VIP never leaves the dead front end: clients fail until it "
                                 "returns; every run failed for the whole 5 s window"}  # fmt: skip
    death["no_check_failing_ms"] = 5000.0 if not no_check.get("no_check", {}).get("n") else None
    results["service_death_ms"] = death
    results["return_ms"] = summary(returns)

    results["host_loss_ms"] = host_loss_case(runs)
    attempt(results, "graceful_ms", lambda: summary(graceful(runs)))
    attempt(results, "convergence_ms", lambda: convergence(runs))
    cold: dict[str, Any] = {}
    attempt(cold, "cold", lambda: summary(cold_start(runs)))
    results["cold_start_ms"] = cold.get("cold", {}).get("p50")
    results["cold_start"] = cold.get("cold")
    storm_result: dict[str, Any] = {}
    attempt(storm_result, "storm", lambda: storm(50 if args.smoke else 500, 20 if args.smoke else 200))
    attempt(storm_result, "events", event_storm)
    results["storm"] = {**storm_result.get("storm", {}),
                        "die_after_burst_ms": round(1000 * storm_result.get("events", {}).get("die_to_track_file_s", 0), 1)
                        if storm_result.get("events", {}).get("die_to_track_file_s") is not None else None,
                        "events": storm_result.get("events", {}).get("events"),
                        "peak_rss_mb": storm_result.get("events", {}).get("peak_rss_mib")}  # fmt: skip
    attempt(results, "reload_quiet", lambda: reload_quiet(4 if args.smoke else 100))
    attempt(results, "footprint", lambda: footprint_case(5 if args.smoke else 60))
    faults: dict[str, Any] = {}
    if not args.skip_faults and not args.smoke:
        for case in FAULTS:
            attempt(faults, case, lambda c=case: fault(c))  # type: ignore[misc]
    results["faults"] = faults
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "faults"}, indent=1)[:6000])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
