"""Host-side adapters against the real kernel: atomic install onto a bind-mounted file, the netlink listener check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.netns import Lab, wait_until
from supervisor.adapters.files import is_bind_mount, write_atomically
from tests.conftest import require, require_root_netns


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


def test_a_symlink_at_the_install_path_is_replaced_and_its_target_left_untouched(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to bind-mount a file")
    other = tmp_path / "other.conf"
    other.write_text("someone else's file\n")
    install = tmp_path / "keepalived.conf"
    install.symlink_to(other)
    write_atomically(install, "new config\n")
    assert other.read_text() == "someone else's file\n"
    assert not install.is_symlink() and install.read_text() == "new config\n"
    # a symlink to a bind-mounted file is not a mount point itself: the link is replaced, the mount left alone
    source, mounted = tmp_path / "host-file", tmp_path / "mounted"
    source.write_text("host data\n")
    mounted.write_text("")
    subprocess.run(["mount", "--bind", str(source), str(mounted)], check=True)
    try:
        link = tmp_path / "track"
        link.symlink_to(mounted)
        assert is_bind_mount(mounted) and not is_bind_mount(link)
        write_atomically(link, "1\n")
        assert source.read_text() == "host data\n" and mounted.read_text() == "host data\n"
        assert not link.is_symlink() and link.read_text() == "1\n"
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
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
