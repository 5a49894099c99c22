"""docker/: the files CI can check without a Docker engine (``bash docker/test.sh`` builds and runs the image).

The entrypoint runs here as written, on the project's own environment: it must start the real node with the
parameter file and the caller's overrides, and pass any other command through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import ROOT

DOCKER = ROOT / "docker"


pytestmark = pytest.mark.docker


def _entrypoint(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ROBOVLM_PARAMS": str(ROOT / "config" / "robovlm.yaml"),
    }
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_entrypoint_runs_the_node_with_the_parameter_file_and_overrides():
    proc = _entrypoint(
        "--ros-args", "-p", "autostart:=true", "-p", "model_path:=/nonexistent", "-p", "engine:=tensorrt"
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "parameter 'engine'" in out, out[-2000:]


def test_entrypoint_passes_other_commands_through():
    proc = _entrypoint("robovlm", "--help")
    assert proc.returncode == 0 and "export" in proc.stdout


def test_compose_has_the_four_services_on_the_image():
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"bringup", "replay", "demo", "serve"}
    serve = services["serve"]["command"]
    assert serve[:3] == ["robovlm", "serve", "/model"] and "0.0.0.0" in serve and "--token-file" in serve
    assert any(v.endswith(":/run/secrets/robovlm_token:ro") for v in services["serve"]["volumes"])
    assert services["bringup"]["network_mode"] == "host"
    assert any(v.endswith(":/model:ro") for v in services["bringup"]["volumes"])
    assert any(v.endswith(":/bag:ro") for v in services["replay"]["volumes"])
    for name in ("replay", "demo"):
        assert any(v.endswith(":/work/out") for v in services[name]["volumes"]), name
    for svc in services.values():
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert {"ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"} <= set(svc["environment"])
    assert "driver: nvidia" in (DOCKER / "compose.yaml").read_text()  # the GPU reservation, commented


def test_dockerfile_keeps_build_inputs_out_and_runs_as_a_user():
    text = (DOCKER / "Dockerfile").read_text()
    assert "\nARG BASE_IMAGE=" in text
    assert "FROM ${BASE_IMAGE} AS deps" in text and "FROM deps AS app" in text
    assert "--mount=type=secret,id=pip_ca" in text and "--mount=type=bind,source=docker/wheels" in text
    assert "COPY . " not in text, "the whole context (wheels included) must not be copied into a layer"
    assert "\nUSER robovlm" in text and "ENTRYPOINT" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "out", ".git"} <= set(ignored)
