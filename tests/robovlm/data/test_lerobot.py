"""LeRobotDataset v3.0 reading, on a dataset LeRobot 0.4.4 made itself (``bench/lerobot_check.py make-fixture``):
every frame by timestamp from the shared video files, actions by column name, the state by joint name, tasks as each
episode's instruction; an older version is refused with LeRobot's conversion; a bad mapping names what exists; and a
policy trains on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

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


@pytest.mark.slow
def test_inspect_dataset_proposes_the_mapping_and_a_policy_trains_on_the_dataset(tmp_path, capsys):
    assert main(["inspect-dataset", str(FIXTURE)]) == 0
    said = capsys.readouterr().out
    assert "--feature head=observation.images.front --feature hand=observation.images.wrist" in said
    assert "linear_x (column 0)" in said and TASKS[1] in said
    out = tmp_path / "ckpt"
    argv = ["train", "models/configs/demo.json", "--data", str(FIXTURE), "--out", str(out), "--steps", "2"]
    assert main([*argv, "--batch-size", "4", "--val-fraction", "0", "--allow-no-learning"]) == 0
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_windows_from_hdf5_episodes_and_from_their_lerobot_conversion_are_the_same_but_for_the_codec(tmp_path, capsys):
    from robovlm.configs.model import load_config
    from robovlm.data.dataset import WindowDataset
    from robovlm.sim.collect import collect

    collect(tmp_path / "all", episodes_per_scenario=1, image_size=56)
    (tmp_path / "h5").mkdir()
    for path in sorted((tmp_path / "all").glob("*.h5"))[:3]:
        shutil.copy(path, tmp_path / "h5")
    h5 = load_episodes(tmp_path / "h5", use_state=True, state_dim=2)
    convert = ["convert-bags", str(tmp_path / "h5"), "--format", "lerobot", "--video-codec", "h264", "--out"]
    assert main([*convert, str(tmp_path / "resized"), "--image-size", "32"]) != 0  # HDF5 frames stay as recorded
    assert "drop --image-size" in capsys.readouterr().err and not (tmp_path / "resized").exists()
    assert main([*convert, str(tmp_path / "lr")]) == 0
    lr = load_episodes(tmp_path / "lr", use_state=True, state_dim=2)
    assert [e.scenario for e in lr] == [e.scenario for e in h5]  # so training holds out the same episodes
    cfg = load_config("models/configs/demo.json")
    stats = compute_stats(h5, action_fields=["linear.x", "linear.y"], joint_names=None, state_dim=2)
    a, b = WindowDataset(h5, cfg, stats), WindowDataset(lr, cfg, stats)
    assert len(a) == len(b)
    worst = 0.0
    for i in range(0, len(a), 7):
        x, y = a[i], b[i]
        assert x["instructions"] == y["instructions"]
        for key in ("actions", "action_mask", "states", "hand_valid"):
            assert (x[key] == y[key]).all(), key
        for key in ("head_images", "hand_images"):  # normalized pixels: the codec's error, bounded
            worst = max(worst, float((x[key] - y[key]).abs().mean()))
    assert worst < 0.1, worst


def test_a_rollout_recording_converts_with_who_commanded_each_frame_and_its_outcome(tmp_path):
    import pyarrow.parquet as pq

    from tests.robovlm.data.test_rollout import write

    (tmp_path / "bags").mkdir()
    write(tmp_path / "bags" / "r0", mode="drive", marks=[(5, True), (12, False)], outcome="failure: hit a box")
    argv = ["convert-bags", str(tmp_path / "bags"), "--out", str(tmp_path / "lr"), "--format", "lerobot"]
    assert main([*argv, "--instruction", "go around the box on the left to the cup"]) == 0
    ds = open_dataset(tmp_path / "lr")
    assert ds.fps == 10 and ds.episodes[0]["robovlm/outcome"] == "failure: hit a box"
    rows = pq.read_table(tmp_path / "lr" / "data" / "chunk-000" / "file-000.parquet").to_pylist()
    operator = [r["robovlm.operator"] for r in rows]
    assert sum(operator) == 7 and operator[5:12] == [True] * 7  # the intervention's frames, on the 10 Hz grid
    assert {r["robovlm.intervention_index"] for r in rows} == {-1, 0}
    assert np.allclose([r["action"][0] for r in rows if r["robovlm.operator"]], -0.1)


def test_image_features_and_cameras_split_over_files_of_their_own_read_back(tmp_path, monkeypatch):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from robovlm.data import lerobot_writer
    from robovlm.data.lerobot_writer import WrittenEpisode, write_dataset

    # a camera stored as PNG images in the data file (dtype "image"), as some Hub datasets do
    img = tmp_path / "img"
    shutil.copytree(FIXTURE, img)
    info = json.loads((img / "meta" / "info.json").read_text())
    info["features"]["observation.images.wrist"]["dtype"] = "image"
    (img / "meta" / "info.json").write_text(json.dumps(info))
    data = img / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data)
    pngs = []
    for k, i in zip(table.column("episode_index").to_pylist(), table.column("frame_index").to_pylist()):
        buf = io.BytesIO()
        Image.fromarray(frame(k, i, 1)).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    pq.write_table(table.append_column("observation.images.wrist", pa.array(pngs)), data)
    eps = load_episodes(img)
    assert np.array_equal(eps[1].hand_images[4], frame(1, 4, 1))  # PNG: lossless

    # every episode in video files of its own: a frame is found by its episode's own file index
    monkeypatch.setattr(lerobot_writer, "VIDEO_FILE_MB", 0)
    write_dataset((WrittenEpisode(e, e.instruction) for e in eps), tmp_path / "split", fps=10, codec="h264")
    ds = open_dataset(tmp_path / "split")
    assert [e["videos/observation.images.head/file_index"] for e in ds.episodes] == [0, 1]
    back = load_episodes(tmp_path / "split")
    assert [len(e) for e in back] == [12, 9]
    assert np.abs(back[1].images.astype(int) - eps[1].images.astype(int)).mean() < 6


def test_an_hdf5_episode_at_a_rate_that_is_no_integer_is_refused():
    from robovlm.data.errors import EpisodeError
    from robovlm.data.hdf5 import Episode
    from robovlm.data.lerobot_writer import fps_of

    ep = Episode(
        path=FIXTURE,
        name="e",
        scenario=None,
        instruction="x",
        images=np.zeros((2, 4, 4, 3), np.uint8),
        actions=np.zeros((2, 3), np.float32),
        event_types=["start_action"] * 2,
        frame_dt=1 / 7.5,
    )
    with pytest.raises(EpisodeError, match="7.500 frames a second"):
        fps_of(ep)
    ep.frame_dt = 1 / 15.0004
    assert fps_of(ep) == 15


def test_cameras_split_into_files_differently_read_from_their_own_files_and_a_time_off_the_grid_is_refused(
    tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    from robovlm.data import lerobot_writer
    from robovlm.data.errors import EpisodeError
    from robovlm.data.lerobot_writer import WrittenEpisode, write_dataset
    from robovlm.data.video import read_frames

    eps = load_episodes(FIXTURE)
    write_dataset((WrittenEpisode(e, e.instruction) for e in eps), tmp_path / "one", fps=10, codec="h264")
    monkeypatch.setattr(lerobot_writer, "VIDEO_FILE_MB", 0)  # an episode per file
    write_dataset((WrittenEpisode(e, e.instruction) for e in eps), tmp_path / "each", fps=10, codec="h264")
    # the head camera from "each" (a file per episode), the hand camera from "one" (both episodes in one file)
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "each", mixed)
    shutil.rmtree(mixed / "videos" / "observation.images.hand")
    shutil.copytree(
        tmp_path / "one" / "videos" / "observation.images.hand", mixed / "videos" / "observation.images.hand"
    )
    table = pq.read_table(mixed / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    one = pq.read_table(tmp_path / "one" / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    for c in [c for c in table.column_names if c.startswith("videos/observation.images.hand/")]:
        table = table.set_column(table.column_names.index(c), c, one.column(c))
    pq.write_table(table, mixed / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    ds = open_dataset(mixed)
    assert [
        (e["videos/observation.images.head/file_index"], e["videos/observation.images.hand/file_index"])
        for e in ds.episodes
    ] == [(0, 0), (1, 0)]
    assert ds.episodes[1]["videos/observation.images.hand/from_timestamp"] == pytest.approx(1.2)
    back = load_episodes(mixed)
    for a, b in zip(eps, back):
        assert np.abs(a.images.astype(int) - b.images.astype(int)).mean() < 6
        assert np.abs(a.hand_images.astype(int) - b.hand_images.astype(int)).mean() < 6

    video = mixed / "videos" / "observation.images.hand" / "chunk-000" / "file-000.mp4"
    with pytest.raises(EpisodeError, match="no frame at 0.1500"):
        read_frames(video, [0.0, 0.15])  # between two frames: outside LeRobot's 1e-4 s tolerance


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    from robovlm.data.lerobot_writer import WrittenEpisode, write_dataset

    eps = load_episodes(FIXTURE, image_size=16)

    def items():
        yield WrittenEpisode(eps[0], "go")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dataset(items(), tmp_path / "out", fps=10, codec="h264")
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary directory


def test_an_av1_file_is_written_without_the_encoders_chatter_and_reads_back(tmp_path):
    """SVT-AV1 prints some 25 lines per file at its default log level: a conversion of 400 episodes buried the
    progress bar and any real error under them."""
    code = (
        "import numpy as np; from pathlib import Path; from robovlm.data.video import VideoWriter\n"
        f"w = VideoWriter(Path({str(tmp_path / 'v.mp4')!r}), fps=10, width=32, height=32)\n"
        "[w.add(np.full((32, 32, 3), 40 * k, np.uint8)) for k in range(4)]; w.close()"
    )
    env = {k: v for k, v in os.environ.items() if k != "SVT_LOG"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "Svt[" not in proc.stderr, proc.stderr[-2000:]
    from robovlm.data.video import read_frames

    frames = read_frames(tmp_path / "v.mp4", [0.0, 0.1, 0.2, 0.3])
    assert frames.shape == (4, 32, 32, 3) and abs(float(frames[3].mean()) - 120) < 8
