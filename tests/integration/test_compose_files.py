"""The compose sidecar example and the Rancher catalog entry: valid for docker-compose, and in step with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from lab.engine import REPO
from tests.conftest import require

# Rancher 1.x's catalog service (rancher/catalog-service, manager/traverse.go and parse/path.go) reads a catalog
# repository from its ROOT: <group>/<entry>/config.yml and catalogIcon-*, and <group>/<entry>/<N>/ per version
# (N an integer, or a semver), where the Cattle group is the folder `templates` (`infra-templates`, ... are others).
CATALOG_GROUP = REPO / "templates"
CATALOG = CATALOG_GROUP / "keepalived"
_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
SETTINGS_SOURCE = (REPO / "supervisor" / "core" / "settings.py").read_text()


def compose_config(path: Path) -> dict[str, Any]:
    require(shutil.which("docker-compose") is not None, "needs docker-compose (apt-get install docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(path), "config"], capture_output=True, text=True, timeout=60, cwd=path.parent
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def test_sidecar_example() -> None:
    services = compose_config(REPO / "docker-compose.yml")["services"]
    keepalived = services["keepalived"]
    assert keepalived["network_mode"] == "host"
    assert set(keepalived["cap_add"]) == {"NET_ADMIN", "NET_BROADCAST", "NET_RAW"}
    assert not keepalived.get("privileged")
    assert keepalived["restart"] == "unless-stopped"
    volumes = keepalived["volumes"]
    assert any(str(v).endswith(":/host-run:ro") or (isinstance(v, dict) and v.get("read_only")) for v in volumes)
    assert keepalived["environment"]["DOCKER_HOST"] == "unix:///host-run/docker.sock"
    labels = services["haproxy"]["labels"]
    assert labels["keepalived.port"] == "80"
    for name in keepalived["environment"]:
        assert f'"{name}"' in SETTINGS_SOURCE or name == "DOCKER_HOST", f"{name} is not a setting"


def repository_files() -> list[tuple[str, ...]]:
    """The repository's files (tracked, or new and not ignored) as path parts, as a catalog clone would hold them."""
    require(shutil.which("git") is not None and (REPO / ".git").exists(), "needs a git checkout")
    result = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    names = [n for n in result.stdout.decode().split("\0") if n and (REPO / n).is_file()]
    return [tuple(n.split("/")) for n in names]


def stray_catalog_entries(files: list[tuple[str, ...]]) -> list[str]:
    """Files the catalog service would take for catalog entries outside `templates/`.

    Every top-level folder is a group to it (the part before a "-" names the group; a folder without one is the
    Cattle group, like `templates`): `<top>/<x>/config.yml` (or template.yml) anywhere below, `<top>/<x>/icon*` or
    `catalogIcon*`, `<top>/README.md`-like files at depth two, and any file in `<top>/<x>/<N>/` with N an integer or
    a semver make an entry `<x>`, listed in the catalog with whatever it has.
    """
    stray = []
    for parts in files:
        if len(parts) < 2 or parts[0] == "templates" or parts[0].endswith("-templates"):
            continue
        name = parts[-1]
        entry_file = name in {"config.yml", "template.yml"} or name.startswith(("catalogIcon", "icon"))
        entry_readme = len(parts) == 2 and name.lower().startswith("readme.md")
        version_file = len(parts) >= 3 and (parts[2].isdigit() or _SEMVER.match(parts[2]) is not None)
        if entry_file or entry_readme or version_file:
            stray.append("/".join(parts))
    return stray


