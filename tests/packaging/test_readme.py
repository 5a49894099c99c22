"""The README runs as written: its shell blocks are extracted and the quick commands run, in order, in one shell, in a
scratch directory that sees the checkout (.venv, models, config, tests) as a fresh clone after `make install` does.
The slow ones are listed with the reason and where they are exercised; each must still be in the README."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow

SLOW = {
    "make demo": "the closed-loop demo (minutes); run by hand for each release",
    "make test": "this suite",
    "make bench": "benchmarks (minutes)",
    "robovlm collect-sim out/sim_data": "200 expert episodes; the same command with 2 per scenario is in test_train",
    "robovlm train models/configs/demo.json --data out/sim_data": "35 minutes; seeds in bench/results/training.md, "
    "short runs of the same trainer in tests/robovlm/training/test_train.py, the recipe on 40 episodes in "
    "test_learns.py",
    "robovlm eval-sim --checkpoint out/ckpt": "needs the 25-minute checkpoint; eval-sim runs in test_sim",
    "robovlm_node --ros-args": "runs until Ctrl-C; tests/robovlm_node/test_node_signals.py starts it as a process",
    "robovlm serve models/demo": "runs until Ctrl-C; tests/robovlm/serving/test_serve.py starts it as a process",
    "cd ros2_ws && colcon build": "tests/packaging/test_colcon.py builds the workspace both ways",
    "torchrun --standalone": "two training processes on out/sim_data (200 episodes); "
    "tests/robovlm/training/test_distributed.py runs the same command on 16",
}


def shell_commands(text: str) -> list[str]:
    """Commands of the ```sh blocks, comments dropped, lines continued with a backslash joined, in order."""
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    return cmds


def test_readme_has_the_two_commands_and_no_placeholders():
    text = (ROOT / "README.md").read_text()
    cmds = shell_commands(text)
    assert cmds[:2] == ["make demo", "make test"]
    for cmd in cmds:
        assert not re.search(r"\[[^\]]*\|", cmd), f"bracket syntax in a command: {cmd}"
        assert not re.search(r"\b[A-Z_]{3,}\b", cmd.replace("ROS_", "")), f"placeholder in a command: {cmd}"
    for prefix in SLOW:
        assert any(c.startswith(prefix) for c in cmds), f"README no longer has {prefix!r}: update SLOW"


def test_the_quick_readme_commands_run_as_written(tmp_path):
    cmds = [
        c for c in shell_commands((ROOT / "README.md").read_text()) if not any(c.startswith(prefix) for prefix in SLOW)
    ]
    assert cmds[0] == "source .venv/bin/activate" and any(c.startswith("robovlm replay") for c in cmds)
    for name in (".venv", "models", "config", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = "set -euo pipefail\n" + "\n".join(f"echo '+ {c}'\n{c}" for c in cmds)
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"a README command failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    assert "proposed mapping" in out and "MAE vs recorded cmd_vel" in out and "parameters per module" in out
    assert (tmp_path / "out" / "example_replay" / "metadata.yaml").exists()
