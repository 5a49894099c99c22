"""LeRobotDataset v3.0 reading, on a dataset LeRobot 0.4.4 made itself (``bench/lerobot_check.py make-fixture``):
every frame by timestamp from the shared video files, actions by column name, the state by joint name, tasks as each
episode's instruction; an older version is refused with LeRobot's conversion; a bad mapping names what exists; and a
policy trains on it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.lerobot_check import TASKS, frame
from robovlm.cli import main
from robovlm.data.dataset import compute_stats, load_episodes
from robovlm.data.lerobot import DatasetError, FeatureMap, open_dataset
from tests import ROOT

FIXTURE = ROOT / "tests" / "data" / "lerobot" / "made_by_lerobot"


def test_a_dataset_made_by_lerobot_reads_frame_by_frame_with_its_actions_state_and_tasks(tmp_path):
    eps = load_episodes(FIXTURE, use_state=True, state_dim=2, lazy=True, cache_dir=tmp_path)
    assert [len(e) for e in eps] == [12, 9]
    for k, ep in enumerate(eps):
        assert ep.instruction == TASKS[k] and ep.instruction_source.startswith("topic")
        assert ep.joint_names == ["arm_pan", "arm_lift"]
        i = np.arange(len(ep))
        assert np.allclose(ep.actions[:, 0], 0.1 + 0.01 * i) and np.allclose(ep.actions[:, 1], 0.05 * (1 - 2 * k))
        assert np.allclose(ep.joint_positions[:, 0], 0.01 * i)
        for images, camera in ((ep.images, 0), (ep.hand_images, 1)):
            errors = [np.abs(images[j].astype(int) - frame(k, j, camera).astype(int)).mean() for j in range(len(ep))]
            # the frame of each timestamp, not its neighbour (the square moves 3 px a frame): AV1's error is small
            assert max(errors) < 6, errors
            shifted = np.abs(images[1].astype(int) - frame(k, 0, camera).astype(int)).mean()
            assert shifted > max(errors), "a neighbouring frame matches as well: frames are not told apart"


def test_an_older_version_is_refused_with_lerobots_conversion(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old)
    info = json.loads((old / "meta" / "info.json").read_text())
    (old / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="v2.1.*convert_dataset_v21_to_v30"):
        load_episodes(old)


def test_a_bad_mapping_names_what_exists_and_a_missing_action_field_stops_training(tmp_path):
    ds = open_dataset(FIXTURE)
    with pytest.raises(DatasetError, match="did you mean 'observation.images.front'"):
        FeatureMap.build(ds, ["head=observation.images.fron"])
    with pytest.raises(DatasetError, match="columns are"):
        FeatureMap.build(ds, None, "linear.x=speed")
    fmap = FeatureMap.build(ds, ["head=observation.images.wrist"], "linear.x=linear_y")
    assert fmap.keys["head"] == "observation.images.wrist" and fmap.action_columns["linear.x"] == 1
    eps = load_episodes(FIXTURE, image_size=16, action_names="linear.x=linear_y", lazy=True, cache_dir=tmp_path)
    assert np.allclose(eps[1].actions[:, 0], -0.05)
    renamed = tmp_path / "renamed"
    shutil.copytree(FIXTURE, renamed)
    info = json.loads((renamed / "meta" / "info.json").read_text())
    info["features"]["action"]["names"] = ["forward_speed", "vy", "spin"]
    (renamed / "meta" / "info.json").write_text(json.dumps(info))
    eps = load_episodes(renamed, image_size=16)
    with pytest.raises(Exception, match="linear.x.*--action-names"):
        compute_stats(eps, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)


def test_inspect_dataset_proposes_the_mapping_and_a_policy_trains_on_the_dataset(tmp_path, capsys):
    assert main(["inspect-dataset", str(FIXTURE)]) == 0
    said = capsys.readouterr().out
    assert "--feature head=observation.images.front --feature hand=observation.images.wrist" in said
    assert "linear_x (column 0)" in said and TASKS[1] in said
    out = tmp_path / "ckpt"
    argv = ["train", "models/configs/demo.json", "--data", str(FIXTURE), "--out", str(out), "--steps", "2"]
    assert main([*argv, "--batch-size", "4", "--val-fraction", "0", "--allow-no-learning"]) == 0
    assert (out / "model.safetensors").is_file()
