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

CATALOG = REPO / "rancher" / "templates" / "keepalived"
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
