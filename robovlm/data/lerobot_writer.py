"""Writing LeRobotDataset v3.0 (``robovlm convert-bags --format lerobot``, ``robovlm collect-sim --format lerobot``).

The layout is the one ``robovlm.data.lerobot`` reads (LeRobot 0.4's): per-camera video files holding many episodes
(AV1 by default, H.264 as an option), frame rows in parquet, tasks, episodes with per-camera ``from_timestamp`` /
``to_timestamp``, ``stats.json`` with LeRobot's keys (min, max, mean, std, count, q01 ... q99; images per channel in
[0, 1]). Timestamps are frame counts over ``fps``, computed in integers, so they never drift in long files
(huggingface/lerobot#3177). Frames lie on a fixed grid at ``fps``: at each tick the latest sample of every stream (the
pairing training uses for bags); an HDF5 episode keeps its frames when ``1 / frame_dt`` is close to an integer, and
is refused otherwise. Written into a temporary directory beside ``out`` and renamed at the end: a failed write leaves
nothing.

The episodes table names each episode's source (``robovlm/source``: the HDF5 file's or the bag's episode name), from
which the reader takes its scenario, so training holds out the same episodes from a conversion as from the original.
A node's rollout recording converts with two per-frame columns, ``robovlm.operator`` (the operator gave the command)
and ``robovlm.intervention_index`` (-1 outside interventions), and its outcome in the episodes table
(``robovlm/outcome``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import EpisodeError
from .hdf5 import Episode
from .lerobot import CODEBASE_VERSION
from .rollout import RolloutInfo, operator_frames, runs
from .video import VideoWriter, video_info

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
HEAD, HAND = "observation.images.head", "observation.images.hand"
ACTION_NAMES = ("linear_x", "linear_y", "angular_z")
VIDEO_FILE_MB = 200
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


@dataclass
class WrittenEpisode:
    """An episode as it goes in: its frames on the grid, its task, and the rollout columns when it has them."""

    episode: Episode
    task: str
    rollout: RolloutInfo | None = None


def fps_of(ep: Episode) -> int:
    """The integer frame rate of an HDF5 episode; refused when ``1 / frame_dt`` is not close to one."""
    rate = 1.0 / ep.frame_dt
    if abs(rate - round(rate)) > 0.01 * rate:
        raise EpisodeError(
            f"{ep.path}: frame_dt {ep.frame_dt} s is {rate:.3f} frames a second, not an integer rate; give --fps"
        )
    return int(round(rate))


def grid(ep: Episode, fps: int) -> np.ndarray:
    """Frame indices of ``ep`` on a grid at ``fps`` from its first frame: at each tick its latest frame."""
    if ep.frame_times_ns is None:
        if fps != fps_of(ep):
            raise EpisodeError(f"{ep.path}: recorded at {fps_of(ep)} fps, not {fps}; convert at its own rate")
        return np.arange(len(ep))
    t = ep.frame_times_ns - ep.frame_times_ns[0]
    ticks = np.arange(int(t[-1]) * fps // 10**9 + 1, dtype=np.int64) * 10**9 // fps  # integers: no drift
    return np.searchsorted(t, ticks, side="right") - 1


@dataclass
class _Stats:
    """Running values of one feature: everything is kept (the datasets here fit), quantiles exact."""

    values: list[np.ndarray] = field(default_factory=list)

    def add(self, x: np.ndarray) -> None:
        self.values.append(np.asarray(x, np.float64).reshape(len(x), -1))

    def result(self, shape: tuple[int, ...]) -> dict[str, list]:
        v = np.concatenate(self.values)
        out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0)}
        out |= {f"q{int(q * 100):02d}": np.quantile(v, q, axis=0) for q in QUANTILES}
        shaped = {k: np.asarray(a).reshape(shape).tolist() for k, a in out.items()}
        return {**shaped, "count": [len(v)]}


class DatasetWriter:
    def __init__(self, out: Path, *, fps: int, codec: str = "av1", robot_type: str | None = None) -> None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise EpisodeError(f"{out} exists and is not an empty directory; write into a new directory")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.fps, self.codec, self.robot_type = out, fps, codec, robot_type
        self.work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        self.rows: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}
        self.videos: dict[str, VideoWriter] = {}
        self.video_files: dict[str, int] = {}
        self.stats: dict[str, _Stats] = {}
        self.features: dict[str, dict[str, Any]] = {}

    def add(self, item: WrittenEpisode) -> None:
        ep, k = item.episode, len(self.episodes)
        idx = grid(ep, self.fps)
        n, start = len(idx), len(self.rows)
        task = self.tasks.setdefault(item.task, len(self.tasks))
        row: dict[str, Any] = {"episode_index": k, "tasks": [item.task], "length": n, "robovlm/source": ep.name}
        row |= {"data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": start}
        row |= {"dataset_to_index": start + n, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for key, frames in ((HEAD, ep.images), (HAND, ep.hand_images)):
            if frames is None:
                continue
            pictures = np.asarray(frames)[idx]
            writer = self._video(key, pictures.shape)
            first = writer.frames
            for rgb in pictures:
                writer.add(rgb)
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": self.video_files[key]}
            row |= {
                f"videos/{key}/from_timestamp": first / self.fps,
                f"videos/{key}/to_timestamp": (first + n) / self.fps,
            }
            self.stats.setdefault(key, _Stats()).add(pictures.reshape(-1, 3) / 255.0)
        actions = np.asarray(ep.actions, np.float32)[idx]
        self._feature("action", "float32", (3,), list(ACTION_NAMES))
        self.stats.setdefault("action", _Stats()).add(actions)
        state = None
        if ep.joint_positions is not None:
            state = np.asarray(ep.joint_positions, np.float32)[idx]
            self._feature("observation.state", "float32", (state.shape[1],), list(ep.joint_names or []))
            self.stats.setdefault("observation.state", _Stats()).add(state)
        operator = interventions = None
        if item.rollout is not None:
            mask = operator_frames(ep, item.rollout)
            operator = mask[idx]
            interventions = np.full(len(ep), -1, np.int64)
            for j, (a, b) in enumerate(runs(mask)):
                interventions[a:b] = j
            interventions = interventions[idx]
            row["robovlm/outcome"] = ": ".join(x for x in item.rollout.outcome if x) if item.rollout.outcome else ""
            self._feature("robovlm.operator", "bool", (1,), None)
            self._feature("robovlm.intervention_index", "int64", (1,), None)
        for i in range(n):
            r = {"timestamp": np.float32(i / self.fps), "frame_index": i, "episode_index": k, "index": start + i}
            r |= {"task_index": task, "action": actions[i].tolist()}
            if state is not None:
                r["observation.state"] = state[i].tolist()
            if operator is not None and interventions is not None:
                r |= {"robovlm.operator": bool(operator[i]), "robovlm.intervention_index": int(interventions[i])}
            self.rows.append(r)
        for name, values in (("timestamp", np.arange(n) / self.fps), ("frame_index", np.arange(n))):
            self.stats.setdefault(name, _Stats()).add(values)
        self.episodes.append(row)

    def _feature(self, key: str, dtype: str, shape: tuple[int, ...], names: list[str] | None) -> None:
        self.features.setdefault(key, {"dtype": dtype, "shape": list(shape), "names": names})

    def _video(self, key: str, shape: tuple[int, ...]) -> VideoWriter:
        writer = self.videos.get(key)
        if writer is not None and writer.path.stat().st_size > VIDEO_FILE_MB * 1024**2:
            writer.close()  # the next episodes go to a new file: each camera rolls over on its own
            writer = None
            self.video_files[key] += 1
        if writer is None:
            self.video_files.setdefault(key, 0)
            path = self.work / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=self.video_files[key])
            writer = self.videos[key] = VideoWriter(
                path, fps=self.fps, width=shape[2], height=shape[1], codec=self.codec
            )
            self._feature(key, "video", (shape[1], shape[2], 3), ["height", "width", "channels"])
        return writer

    def finish(self) -> Path:
        """Write the tables and metadata and move the dataset into place."""
        if not self.episodes:
            raise EpisodeError("no episodes to write")
        for writer in self.videos.values():
            writer.close()
        for key in self.videos:
            self.features[key]["info"] = video_info(
                self.work / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            )
        for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            self.features[name] = {"dtype": "float32" if name == "timestamp" else "int64", "shape": [1], "names": None}
        self._write_parquet(self.work / DATA_PATH.format(chunk_index=0, file_index=0), self.rows)
        self._write_parquet(self.work / "meta/episodes/chunk-000/file-000.parquet", self.episodes)
        tasks = pa.table({"task_index": list(self.tasks.values()), "__index_level_0__": list(self.tasks)})
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": None,
                    "field_name": "__index_level_0__",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
        }
        pq.write_table(
            tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}),
            self.work / "meta/tasks.parquet",
        )
        shapes = {k: (3, 1, 1) if f["dtype"] == "video" else tuple(f["shape"]) for k, f in self.features.items()}
        stats = {k: s.result(shapes[k]) for k, s in self.stats.items()}
        (self.work / "meta/stats.json").write_text(json.dumps(stats, indent=2))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": len(self.rows),
            "total_tasks": len(self.tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.videos else None,
            "features": self.features,
        }
        (self.work / "meta/info.json").write_text(json.dumps(info, indent=4))
        if self.out.exists():
            self.out.rmdir()
        self.work.rename(self.out)
        return self.out

    def _write_parquet(self, path: Path, rows: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows)
        fixed = []
        for name in table.column_names:  # LeRobot's vectors are fixed-size lists of float32
            col = table.column(name)
            f = self.features.get(name)
            if f is not None and f["dtype"] == "float32" and f["shape"] != [1]:
                col = col.cast(pa.list_(pa.float32(), f["shape"][0]))
            elif name == "timestamp":
                col = col.cast(pa.float32())
            fixed.append(col)
        pq.write_table(pa.table(fixed, names=table.column_names), path)

    def abort(self) -> None:
        for writer in self.videos.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001 (removed below either way)
                pass
        shutil.rmtree(self.work, ignore_errors=True)


def write_dataset(
    items: Iterable[WrittenEpisode], out: str | Path, *, fps: int, codec: str = "av1", robot_type: str | None = None
) -> Path:
    """Write every episode of ``items`` (one at a time: memory holds one episode's frames) as a v3.0 dataset."""
    writer = DatasetWriter(Path(out), fps=fps, codec=codec, robot_type=robot_type)
    try:
        for item in items:
            writer.add(item)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
