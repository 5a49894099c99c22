"""Training windows from episodes: ``window_size`` consecutive frames, and at every frame the next
``fwd_pred_next_n`` actions with a mask where the episode ends (RoboVLMs' chunk masks).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..configs.model import RoboVLMConfig
from ..utils.images import to_pixels
from .augment import ImageAugment, WindowAugment
from .bag import read_recording
from .errors import EpisodeError
from .hdf5 import Episode, read_hdf5_episode
from .instructions import InstructionSources
from .lerobot import EpisodeReader, FeatureMap, is_lerobot_dataset, open_dataset
from .recording import SplitSource, Timeline, episodes_of, marker_topic
from .roles import TopicMap
from .rollout import DEFAULT_ROLLOUT_MODE, rollout_segments
from .stats import NormStats

log = logging.getLogger(__name__)

ACTION_COLUMNS = {"linear.x": 0, "linear.y": 1, "angular.z": 2}


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml, or sqlite3/MCAP storage files)."""
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3")))


def natural(path: Path) -> list:
    """Sort key: digit runs compare as numbers (``day#2`` before ``day#10``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name)]


def episode_paths(data: str | Path) -> list[Path]:
    """HDF5 files, rosbag2 directories and LeRobotDataset directories in ``data`` (or ``data`` itself when it is
    one), in natural name order."""
    data = Path(data)
    if not data.exists():
        raise EpisodeError(f"{data}: no such file or directory")
    if data.suffix == ".h5" or is_bag(data) or is_lerobot_dataset(data):
        return [data]
    paths = sorted(
        (p for p in data.iterdir() if (p.suffix == ".h5" and p.is_file()) or is_bag(p) or is_lerobot_dataset(p)),
        key=natural,
    )
    if not paths:
        raise EpisodeError(f"{data}: no episodes (*.h5 files, rosbag2 or LeRobotDataset directories)")
    return paths


def select_joints(ep: Episode, names: list[str]) -> Episode:
    """``ep`` with its joint positions reduced to ``names``, in that order (by name, never by position)."""
    if ep.joint_positions is None or ep.joint_names is None:
        raise EpisodeError(f"{ep.path}: the model uses the joint state but the episode has no joint positions")
    index = {n: i for i, n in enumerate(ep.joint_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise EpisodeError(f"{ep.path}: no joint {missing} (has {ep.joint_names}); choose joints with --joints")
    ep.joint_positions = ep.joint_positions[:, [index[n] for n in names]]
    ep.joint_names = list(names)
    return ep


def load_episodes(
    data: str | Path | Sequence[str | Path],
    instructions: InstructionSources | dict[str, str] | None = None,
    *,
    topics: TopicMap | None = None,
    joint_names: list[str] | None = None,
    use_state: bool = False,
    state_dim: int | None = None,
    use_hand: bool = True,
    image_size: int | None = None,
    lazy: bool = False,
    cache_dir: Path | None = None,
    split: list[SplitSource] | None = None,
    rollouts: str = DEFAULT_ROLLOUT_MODE,
    features: list[str] | None = None,
    action_names: str | None = None,
) -> list[Episode]:
    """Every episode in ``data`` (HDF5 files and rosbag2 directories, in natural name order; several directories:
    theirs one after the other, as DAgger aggregates the data of every round).

    Bags are read by role (``topics``) with images stored at ``image_size``, and cut into episodes by ``split``
    (``robovlm.data.recording``; none: one episode per bag). Instructions come from ``instructions`` (the user's
    sources, ``robovlm.data.instructions``, or a bare scenario mapping; default ``models/instructions.json``); an
    episode without one is an error naming every source tried. With ``use_state`` the joints are ``joint_names``
    (default: the first episode's, when it has exactly ``state_dim``), selected by name in every episode.
    ``lazy``: an index only; camera frames are read on demand (HDF5 from the file, bags from a frame cache written
    the first time, ``frame_cache``), so memory does not grow with the number of episodes.
    A node's rollout recording (``robovlm.data.rollout``) gives the runs of frames ``rollouts`` selects
    (``interventions`` | ``successes`` | ``all``), each an episode. A LeRobotDataset directory gives its episodes,
    features mapped by ``features`` (``ROLE=KEY`` items) and ``action_names`` (``robovlm.data.lerobot``).
    """
    from .frame_cache import cached_recording

    sources = InstructionSources() if instructions is None else InstructionSources.of(instructions)
    marker = marker_topic(split or [])
    dirs = [data] if isinstance(data, (str, Path)) else list(data)
    paths = [p for d in dirs for p in episode_paths(d)]
    if split and any(p.suffix == ".h5" for p in paths):
        log.warning("--split-episodes cuts rosbag2 recordings; each HDF5 file stays one episode")
    episodes = []
    for p in tqdm(paths, desc="episodes", unit="ep", disable=None):
        if p.suffix == ".h5":
            found = [read_hdf5_episode(p, sources, lazy=lazy)]
        elif is_lerobot_dataset(p):
            found = _dataset_episodes(
                p,
                sources,
                features=features,
                action_names=action_names,
                image_size=image_size,
                use_hand=use_hand,
                use_state=use_state,
                lazy=lazy,
                cache_dir=cache_dir,
            )
        else:

            def read(p: Path = p) -> tuple[Episode, Timeline]:
                return read_recording(
                    p,
                    topics,
                    joint_names=joint_names,
                    image_size=image_size,
                    use_hand=use_hand,
                    use_joints=use_state,
                    marker_topic=marker,
                )

            if lazy:
                options = {
                    "topics": (topics or TopicMap()).topics,
                    "joints": joint_names,
                    "image_size": image_size,
                    "hand": use_hand,
                    "state": use_state,
                    "marker_topic": marker,
                }
                whole, timeline = cached_recording(p, read, options, cache_dir)
            else:
                whole, timeline = read()
            found = [ep for ep, _ in episodes_of(whole, timeline, split or [], sources)]
            if timeline.rollout is not None:
                found = [seg for ep in found for seg in rollout_segments(ep, timeline.rollout, rollouts)]
        for ep in found:
            if use_state:
                if joint_names is None:
                    if ep.joint_names is None or (state_dim is not None and len(ep.joint_names) != state_dim):
                        raise EpisodeError(
                            f"{p}: the model's state has {state_dim} joints but the episode has "
                            f"{ep.joint_names or 'none'}; name them with --joints NAME,NAME,..."
                        )
                    joint_names = list(ep.joint_names)
                ep = select_joints(ep, joint_names)
            if not ep.instruction:
                assert ep.texts is not None
                sources.resolve(ep.texts)  # raises, naming every source tried
            episodes.append(ep)
    return episodes


def _dataset_episodes(
    root: Path,
    sources: InstructionSources,
    *,
    features: list[str] | None,
    action_names: str | None,
    image_size: int | None,
    use_hand: bool,
    use_state: bool,
    lazy: bool,
    cache_dir: Path | None,
) -> list[Episode]:
    """A LeRobotDataset's episodes, each decoded once (``lazy``: into the frame cache, then memory-mapped)."""
    from .frame_cache import cached_recording

    ds = open_dataset(root)
    fmap = FeatureMap.build(ds, features, action_names)
    reader = EpisodeReader(ds, fmap)
    meta = [
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.glob("meta/**/*"))
    ]
    out = []
    for k in range(len(ds.episodes)):

        def read(k: int = k) -> tuple[Episode, Timeline]:
            return reader.read(k, image_size=image_size, use_hand=use_hand, use_state=use_state)

        if lazy:
            options = {"lerobot": meta, "episode": k, "keys": fmap.keys, "actions": fmap.action_columns}
            options |= {"image_size": image_size, "hand": use_hand, "state": use_state}
            whole, timeline = cached_recording(root, read, options, cache_dir)
            whole.name = f"{root.name}#{int(ds.episodes[k]['episode_index'])}"
        else:
            whole, timeline = read()
        out += [ep for ep, _ in episodes_of(whole, timeline, [], sources)]
    return out


