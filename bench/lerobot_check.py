"""Our LeRobotDataset v3.0 reader and writer checked against LeRobot's own code (issue 37). Not run by CI.

``make-fixture`` and ``read`` run in a virtual environment of their own with lerobot 0.4.4 and the torch it pins
(lerobot cannot be a dependency of this project: its releases for Python 3.10/3.11 pin torch below 2.11);
``write-ours`` runs in the project's environment::

    python3 -m venv /work/lerobot_venv
    /work/lerobot_venv/bin/pip install "lerobot==0.4.4"
    /work/lerobot_venv/bin/python bench/lerobot_check.py make-fixture tests/data/lerobot/made_by_lerobot
    .venv/bin/python -m bench.lerobot_check write-ours out/lerobot_ours
    /work/lerobot_venv/bin/python bench/lerobot_check.py read out/lerobot_ours --out bench/results/lerobot_check.md

``make-fixture`` writes a small dataset with LeRobot's ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode``
/ ``finalize`` (two cameras as AV1 video, a joint state, a named 3-field action, two tasks): the fixture our reader
must read (``tests/robovlm/data/test_lerobot.py``). ``read`` loads a dataset our writer made with LeRobot's reader
(PyAV video backend: its default, torchcodec, needs a system FFmpeg) and writes what it found: every frame, action,
task and the statistics, beside the values our writer was given (``expected.json`` in the dataset's directory, written
by ``write-ours``: the simulator's expert episodes, one per scenario, through ``robovlm.data.lerobot_writer``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FPS = 10
SIZE = (48, 64)  # (H, W)
TASKS = ("go around the box on the left to the cup", "go around the box on the right to the cup")


def frame(episode: int, i: int, camera: int) -> np.ndarray:
    """A picture that changes every frame (a moving square on a gradient), so a frame mixed up is seen."""
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, np.full((h, w), 60 + 80 * camera)], -1).astype(np.uint8)
    cx = (4 + 3 * i + 7 * episode) % (w - 10)
    img[10:20, cx : cx + 10] = (250, 250, 250) if camera == 0 else (10, 10, 10)
    return img


def make_fixture(out: Path) -> int:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.front": {"dtype": "video", "shape": (*SIZE, 3), "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "video", "shape": (*SIZE, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["arm_pan", "arm_lift"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["linear_x", "linear_y", "angular_z"]},
    }
    ds = LeRobotDataset.create(
        repo_id="robovlm/made_by_lerobot", fps=FPS, features=features, root=out, use_videos=True, video_backend="pyav"
    )
    for episode, length in enumerate((12, 9)):
        for i in range(length):
            ds.add_frame(
                {
                    "observation.images.front": frame(episode, i, 0),
                    "observation.images.wrist": frame(episode, i, 1),
                    "observation.state": np.array([0.01 * i, -0.02 * episode], np.float32),
                    "action": np.array([0.1 + 0.01 * i, 0.05 * (1 - 2 * episode), 0.0], np.float32),
                    "task": TASKS[episode],
                }
            )
        ds.save_episode()
    ds.finalize()
    print(f"wrote {out}: {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames")
    return 0


def read(root: Path, report: Path) -> int:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id="robovlm/ours", root=root, video_backend="pyav")
    expected = json.loads((root / "expected.json").read_text())
    lines = [
        "# Our LeRobotDataset writer read by LeRobot 0.4.4 (`bench/lerobot_check.py read`)",
        "",
        f"Dataset `{root}`: {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames, fps {ds.meta.fps}, "
        f"codebase_version {ds.meta.info['codebase_version']}, features {sorted(ds.meta.features)}.",
        "",
        "| check | result |",
        "| --- | --- |",
    ]
    worst_pixel, action_err, state_err, tasks_ok = 0.0, 0.0, 0.0, True
    cameras = [k for k in ds.meta.video_keys]
    for i in range(len(ds)):
        item = ds[i]
        want = expected["frames"][i]
        action_err = max(action_err, float(np.abs(item["action"].numpy() - np.array(want["action"])).max()))
        if "observation.state" in item:
            state_err = max(state_err, float(np.abs(item["observation.state"].numpy() - np.array(want["state"])).max()))
        tasks_ok &= item["task"] == want["task"]
        for key in cameras:
            got = (item[key].numpy().transpose(1, 2, 0) * 255).round()
            mean = np.array(want["pixel_mean"][key])
            worst_pixel = max(worst_pixel, float(np.abs(got.reshape(-1, 3).mean(0) - mean).max()))
    stats_keys = sorted(ds.meta.stats["action"]) if ds.meta.stats else []
    lines += [
        f"| frames read by `LeRobotDataset.__getitem__` | {len(ds)} of {len(expected['frames'])} |",
        f"| largest action difference | {action_err:.2e} |",
        f"| largest state difference | {state_err:.2e} |",
        f"| every frame's task | {'equal' if tasks_ok else 'DIFFERENT'} |",
        f"| largest difference of a frame's mean colour (0-255, codec error) | {worst_pixel:.2f} |",
        f"| cameras decoded by timestamp | {', '.join(cameras)} |",
        f"| `stats.json` keys of `action` | {', '.join(stats_keys)} |",
        "",
    ]
    ok = len(ds) == len(expected["frames"]) and action_err < 1e-6 and tasks_ok and worst_pixel < 8
    lines.append(f"Verdict: {'LeRobot reads our dataset' if ok else 'MISMATCH'}.")
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


def write_ours(out: Path) -> int:
    """Our writer's dataset of the simulator's expert episodes, and what it was given (``expected.json``)."""
    import tempfile

    from robovlm.data.dataset import load_episodes
    from robovlm.data.lerobot_writer import HAND, HEAD, WrittenEpisode, fps_of, write_dataset
    from robovlm.sim.collect import collect

    with tempfile.TemporaryDirectory() as tmp:
        collect(tmp, episodes_per_scenario=1, image_size=56)
        eps = load_episodes(tmp, use_state=True, state_dim=2)
    write_dataset((WrittenEpisode(e, e.instruction or "") for e in eps), out, fps=fps_of(eps[0]))
    frames = []
    for e in eps:
        for i in range(len(e)):
            means = {
                HEAD: e.images[i].reshape(-1, 3).mean(0).tolist(),
                HAND: e.hand_images[i].reshape(-1, 3).mean(0).tolist(),
            }
            frames.append(
                {
                    "action": e.actions[i].tolist(),
                    "state": e.joint_positions[i].tolist(),
                    "task": e.instruction,
                    "pixel_mean": means,
                }
            )
    (out / "expected.json").write_text(json.dumps({"frames": frames}))
    print(f"wrote {out}: {len(eps)} episodes, {len(frames)} frames")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-fixture")
    m.add_argument("out", type=Path)
    r = sub.add_parser("read")
    r.add_argument("root", type=Path)
    r.add_argument("--out", type=Path, default=Path("bench/results/lerobot_check.md"))
    w = sub.add_parser("write-ours")
    w.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "write-ours":
        return write_ours(a.out)
    return make_fixture(a.out) if a.cmd == "make-fixture" else read(a.root, a.out)


if __name__ == "__main__":
    sys.exit(main())
