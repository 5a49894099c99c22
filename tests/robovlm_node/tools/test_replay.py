import subprocess
import sys

import numpy as np
import pytest
import torch

from robovlm.cli import main
from robovlm.data.bag import read_bag
from robovlm.data.hdf5 import write_hdf5_episode
from robovlm.model.policy import RoboVLM
from robovlm_node.tools.replay import ReplayError, replay
from tests.conftest import tiny_config

FRAMES, DT = 30, 0.1


pytestmark = pytest.mark.dds


@pytest.fixture(scope="module")
def bag_and_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    rng = np.random.default_rng(0)
    write_hdf5_episode(
        d / "ep.h5",
        images_rgb=rng.integers(0, 255, (FRAMES, 48, 64, 3), dtype=np.uint8),
        actions=np.stack([np.full(FRAMES, 0.2), np.full(FRAMES, -0.1), np.zeros(FRAMES)], 1),
        event_types=["start_action"] * FRAMES,
        episode_name="1box_vert_left_003",
        frame_dt=DT,
        joint_positions=np.zeros((FRAMES, 6)),
        joint_names=[f"joint_{i}" for i in range(6)],
    )
    assert main(["make-bag", str(d / "ep.h5"), str(d / "bag")]) == 0
    torch.manual_seed(0)
    RoboVLM(tiny_config()).save_pretrained(d / "ckpt")
    return d


def test_replay_reproduces_the_expected_command_count_and_records_them(bag_and_model):
    d = bag_and_model
    report = replay(d / "bag", d / "ckpt", out=d / "out")
    duration = (FRAMES - 1) * DT
    assert report.duration_s == pytest.approx(duration, abs=0.3)
    expected = 20.0 * duration  # control_rate_hz default 20
    assert 0.7 * expected <= report.control_rate_hz * report.duration_s <= 1.3 * expected
    assert report.commands >= 0.7 * expected
    assert set(report.mae) == {"linear.x", "linear.y"} and report.mae_samples > 0.5 * expected
    assert report.latency_p50_ms > 0 and report.inference_rate_hz > 0
    out = read_bag(d / "out")
    cmds = [m for m in out if m.topic == "/cmd_vel"]
    assert len(cmds) == report.commands
    assert any(m.topic == "/diagnostics" for m in out)
    text = report.format()
    assert "commands published" in text and "MAE vs recorded cmd_vel" in text
    assert "instruction: 'go around the box on the left and stop at the cup' (topic /instruction)" in text


def test_replay_a_bag_without_an_instruction_topic(bag_and_model, capsys):
    d = bag_and_model
    assert main(["make-bag", str(d / "ep.h5"), str(d / "silent"), "--no-instruction-topic"]) == 0
    assert main(["replay", str(d / "silent"), "--model", str(d / "ckpt"), "--instruction", "go to the cup"]) == 0
    assert "instruction: 'go to the cup' (--instruction)" in capsys.readouterr().out
    # the scenario id in the bag name is the last source: models/instructions.json
    (d / "silent").rename(d / "1box_vert_left_silent")
    assert main(["replay", str(d / "1box_vert_left_silent"), "--model", str(d / "ckpt"), "--rate", "4"]) == 0
    assert "(models/instructions.json (1box_vert_left))" in capsys.readouterr().out


def test_replay_cli_and_its_errors(bag_and_model, tmp_path):
    d = bag_and_model
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robovlm.cli",
            "replay",
            str(d / "bag"),
            "--model",
            str(d / "ckpt"),
            "--rate",
            "2.0",
            "-p",
            "chunk_mode:=latest",
            "-p",
            "max_velocity:=[0.2]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "deprecated" not in proc.stderr  # rcl never sees the CLI's own arguments (-p a:=b looks like a remap)
    assert "achieved control rate: 2" in out or "achieved control rate: 1" in out  # 20 Hz of bag time at 2x
    assert "over 2.9 s of bag time" in out
    assert main(["replay", str(d / "bag"), "--model", str(tmp_path / "missing")]) == 2
    with pytest.raises(ReplayError, match="rate must be > 0"):
        replay(d / "bag", d / "ckpt", rate=0)
    assert main(["replay", str(tmp_path / "nobag"), "--model", str(d / "ckpt")]) == 2
