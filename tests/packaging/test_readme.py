"""The README and every guide under docs/ run as written: each page's shell blocks are extracted and its quick
commands run, in order, in one shell, in a scratch directory that sees the checkout (.venv, models, config, tests)
as a fresh clone after `make install` does. A page stands on its own: it makes what its commands read. The slow
commands are listed with the reason and where they are exercised; each must still be on some page."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
GENERATED = {"parameters.md"}  # written by `python -m robovlm_node.parameters`, checked in test_parameters
GUIDES = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in GENERATED)
ACTIVATE = "source .venv/bin/activate"

SLOW = {
    "make demo": "the closed-loop demo (minutes); run by hand for each release",
    "make test": "this suite",
    "make lint": "CI runs it before the suite (.ci/run)",
    "make bench": "benchmarks (minutes)",
    "make eval-robustness": "the closed-loop grid (15 minutes); eval-sim with perturbations runs in tests/robovlm/sim",
    "robovlm collect-sim out/sim_data": "200 expert episodes; the same command with 2 per scenario is in test_train",
    "robovlm train models/configs/demo.json --data out/sim_data": "35 minutes; seeds in bench/results/training.md, "
    "short runs of the same trainer in tests/robovlm/training/test_train.py, the recipe's learning in "
    "test_learns.py",
    "robovlm eval-sim --checkpoint out/ckpt": "needs the 25-minute checkpoint; eval-sim runs in test_sim",
    "robovlm_node --ros-args": "runs until Ctrl-C; tests/robovlm_node/test_node_signals.py starts it as a process",
    "robovlm serve models/demo": "runs until Ctrl-C; tests/robovlm/serving/test_serve.py starts it as a process",
    "cd ros2_ws && colcon build": "tests/packaging/test_colcon.py builds the workspace both ways",
    "robovlm train models/configs/demo.json --data out/lerobot_demo": "minutes of training; test_lerobot.py trains "
    "on a LeRobotDataset",
    "PYTHONUNBUFFERED=1 PYTHONPATH=. python3 -m bench.gpu": "needs a GPU; tests/packaging/test_gpu_bench.py runs "
    "the same code with --device cpu --tiny",
    "make flywheel": "about 1.5 hours (bench/results/flywheel.md)",
    "make flywheel-baseline": "about 1 hour, computed once (bench/results/flywheel.md)",
    "python -m robovlm_node.tools.flywheel --out out/fw": "minutes; tests/robovlm_node/tools/test_flywheel.py runs "
    "the same round (1 demonstration per scenario, 2 rollouts) with fewer steps",
    "robovlm inspect-bag out/fw/": "reads the flywheel round's output; test_node_recording.py runs inspect-bag on a "
    "node's recording",
    "robovlm train models/configs/demo.json --data out/fw/": "trains on the flywheel round's output; test_flywheel.py "
    "trains on demonstrations and recordings",
    "robovlm replay out/fw/": "replays the flywheel round's recordings; test_replay.py replays bags",
    "torchrun --standalone": "two training processes on out/sim_data (200 episodes); "
    "tests/robovlm/training/test_distributed.py runs the same command on 16",
}
# What each page's commands must have printed or written (the page's point, beyond a zero exit code).
EXPECT = {
    "replay.md": (["proposed mapping", "MAE vs recorded cmd_vel"], ["out/example_replay/metadata.yaml"]),
    "model.md": (["parameters per module"], ["out/imported.json"]),
    "engines.md": (["parity against torch", "reached the cup"], ["out/demo_onnx/onnx/parity.json"]),
    "simulator.md": (["reached the cup"], []),
    "node.md": ([], ["out/bringup_ckpt/model.safetensors"]),
    "serving.md": ([], ["out/serve_token"]),
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


def quick(cmds: list[str]) -> list[str]:
    return [c for c in cmds if not any(c.startswith(prefix) for prefix in SLOW)]


def test_readme_has_the_two_commands_and_links_every_guide():
    text = README.read_text()
    cmds = shell_commands(text)
    assert cmds[:2] == ["make demo", "make test"]
    assert len(text.splitlines()) <= 160, "the README is the front page: a task's details go to its guide"
    for page in GUIDES + [ROOT / "docs" / name for name in GENERATED]:
        assert f"(docs/{page.name})" in text, f"the README does not link {page.name}"
    for link in re.findall(r"\]\((?!https?://)([^)#]+)", text):
        assert (ROOT / link).exists(), f"the README links {link}, which does not exist"


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_guide_links_resolve_and_its_commands_start_in_the_environment(page):
    text = page.read_text()
    for link in re.findall(r"\]\((?!https?://)([^)#]+)", text):
        assert (page.parent / link).exists(), f"{page.name} links {link}, which does not exist"
    cmds = shell_commands(text)
    if cmds:
        assert cmds[0] == ACTIVATE, f"{page.name}: its first command must be `{ACTIVATE}`"


def test_no_placeholders_and_every_slow_command_is_on_a_page():
    cmds = [c for page in [README, *GUIDES] for c in shell_commands(page.read_text())]
    for cmd in cmds:
        assert not re.search(r"\[[^\]]*\|", cmd), f"bracket syntax in a command: {cmd}"
        words = re.sub(r"\b[A-Z_]+=\S*", "", cmd).replace("ROS_", "")  # environment assignments are no placeholders
        assert not re.search(r"\b[A-Z_]{3,}\b", words), f"placeholder in a command: {cmd}"
    for prefix in SLOW:
        assert any(c.startswith(prefix) for c in cmds), f"no page has {prefix!r} any more: update SLOW"


@pytest.mark.parametrize(
    "page", [p for p in [README, *GUIDES] if quick(shell_commands(p.read_text()))[1:]], ids=lambda p: p.name
)
def test_the_quick_commands_of_each_page_run_as_written(page, tmp_path):
    cmds = quick(shell_commands(page.read_text()))
    assert cmds[0] == ACTIVATE
    for name in (".venv", "models", "config", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = "set -euo pipefail\n" + "\n".join(f"echo '+ {c}'\n{c}" for c in cmds)
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"a command of {page.name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    printed, written = EXPECT.get(page.name, ([], []))
    for needle in printed:
        assert needle in proc.stdout, f"{page.name}: {needle!r} not printed:\n{proc.stdout[-4000:]}"
    for path in written:
        assert (tmp_path / path).exists(), f"{page.name}: {path} not written"
