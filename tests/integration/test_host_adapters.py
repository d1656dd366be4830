"""Host-side adapters against the real kernel: atomic install onto a bind-mounted file, the netlink listener check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from supervisor.adapters.files import is_bind_mount, write_atomically
from tests.conftest import require, require_root_netns
from tests.integration.netlab import Lab, wait_until


def test_install_writes_in_place_onto_a_bind_mounted_file(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to bind-mount a file")
    source, target = tmp_path / "host-keepalived.conf", tmp_path / "keepalived.conf"
    source.write_text("old\n")
    target.write_text("")
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        assert is_bind_mount(target)
        write_atomically(target, "new config\n")
        assert source.read_text() == "new config\n", "the bind-mounted file must be written in place"
        assert is_bind_mount(target), "a rename would have replaced the mount point"
    finally:
        subprocess.run(["umount", str(target)], check=True)
    plain = tmp_path / "plain.conf"
    write_atomically(plain, "x\n")
    assert plain.read_text() == "x\n" and not is_bind_mount(plain)
    assert oct(plain.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left behind"


LISTENER = "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(); time.sleep(30)"
CHECK = "import sys; from supervisor.adapters.health import listener_present as p; print(p(80), p(8080))"


def test_listener_check_matches_the_exact_port(lab: Lab) -> None:
    require_root_netns()
    node = lab.add_node("a", 11)
    server = subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-c", LISTENER])
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

        def check() -> str:
            return subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c", CHECK], env=env,
                                  capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

        wait_until(lambda: check() == "False True", 10, "a listener on 8080 seen, and none on 80")
    finally:
        server.kill()
        server.wait()