def test_catalog_layout_is_what_the_catalog_service_indexes() -> None:
    assert not (REPO / "rancher" / "templates").exists(), (
        "rancher/templates/ is not indexed: the catalog service reads templates/<entry>/ at the repository root"
    )
    assert (CATALOG / "config.yml").is_file(), "templates/keepalived/config.yml is missing"
    assert len(list(CATALOG.glob("catalogIcon-*"))) == 1
    folders = [p for p in CATALOG.iterdir() if p.is_dir()]
    assert all(p.name.isdigit() for p in folders), f"version folders must be named 0, 1, ...: {folders}"
    numbers = sorted(int(p.name) for p in folders)
    assert numbers == list(range(len(numbers))) and numbers, f"version folders must be 0, 1, ... in turn: {numbers}"
    versions = []
    for number in numbers:
        folder = CATALOG / str(number)
        names = {p.name for p in folder.iterdir()}
        assert "rancher-compose.yml" in names, f"{folder} has no rancher-compose.yml"
        assert names & {"docker-compose.yml", "docker-compose.yml.tpl"}, f"{folder} has no docker-compose.yml(.tpl)"
        catalog = yaml.safe_load((folder / "rancher-compose.yml").read_text())[".catalog"]
        assert catalog.get("version"), f"{folder}: a version without .catalog.version is not listed"
        versions.append(str(catalog["version"]))
    assert len(set(versions)) == len(versions), f"two version folders with one version: {versions}"
    config = yaml.safe_load((CATALOG / "config.yml").read_text())
    assert str(config["version"]) == versions[-1], "config.yml's version (the default) should be the newest"
    stray = stray_catalog_entries(repository_files())
    assert not stray, f"the catalog service would list these as catalog entries of their own: {stray}"


def test_stray_catalog_entries_are_recognised() -> None:
    files = [
        ("rancher", "README.md"),
        ("rancher", "templates", "keepalived", "config.yml"),
        ("docs", "thing", "0", "docker-compose.yml"),
        ("docs", "thing", "v1.2.3", "rancher-compose.yml"),
        ("templates", "keepalived", "config.yml"),
        ("templates", "keepalived", "0", "docker-compose.yml.tpl"),
        ("infra-templates", "x", "config.yml"),
        ("supervisor", "core", "templates", "keepalived.conf.j2"),
        ("tests", "unit", "golden", "README.md"),
        ("README.md",),
    ]
    assert stray_catalog_entries(files) == [
        "rancher/README.md",
        "rancher/templates/keepalived/config.yml",
        "docs/thing/0/docker-compose.yml",
        "docs/thing/v1.2.3/rancher-compose.yml",
    ]


def test_catalog_files() -> None:
    config = yaml.safe_load((CATALOG / "config.yml").read_text())
    assert config["name"] and config["version"]
    assert list(CATALOG.glob("catalogIcon-*"))
    catalog = yaml.safe_load((CATALOG / "0" / "rancher-compose.yml").read_text())[".catalog"]
    assert catalog["minimum_rancher_version"].startswith("v1.")
    questions = {q["variable"] for q in catalog["questions"]}
    template = (CATALOG / "0" / "docker-compose.yml.tpl").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", template))
    assert questions == used, f"questions without use: {questions - used}; uses without question: {used - questions}"
    for name in used - {"image", "host_label"}:
        assert f'"{name}"' in SETTINGS_SOURCE, f"{name} is not a setting of supervisor/core/settings.py"
    assert "io.rancher.container.dns: 'true'" in template and "io.rancher.scheduler.global: 'true'" in template
    assert "privileged" not in template


def test_catalog_template_renders_to_a_valid_compose_file(tmp_path: Path) -> None:
    template = (CATALOG / "0" / "docker-compose.yml.tpl").read_text()
    samples = {"image": "docker-keepalived:latest", "VIRTUAL_IP": "198.51.100.100", "host_label": "vip=edge"}
    text = "\n".join(line for line in template.splitlines() if not line.strip().startswith("{{"))
    text = re.sub(r"\$\{(\w+)\}", lambda m: samples.get(m.group(1), "1"), text)
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    service = compose_config(path)["services"]["keepalived"]
    assert service["network_mode"] == "host" and set(service["cap_add"]) == {"NET_ADMIN", "NET_BROADCAST", "NET_RAW"}
