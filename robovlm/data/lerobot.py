"""Reading LeRobotDataset v3.0 directories (the format robot teams share on the Hub), with pyarrow and PyAV only.

The layout, as LeRobot 0.4 writes it (``src/lerobot/datasets/utils.py``): ``meta/info.json`` (``codebase_version``,
``fps``, ``features``, path templates), ``meta/tasks.parquet`` (the task string as the index, ``task_index``),
``meta/episodes/chunk-XXX/file-XXX.parquet`` (per episode: ``tasks``, ``length``, ``data/chunk_index`` and
``data/file_index``, ``dataset_from_index``/``dataset_to_index``, and per camera ``videos/KEY/chunk_index``,
``file_index``, ``from_timestamp``, ``to_timestamp``), ``data/chunk-XXX/file-XXX.parquet`` (one row per frame:
``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index`` and the features), and
``videos/KEY/chunk-XXX/file-XXX.mp4`` holding many episodes. A camera frame is the video's frame at
``from_timestamp + timestamp`` (within ``video.TOLERANCE_S``); each camera is split into files on its own, so its
file comes from the episode's own per-camera columns, never from the data file's index.

Features map to our roles by key (``FeatureMap``: ``--feature ROLE=KEY``, defaults from common key names, which
``robovlm inspect-dataset`` proposes), the ``action`` feature's named columns to Twist fields by name
(``--action-names linear.x=NAME,...``, defaults for common names; a field the dataset lacks reads as NaN, so training
on it fails naming it), ``observation.state`` by joint name. Each episode's task is the recording's own instruction,
first in the usual precedence (``robovlm.data.instructions``).
"""

from __future__ import annotations

import difflib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..errors import UserError
from ..utils.images import resize_rgb
from .hdf5 import SCENARIO_RE, Episode
from .recording import Timeline

CODEBASE_VERSION = "v3.0"
ROLES = ("head", "hand", "state", "action")
TWIST_FIELDS = ("linear.x", "linear.y", "angular.z")
ACTION_ALIASES = {
    "linear.x": ("linear.x", "linear_x", "vx", "v_x", "x_vel", "vel_x", "base_vx", "forward", "x"),
    "linear.y": ("linear.y", "linear_y", "vy", "v_y", "y_vel", "vel_y", "base_vy", "lateral", "y"),
    "angular.z": ("angular.z", "angular_z", "wz", "w_z", "omega", "yaw_rate", "vyaw", "vtheta", "theta_vel", "yaw"),
}
"""Action column names taken for each Twist field, in order, compared without case."""
_HAND = ("wrist", "hand", "gripper", "eef", "arm")
_HEAD = ("front", "head", "high", "top", "main", "cam", "image")


class DatasetError(UserError, ValueError):
    """A LeRobotDataset cannot be read as asked; the message names the file, key or flag."""


def is_lerobot_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "meta" / "info.json").is_file()


@dataclass
class LeRobotDataset:
    """A dataset's metadata: what ``open_dataset`` reads before any frame."""

    root: Path
    info: dict[str, Any]
    tasks: dict[int, str]
    episodes: list[dict[str, Any]]

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return dict(self.info["features"])

    def cameras(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]


def open_dataset(root: str | Path) -> LeRobotDataset:
    """The metadata of a v3.0 dataset; an older version is refused, naming how LeRobot converts it."""
    root = Path(root)
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{root}: cannot read meta/info.json: {exc}") from exc
    version = str(info.get("codebase_version", "?"))
    if version != CODEBASE_VERSION:
        raise DatasetError(
            f"{root}: LeRobotDataset {version}; this reads {CODEBASE_VERSION}. LeRobot 0.4 converts a v2.1 dataset: "
            "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=OWNER/NAME (in LeRobot's own "
            "environment), then read the converted copy"
        )
    tasks_table = pq.read_table(root / "meta" / "tasks.parquet").to_pylist()
    text_key = next((k for k in ("__index_level_0__", "task") if tasks_table and k in tasks_table[0]), None)
    if text_key is None and tasks_table:
        raise DatasetError(f"{root}: meta/tasks.parquet has no task strings (columns {sorted(tasks_table[0])})")
    tasks = {int(r["task_index"]): str(r[text_key]) for r in tasks_table} if text_key else {}
    episodes: list[dict[str, Any]] = []
    for f in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        cols = [c for c in pq.read_schema(f).names if not c.startswith("stats/")]  # stats: not needed to read
        episodes += pq.read_table(f, columns=cols).to_pylist()
    if not episodes:
        raise DatasetError(f"{root}: no episodes in meta/episodes/")
    episodes.sort(key=lambda e: int(e["episode_index"]))
    return LeRobotDataset(root=root, info=info, tasks=tasks, episodes=episodes)


