"""The ROS 2 way in: `colcon build` of ros2_ws (copy and --symlink-install), the install tree ROS tools expect, and
the installed `robovlm_node` started as `ros2 launch robovlm bringup.launch.py` starts it (installed executable,
installed params file, a second params file with the launch arguments), publishing on cmd_vel.
colcon comes from PyPI (the `dev` extra) and runs with this interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import ROOT
from tests.ros_harness import Harness

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
COLCON = Path(sys.executable).parent / "colcon"


# xdist_group: both builds on one worker (one source tree, one egg-info)
pytestmark = [pytest.mark.colcon, pytest.mark.xdist_group("colcon")]


def _build(base: Path, *extra: str) -> Path:
    cmd = [
        str(COLCON),
        "--log-base",
        str(base / "log"),
        "build",
        "--build-base",
        str(base / "build"),
        "--install-base",
        str(base / "install"),
        *extra,
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=ROOT / "ros2_ws", env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"colcon build {' '.join(extra)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "1 package finished" in proc.stdout, proc.stdout
    return base / "install" / "robovlm"


def _env(prefix: Path) -> dict[str, str]:
    """What `source install/setup.bash` sets for this package (colcon's package.dsv hooks)."""
    site = prefix / "lib" / PY / "site-packages"
    return {
        **os.environ,
        "AMENT_PREFIX_PATH": str(prefix),
        "PYTHONPATH": f"{site}{os.pathsep}" + os.environ.get("PYTHONPATH", ""),
        "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }


@pytest.fixture(scope="module", params=["copy", "symlink"])
def install(request, tmp_path_factory):
    if not COLCON.exists():
        pytest.fail(f"{COLCON} missing: colcon-common-extensions is in the dev extra (make install)")
    base = tmp_path_factory.mktemp(f"colcon_{request.param}")
    return request.param, _build(base, *(["--symlink-install"] if request.param == "symlink" else []))


def test_install_tree_has_what_ros2_tools_look_for(install):
    _, prefix = install
    assert os.access(prefix / "lib" / "robovlm" / "robovlm_node", os.X_OK)  # `ros2 run robovlm robovlm_node`
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "robovlm").exists()
    share = prefix / "share" / "robovlm"
    for rel in (
        "package.xml",
        "launch/bringup.launch.py",
        "launch/replay.launch.py",
        "launch/sim.launch.py",
        "config/robovlm.yaml",
        "models/instructions.json",
        "models/configs/demo.json",
        "models/configs/kosmos2.json",
        "models/backbones/kosmos-2-patch14-224/config.json",
        "models/demo/model.safetensors",
        "models/demo/stats.json",
        "models/demo/config.json",
    ):
        assert (share / rel).exists(), rel


def test_the_installed_package_finds_its_shipped_files(install, tmp_path):
    kind, prefix = install
    code = (
        "import robovlm, robovlm.utils.resources as r; print(robovlm.__file__); "
        "print(r.find_resource('models', 'configs', 'demo.json')); print(r.find_resource('config', 'robovlm.yaml'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(prefix),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    if kind == "copy":  # imported from the install, files from its share directory
        assert out[0].startswith(str(prefix)), out
        assert out[1] == str(prefix / "share" / "robovlm" / "models" / "configs" / "demo.json")
    assert all(Path(p).exists() for p in out[1:])
    proc = subprocess.run(
        [str(prefix / "lib" / "robovlm" / "robovlm"), "info", "--instruction", "go", str(Path(out[1]))],
        cwd=tmp_path,
        env=_env(prefix),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "parameters per module" in proc.stdout, proc.stderr


def test_the_installed_node_started_like_bringup_publishes_cmd_vel(install, tmp_path):
    _, prefix = install
    share = prefix / "share" / "robovlm"
    # launch_ros writes the launch arguments given as a dict to a temporary params file, after the package's own
    launch_params = tmp_path / "launch_params.yaml"
    launch_params.write_text(
        yaml.safe_dump(
            {
                "/**": {
                    "ros__parameters": {
                        "model_path": str(share / "models" / "demo"),
                        "instruction": "go around the box on the left to the cup",
                        "use_sim_time": False,
                        "autostart": True,
                    }
                }
            }
        )
    )
    cmd = [
        str(prefix / "lib" / "robovlm" / "robovlm_node"),
        "--ros-args",
        "-r",
        "__node:=robovlm",
        "--params-file",
        str(share / "config" / "robovlm.yaml"),
        "--params-file",
        str(launch_params),
    ]
    h = Harness({"model_path": "unused"})  # the peer alone: its own RoboVLMNode stays unconfigured and silent
    h.joint_names = ["arm_pan", "arm_lift"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(prefix), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        h.start_feeding()
        moved = h.wait_for(lambda: sum(np.any(c[1] != 0) for c in h.commands()) >= 5, 90)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert moved, f"no motion command from the installed node:\n{out}"
        assert "configured: torch" in out and "active: publishing commands" in out, out
        h.stop_feeding()
        h.wait_for(lambda: False, 0.3)
        assert np.all(h.commands()[-1][1] == 0), "the last command must be zero"
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        h.close()