def split_episodes(episodes: list[Episode], val_fraction: float) -> tuple[list[Episode], list[Episode]]:
    """Every k-th episode of each scenario is held out (deterministic, balanced across scenarios)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return episodes, []
    k = max(2, round(1.0 / val_fraction))
    by_scenario: dict[str | None, list[Episode]] = {}
    for ep in episodes:
        by_scenario.setdefault(ep.scenario, []).append(ep)
    train, val = [], []
    for group in by_scenario.values():
        for i, ep in enumerate(group):
            (val if i % k == k - 1 else train).append(ep)
    return train, val


def compute_stats(
    episodes: list[Episode], *, action_fields: list[str], joint_names: list[str] | None, state_dim: int
) -> NormStats:
    """Action range (min/max with a 5% margin) and joint mean/std (std floored at 0.05) from the training set, in
    one pass that holds one episode's values at a time (running min/max; Chan's parallel mean/variance update)."""
    cols = [ACTION_COLUMNS[f] for f in action_fields]
    for ep in episodes:
        missing = [f for f, c in zip(action_fields, cols) if np.isnan(ep.actions[:, c]).any()]
        if missing:
            raise EpisodeError(
                f"{ep.path} ({ep.name}): no value for action field(s) {', '.join(missing)}: map the dataset's action "
                "columns with --action-names FIELD=NAME, or train fewer fields with --action-fields"
            )
    lo = np.full(len(cols), np.inf)
    hi = np.full(len(cols), -np.inf)
    count, mean, m2 = 0, None, None
    for ep in episodes:
        acts = ep.actions[:, cols]
        lo, hi = np.minimum(lo, acts.min(0)), np.maximum(hi, acts.max(0))
        if ep.joint_positions is not None:
            x = ep.joint_positions.astype(np.float64)
            n, m, v = len(x), x.mean(0), x.var(0) * len(x)
            if mean is None:
                count, mean, m2 = n, m, v
            else:
                delta, total = m - mean, count + n
                mean = mean + delta * n / total
                m2 = m2 + v + delta**2 * count * n / total
                count = total
    span = np.maximum(hi - lo, 0.05)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    dts = sorted({round(ep.frame_dt, 4) for ep in episodes})
    if len(dts) > 1:
        log.warning("episodes have different frame periods %s; using the median", dts)
    if mean is not None:
        std = np.maximum(np.sqrt(m2 / count), 0.05)
        names = joint_names or episodes[0].joint_names
    else:  # a model without a state: identity statistics, and no joint names (none are invented)
        mean, std, names = np.zeros(state_dim), np.ones(state_dim), joint_names or []
    return NormStats(
        state_mean=[float(v) for v in mean],
        state_std=[float(v) for v in std],
        action_low=[float(v) for v in lo],
        action_high=[float(v) for v in hi],
        action_dt=float(np.median([ep.frame_dt for ep in episodes])),
        joint_names=list(names),
        action_fields=list(action_fields),
    )


class WindowDataset(Dataset):
    """Items are dicts shaped like ``RoboVLM.forward`` batches, without the batch axis."""

    def __init__(
        self,
        episodes: list[Episode],
        config: RoboVLMConfig,
        stats: NormStats,
        *,
        augment: ImageAugment | None = None,
        seed: int = 0,
    ) -> None:
        """Item ``epoch * len(self) + i`` is window ``i`` with the augmentation of that epoch (``augment``: camera
        shift, light, noise): it is drawn from (``seed``, epoch, i), so it is the same in any worker and any number
        of processes."""
        self.episodes = [ep for ep in episodes if len(ep) >= config.window_size]
        if len(self.episodes) < len(episodes):
            log.warning(
                "%d episode(s) shorter than window_size %d skipped",
                len(episodes) - len(self.episodes),
                config.window_size,
            )
        if not self.episodes:
            raise EpisodeError("no episode is as long as window_size")
        self.config, self.stats, self.seed = config, stats, seed
        self.augment = augment if augment is not None and augment.active else None
        self.cols = [ACTION_COLUMNS[f] for f in stats.action_fields]
        self.index = [(e, s) for e, ep in enumerate(self.episodes) for s in range(len(ep) - config.window_size + 1)]
        if config.use_state:
            for ep in self.episodes:
                if ep.joint_positions is None or ep.joint_positions.shape[1] != config.state_dim:
                    raise EpisodeError(
                        f"{ep.path}: the model uses a state of {config.state_dim} joints but the "
                        "episode has " + ("none" if ep.joint_positions is None else str(ep.joint_positions.shape[1]))
                    )

    def __len__(self) -> int:
        return len(self.index)

    def _pixels(self, frames: np.ndarray, window: WindowAugment | None, camera: int) -> torch.Tensor:
        cfg = self.config
        if window is not None:  # the same for the whole window: one moment of one room
            frames = window(frames, camera)
        # cached bag frames are a read-only memory map: copied here (a window), torch wants writable memory
        frames = np.require(frames, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
        return to_pixels(frames, size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std)

    def __getitem__(self, index: int) -> dict:
        epoch, i = divmod(index, len(self.index))
        e, s = self.index[i]
        ep = self.episodes[e]
        cfg, n, w = self.config, self.config.fwd_pred_next_n, self.config.window_size
        window = None
        if self.augment is not None:
            window = self.augment.draw(np.random.default_rng([self.seed, epoch, i]), cameras=2)
        item = {"head_images": self._pixels(ep.images[s : s + w], window, 0), "instructions": ep.instruction}
        if cfg.use_hand_rgb:
            if ep.hand_images is not None:
                item["hand_images"] = self._pixels(ep.hand_images[s : s + w], window, 1)
                item["hand_valid"] = torch.ones(w, dtype=torch.bool)
            else:
                item["hand_images"] = torch.zeros_like(item["head_images"])
                item["hand_valid"] = torch.zeros(w, dtype=torch.bool)
        if cfg.use_state:
            item["states"] = torch.from_numpy(self.stats.normalize_state(ep.joint_positions[s : s + w]))
        acts = np.zeros((w, n, len(self.cols)), np.float32)
        mask = np.zeros((w, n), bool)
        for t in range(w):
            chunk = ep.actions[s + t : s + t + n][:, self.cols]
            acts[t, : len(chunk)] = self.stats.normalize_action(chunk)
            mask[t, : len(chunk)] = True
        item["actions"], item["action_mask"] = torch.from_numpy(acts), torch.from_numpy(mask)
        return item


def collate(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "instructions"}
    out["instructions"] = [it["instructions"] for it in items]
    return out


def cosine_with_warmup(step: int, *, warmup: int, total: int, floor: float = 0.05) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