@dataclass
class FeatureMap:
    """Role -> feature key, and Twist field -> action column index."""

    keys: dict[str, str] = field(default_factory=dict)
    action_columns: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls, ds: LeRobotDataset, features: list[str] | None = None, action_names: str | None = None
    ) -> FeatureMap:
        """From ``--feature ROLE=KEY`` items and ``--action-names FIELD=NAME,...``; the rest proposed."""
        keys = propose_features(ds)
        for item in features or []:
            role, sep, key = (x.strip() for x in item.partition("="))
            if not sep or role not in ROLES:
                raise DatasetError(f"--feature takes ROLE=KEY (roles: {', '.join(ROLES)}), got {item!r}")
            if key not in ds.features:
                close = difflib.get_close_matches(key, list(ds.features), n=1)
                raise DatasetError(
                    f"--feature {item}: no feature {key!r} in {ds.root}"
                    + (f"; did you mean {close[0]!r}?" if close else f" (features: {', '.join(ds.features)})")
                )
            keys[role] = key
        if "head" not in keys:
            raise DatasetError(f"{ds.root}: no camera feature for the head camera; name it with --feature head=KEY")
        if "action" not in keys:
            raise DatasetError(f"{ds.root}: no action feature; name it with --feature action=KEY")
        names = [str(n) for n in (ds.features[keys["action"]].get("names") or [])]
        if isinstance(ds.features[keys["action"]].get("names"), dict):  # LeRobot's older {"motors": [...]} form
            names = [str(n) for v in ds.features[keys["action"]]["names"].values() for n in v]
        columns = propose_action_columns(names)
        for item in [x for x in (action_names or "").split(",") if x.strip()]:
            twist, sep, name = (x.strip() for x in item.partition("="))
            if not sep or twist not in TWIST_FIELDS:
                raise DatasetError(f"--action-names takes FIELD=NAME with FIELD in {TWIST_FIELDS}, got {item!r}")
            if name not in names:
                raise DatasetError(f"--action-names {item}: the action's columns are {names}, not {name!r}")
            columns[twist] = names.index(name)
        return cls(keys=keys, action_columns=columns)


def propose_features(ds: LeRobotDataset) -> dict[str, str]:
    """Role -> key guessed from the names: a camera with wrist/hand/gripper words is the hand, another the head
    (front/head/top first); ``observation.state`` the state; ``action`` the action."""
    out: dict[str, str] = {}
    cams = ds.cameras()
    hand = [k for k in cams if any(w in k.lower() for w in _HAND)]
    head = [k for k in cams if k not in hand]
    if head:
        out["head"] = min(head, key=lambda k: min((i for i, w in enumerate(_HEAD) if w in k.lower()), default=99))
    if hand:
        out["hand"] = hand[0]
    if "observation.state" in ds.features:
        out["state"] = "observation.state"
    if "action" in ds.features:
        out["action"] = "action"
    return out


def propose_action_columns(names: list[str]) -> dict[str, int]:
    """Twist field -> index of the action column whose name is one of its ``ACTION_ALIASES``."""
    lowered = [n.lower() for n in names]
    out: dict[str, int] = {}
    for twist, aliases in ACTION_ALIASES.items():
        for alias in aliases:
            if alias in lowered and lowered.index(alias) not in out.values():
                out[twist] = lowered.index(alias)
                break
    return out


