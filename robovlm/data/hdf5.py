"""The user's teleoperation episodes: one HDF5 file per episode (format in shared/DESIGN.md).

- ``images`` (N, H, W, 3) uint8 BGR; ``actions`` (N, 3) float32 ``[linear_x, linear_y, angular_z]``;
  ``action_event_types`` (N,) utf-8 strings (``episode_start``, ``start_action``, ``stop_action``);
- attrs ``episode_name`` (holds a scenario id such as ``1box_vert_left``), ``total_duration``, ``num_frames``,
  ``action_chunk_size``.
The user's files carry no text: the instruction comes from ``models/instructions.json`` (scenario id -> sentence)
or the other sources of ``robovlm.data.instructions``.
Optional, when a recorder adds them (the simulator and ``robovlm convert-bags`` do): ``hand_images`` (N, H, W, 3)
uint8 BGR from the gripper camera, ``joint_positions`` (N, J) with attr ``joint_names``; attr ``instruction``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EpisodeError
from .instructions import EpisodeTexts, InstructionSources

SCENARIO_RE = re.compile(r"(?:1|2)box_(?:vert|hori)_(?:left|right)")
ACTION_FIELDS = ("linear.x", "linear.y", "angular.z")


@dataclass
class Episode:
    path: Path
    name: str
    scenario: str | None
    instruction: str | None
    images: np.ndarray | LazyFrames
    """(N, H, W, 3) uint8, RGB (converted from the file's BGR); read on demand when the episode was indexed lazily."""
    actions: np.ndarray
    """(N, 3) float32 [linear_x, linear_y, angular_z]."""
    event_types: list[str]
    frame_dt: float
    """Seconds between frames: total_duration / num_frames."""
    joint_positions: np.ndarray | None = None
    joint_names: list[str] | None = None
    hand_images: np.ndarray | LazyFrames | None = None
    """(N, H, W, 3) uint8 RGB, when the file has a hand camera."""
    alignment: object | None = None
    """For episodes read from a bag: how its streams were aligned (``robovlm.data.bag.Alignment``)."""
    instruction_source: str | None = None
    """Where ``instruction`` came from (``robovlm.data.instructions``)."""
    texts: EpisodeTexts | None = None
    """What the episode's own files say about its instruction (for the error that names every source)."""
    frame_times_ns: np.ndarray | None = None
    """(N,) int64 receive time of each frame, for episodes read from a bag."""

    def __len__(self) -> int:
        return len(self.actions)

    def cut(self, start: int, stop: int, name: str) -> Episode:
        """Frames ``[start, stop)`` as an episode of their own named ``name``: views of in-memory or memory-mapped
        arrays (a recording read from a bag; ``LazyFrames`` would be read here)."""

        def part(a: Any) -> Any:
            return None if a is None else a[start:stop]

        return dataclasses.replace(
            self,
            name=name,
            images=part(self.images),
            actions=self.actions[start:stop],
            event_types=self.event_types[start:stop],
            joint_positions=part(self.joint_positions),
            hand_images=part(self.hand_images),
            frame_times_ns=part(self.frame_times_ns),
        )


def bgr_to_rgb(frames) -> np.ndarray:
    """Frames as stored in the file (BGR, any array-like) -> contiguous RGB uint8."""
    return np.ascontiguousarray(np.asarray(frames)[..., ::-1])


class LazyFrames:
    """Camera frames of an HDF5 episode read on demand: ``frames[a:b]`` reads those rows (RGB, converted from the
    file's BGR) and nothing else, so a dataset of thousands of episodes costs their index, not their images.

    Files are opened once per process (DataLoader workers each open their own; an h5py handle must not cross a
    fork) and at most ``MAX_OPEN`` stay open."""

    MAX_OPEN = 64
    _files: dict[int, dict[Path, object]] = {}

    def __init__(self, path: Path, key: str, shape: tuple[int, ...]) -> None:
        self.path, self.key, self.shape = Path(path), key, tuple(shape)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _dataset(self):
        import h5py

        files = LazyFrames._files.setdefault(os.getpid(), {})
        f = files.pop(self.path, None)
        if f is None:
            if len(files) >= self.MAX_OPEN:
                files.pop(next(iter(files))).close()
            f = h5py.File(self.path, "r")
        files[self.path] = f  # most recently used last
        return f[self.key]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"frame {index} of {len(self)}")
            i = int(index) % len(self)
            return self[i : i + 1][0]
        try:
            return bgr_to_rgb(self._dataset()[index])
        except (OSError, KeyError, ValueError) as exc:  # h5py: a damaged chunk, a file cut short or replaced
            raise EpisodeError(
                f"{self.path}: cannot read frames {_rows(index)} of '{self.key}' ({exc}); the file "
                "is damaged: remove it from the data or record it again"
            ) from exc

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _rows(index) -> str:
    if isinstance(index, slice):
        return f"{index.start or 0}:{'' if index.stop is None else index.stop}"
    return str(index)


