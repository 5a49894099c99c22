"""On-disk frames of rosbag2 episodes, so training reads a bag's images on demand like an HDF5 file's.

A bag has no random access to its frames: the first time a bag is indexed, the whole recording is decoded once (at
the model's image size) and its frames written to ``<cache>/<key>/{head,hand}.npy``, with its timeline (instruction
and marker messages, ``custom_data``); training then memory-maps them (pages the kernel can drop, not process
memory). The key covers the bag's files (names, sizes, modification times) and every reading option, so a changed
bag or option is decoded again; episodes and their instructions are cut from the cached recording afterwards
(``robovlm.data.recording``), so changing ``--instructions`` or an idle or times split decodes nothing (a marker
topic is a reading option). Default cache: ``$ROBOVLM_CACHE`` or ``~/.cache/robovlm/frames``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .hdf5 import Episode
from .recording import Timeline

CACHE_VERSION = 3  # 2: whole recordings with their timeline (episodes are cut after the cache); 3: rollouts


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROBOVLM_CACHE", Path.home() / ".cache" / "robovlm")) / "frames"


def cache_key(bag: Path, options: dict) -> str:
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(bag).iterdir() if p.is_file())
    doc = json.dumps(
        {"v": CACHE_VERSION, "bag": str(Path(bag).resolve()), "files": files, "options": options},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def cached_recording(
    bag: Path, read: Callable[[], tuple[Episode, Timeline]], options: dict, cache_dir: Path | None = None
) -> tuple[Episode, Timeline]:
    """The whole recording of ``bag`` with memory-mapped frames, and its timeline; ``read()`` decodes them
    (``robovlm.data.bag.read_recording``) when the cache has no entry."""
    entry = (cache_dir or default_cache_dir()) / cache_key(bag, options)
    if not (entry / "meta.json").is_file():
        ep, timeline = read()
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent))
        np.save(tmp / "head.npy", np.ascontiguousarray(ep.images))
        if ep.hand_images is not None:
            np.save(tmp / "hand.npy", np.ascontiguousarray(ep.hand_images))
        arrays: dict[str, Any] = {"actions": ep.actions, "frame_times_ns": np.asarray(ep.frame_times_ns, np.int64)}
        if ep.joint_positions is not None:
            arrays["joint_positions"] = ep.joint_positions
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "name": ep.name,
                    "scenario": ep.scenario,
                    "instruction": ep.instruction,
                    "event_types": ep.event_types,
                    "frame_dt": ep.frame_dt,
                    "joint_names": ep.joint_names,
                    "timeline": dataclasses.asdict(timeline),
                }
            )
        )
        try:
            tmp.rename(entry)  # atomic: a concurrent reader sees a whole entry or none
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((entry / "meta.json").read_text())
    arrays = np.load(entry / "arrays.npz")
    line = meta["timeline"]
    rollout = line.pop("rollout", None)
    timeline = Timeline(
        **{
            **line,
            "instructions": [tuple(x) for x in line["instructions"]],
            "markers": [tuple(x) for x in line["markers"]],
        }
    )
    if rollout is not None:
        from .rollout import RolloutInfo

        timeline.rollout = RolloutInfo(
            mode=rollout["mode"],
            interventions=[(int(t), bool(on)) for t, on in rollout["interventions"]],
            outcome=None if rollout["outcome"] is None else (rollout["outcome"][0], rollout["outcome"][1]),
            info=rollout["info"],
        )
    ep = Episode(
        path=Path(bag),
        name=meta["name"],
        scenario=meta["scenario"],
        instruction=meta["instruction"],
        images=np.load(entry / "head.npy", mmap_mode="r"),
        actions=arrays["actions"],
        event_types=meta["event_types"],
        frame_dt=meta["frame_dt"],
        joint_positions=arrays["joint_positions"] if "joint_positions" in arrays else None,
        joint_names=meta["joint_names"],
        hand_images=np.load(entry / "hand.npy", mmap_mode="r") if (entry / "hand.npy").is_file() else None,
        frame_times_ns=arrays["frame_times_ns"],
    )
    return ep, timeline