class EpisodeReader:
    """Reads episodes of one dataset; a data file's table is read once and kept while its episodes are read."""

    def __init__(self, ds: LeRobotDataset, fmap: FeatureMap) -> None:
        self.ds, self.fmap = ds, fmap
        self._table: tuple[Path, dict[str, Any]] | None = None

    def _rows(self, ep: dict[str, Any]) -> dict[str, np.ndarray | list]:
        path = self.ds.root / self.ds.info["data_path"].format(
            chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"])
        )
        if self._table is None or self._table[0] != path:
            wanted = {"timestamp", "episode_index", "index", *(self.fmap.keys.get(r) for r in ("state", "action"))}
            wanted |= {k for k in (self.fmap.keys.get("head"), self.fmap.keys.get("hand")) if k}
            table = pq.read_table(path)
            self._table = (path, {c: table.column(c).to_pylist() for c in table.column_names if c in wanted})
        cols = self._table[1]
        idx = np.asarray(cols["index"])
        sel = np.flatnonzero((idx >= int(ep["dataset_from_index"])) & (idx < int(ep["dataset_to_index"])))
        return {c: [v[i] for i in sel] for c, v in cols.items()}

    def _camera(self, ep: dict[str, Any], key: str, rows: dict, image_size: int | None) -> np.ndarray:
        feature = self.ds.features[key]
        if feature["dtype"] == "image":  # PNG bytes in the data file
            from PIL import Image

            frames = [np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in rows[key]]
            return np.stack([resize_rgb(f, image_size) if image_size else f for f in frames])
        from .video import read_frames  # PyAV only where a dataset's video is read

        video = self.ds.root / self.ds.info["video_path"].format(
            video_key=key,
            chunk_index=int(ep[f"videos/{key}/chunk_index"]),
            file_index=int(ep[f"videos/{key}/file_index"]),
        )
        start = float(ep[f"videos/{key}/from_timestamp"])
        return read_frames(video, [start + float(t) for t in rows["timestamp"]], size=image_size)

    def read(self, k: int, *, image_size: int | None, use_hand: bool, use_state: bool) -> tuple[Episode, Timeline]:
        """Episode ``k`` (in episode order) and a timeline holding its task as the recording's instruction."""
        ep = self.ds.episodes[k]
        rows = self._rows(ep)
        keys = self.fmap.keys
        raw = np.asarray(rows[keys["action"]], np.float32)
        actions = np.full((len(raw), 3), np.nan, np.float32)
        for twist, col in self.fmap.action_columns.items():
            actions[:, TWIST_FIELDS.index(twist)] = raw[:, col]
        joints = names = None
        if use_state and "state" in keys:
            joints = np.asarray(rows[keys["state"]], np.float32)
            names = [str(n) for n in (self.ds.features[keys["state"]].get("names") or [])] or None
        name = f"{self.ds.root.name}#{int(ep['episode_index'])}"
        scenario = SCENARIO_RE.search(str(ep.get("robovlm/source") or ""))  # our conversions name their source
        task_texts = [str(t) for t in (ep.get("tasks") or [])]
        episode = Episode(
            path=self.ds.root,
            name=name,
            scenario=scenario.group(0) if scenario else None,
            instruction=None,
            images=self._camera(ep, keys["head"], rows, image_size),
            actions=actions,
            event_types=["start_action"] * len(raw),
            frame_dt=1.0 / self.ds.fps,
            joint_positions=joints,
            joint_names=names,
            hand_images=self._camera(ep, keys["hand"], rows, image_size) if use_hand and "hand" in keys else None,
            frame_times_ns=np.round(np.asarray(rows["timestamp"], np.float64) * 1e9).astype(np.int64),
        )
        timeline = Timeline(
            start_ns=0,
            instructions=[(0, task_texts[0])] if task_texts else [],
            instruction_topic="meta/tasks.parquet" if task_texts else None,
        )
        return episode, timeline