def read_hdf5_episode(
    path: str | Path, instructions: InstructionSources | dict[str, str] | None = None, *, lazy: bool = False
) -> Episode:
    """One episode file, checked; ``lazy``: the camera frames stay in the file (``LazyFrames``), everything else
    (actions, joints, events: a few kB) is read now. The instruction is found with ``instructions`` (the user's
    sources, or a bare scenario mapping); None when no source has one."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise EpisodeError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise EpisodeError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        for key in ("images", "actions", "action_event_types"):
            if key not in f:
                raise EpisodeError(f"{path}: missing dataset '{key}' (has {sorted(f.keys())})")
        images, actions = f["images"], f["actions"]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise EpisodeError(f"{path}: 'images' must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if actions.ndim != 2 or actions.shape[1] != 3:
            raise EpisodeError(f"{path}: 'actions' must be (N, 3), got {actions.shape}")
        n = actions.shape[0]
        if n == 0:
            raise EpisodeError(f"{path}: empty episode (0 frames)")
        if images.shape[0] != n or f["action_event_types"].shape[0] != n:
            raise EpisodeError(
                f"{path}: {images.shape[0]} images, {n} actions and {f['action_event_types'].shape[0]} "
                "event types: they must match"
            )
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
        name = str(attrs.get("episode_name", path.stem))
        num_frames = int(attrs.get("num_frames", n))
        if num_frames != n:
            raise EpisodeError(f"{path}: attr num_frames={num_frames} but the datasets hold {n} frames")
        duration = float(attrs.get("total_duration", 0.0))
        if not duration > 0:
            raise EpisodeError(f"{path}: attr total_duration must be > 0, got {attrs.get('total_duration')!r}")
        acts = np.asarray(actions[...], dtype=np.float32)
        if not np.all(np.isfinite(acts)):
            raise EpisodeError(f"{path}: 'actions' holds non-finite values")
        events = [e.decode() if isinstance(e, bytes) else str(e) for e in f["action_event_types"][...]]
        rgb = LazyFrames(path, "images", images.shape) if lazy else bgr_to_rgb(images[...])
        joints, joint_names = None, None
        if "joint_positions" in f:
            joints = np.asarray(f["joint_positions"][...], dtype=np.float32)
            joint_names = [
                j.decode() if isinstance(j, bytes) else str(j)
                for j in f["joint_positions"].attrs.get("joint_names", [f"joint_{i}" for i in range(joints.shape[1])])
            ]
            if joints.shape != (n, len(joint_names)):
                raise EpisodeError(f"{path}: 'joint_positions' must be (N, {len(joint_names)}), got {joints.shape}")
        hand = None
        if "hand_images" in f:
            ds = f["hand_images"]
            if ds.ndim != 4 or ds.shape[0] != n or ds.shape[-1] != 3 or ds.dtype != np.uint8:
                raise EpisodeError(f"{path}: 'hand_images' must be ({n}, H, W, 3) uint8, got {ds.shape} {ds.dtype}")
            hand = LazyFrames(path, "hand_images", ds.shape) if lazy else bgr_to_rgb(ds[...])
    match = SCENARIO_RE.search(name)
    scenario = match.group(0) if match else None
    attr = attrs.get("instruction")
    texts = EpisodeTexts(
        episode=name, recording=path.name, scenario=scenario, attribute=str(attr) if attr is not None else None
    )
    found = InstructionSources.of(instructions).find(texts)
    return Episode(
        path=path,
        name=name,
        scenario=scenario,
        instruction=found.text if found else None,
        instruction_source=found.source if found else None,
        texts=texts,
        images=rgb,
        actions=acts,
        event_types=events,
        frame_dt=duration / n,
        joint_positions=joints,
        joint_names=joint_names,
        hand_images=hand,
    )


def write_hdf5_episode(
    path: str | Path,
    *,
    images_rgb: np.ndarray,
    actions: np.ndarray,
    event_types: list[str],
    episode_name: str,
    frame_dt: float,
    action_chunk_size: int = 10,
    joint_positions: np.ndarray | None = None,
    joint_names: list[str] | None = None,
    hand_images_rgb: np.ndarray | None = None,
    attrs: dict[str, str | float] | None = None,
) -> None:
    """Write an episode in the user's format (images stored BGR, as their recorder does); ``attrs``: extra file
    attributes (``instruction``, a converted episode's source)."""
    import h5py

    n = len(actions)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "images", data=np.ascontiguousarray(images_rgb[..., ::-1]), compression="gzip", compression_opts=1
        )
        f.create_dataset("actions", data=np.asarray(actions, dtype=np.float32))
        f.create_dataset("action_event_types", data=np.array(event_types, dtype=h5py.string_dtype("utf-8")))
        if hand_images_rgb is not None:
            f.create_dataset(
                "hand_images",
                data=np.ascontiguousarray(hand_images_rgb[..., ::-1]),
                compression="gzip",
                compression_opts=1,
            )
        if joint_positions is not None:
            ds = f.create_dataset("joint_positions", data=np.asarray(joint_positions, dtype=np.float32))
            ds.attrs["joint_names"] = np.array(joint_names, dtype=h5py.string_dtype("utf-8"))
        f.attrs["episode_name"] = episode_name
        f.attrs["total_duration"] = float(frame_dt * n)
        f.attrs["num_frames"] = n
        f.attrs["action_chunk_size"] = action_chunk_size
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
